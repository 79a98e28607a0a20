package images

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dabba/dabba/layers/layertest"
)

func TestBuildErrors(t *testing.T) {
	ctx := context.Background()
	b := &Builder{Cache: t.TempDir(), Shared: filepath.Join(t.TempDir(), "absent")}
	if _, err := b.Build(ctx, "ubuntu", FormGzip); err == nil || !strings.Contains(err.Error(), `"ubuntu"`) {
		t.Errorf("unknown image: %v", err)
	}
	if _, err := b.Build(ctx, "alpine", "zip"); err == nil || !strings.Contains(err.Error(), `"zip"`) {
		t.Errorf("unknown form: %v", err)
	}
	if _, err := b.Build(ctx, "alpine", FormEStargz); !errors.Is(err, ErrNoSource) {
		t.Errorf("estargz of alpine without ../shared: %v, want ErrNoSource", err)
	}
	if _, err := b.BuildEStargz(ctx, "ubuntu", []string{"/bin/sh"}); err == nil || !strings.Contains(err.Error(), `"ubuntu"`) {
		t.Errorf("eStargz of an unknown image: %v", err)
	}
	if _, err := b.Build(ctx, "alpine", FormGzip); !errors.Is(err, ErrNoSource) {
		t.Errorf("alpine without ../shared: %v, want ErrNoSource", err)
	}
}

// TestAlpineFromTarball builds the alpine image from a small stand-in
// minirootfs, checks its checksum handling, and that the cache serves it
// again.
func TestAlpineFromTarball(t *testing.T) {
	ctx := context.Background()
	shared := t.TempDir()
	tb := filepath.Join(shared, "alpine-minirootfs-0.0-x86_64.tar.gz")
	gz := layertest.Gzip(layertest.Tar(layertest.Dir("bin"), layertest.File("bin/sh", "#!fake"), layertest.File("etc/alpine-release", "0.0\n")))
	if err := os.WriteFile(tb, gz, 0o644); err != nil {
		t.Fatal(err)
	}
	b := &Builder{Cache: t.TempDir(), Shared: shared}
	if err := os.WriteFile(tb+".sha512", []byte("0000  "+filepath.Base(tb)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Build(ctx, "alpine", FormGzip); err == nil || !strings.Contains(err.Error(), "sha512") {
		t.Fatalf("wrong checksum: %v, want an error about sha512", err)
	}
	sum, err := fileSHA512(tb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tb+".sha512", []byte(sum+"  "+filepath.Base(tb)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := b.Build(ctx, "alpine", FormGzip)
	if err != nil {
		t.Fatal(err)
	}
	if img.Layers != 1 || img.Compressed != int64(len(gz)) || img.Uncompressed == 0 || len(img.Cold) == 0 {
		t.Errorf("image %+v: want 1 layer of %d compressed bytes", img, len(gz))
	}
	ls, err := img.Image.Layers()
	if err != nil || len(ls) != 1 {
		t.Fatalf("layers: %v, %d", err, len(ls))
	}
	d, _ := ls[0].Digest()
	// The blob is the tarball unchanged.
	if want := "sha256:" + sha256Hex(gz); d.String() != want {
		t.Errorf("layer digest %s, want %s (the tarball itself)", d, want)
	}
	again, err := b.Build(ctx, "alpine", FormGzip)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Image.Digest()
	d2, _ := again.Image.Digest()
	if d1 != d2 {
		t.Errorf("cached image digest %s, first build %s", d2, d1)
	}
	// gzip+index is the same image: the index is pushed beside it.
	idx, err := b.Build(ctx, "alpine", FormGzipIndex)
	if err != nil {
		t.Fatal(err)
	}
	if d3, _ := idx.Image.Digest(); d3 != d1 || idx.Form != FormGzipIndex || img.Form != FormGzip {
		t.Errorf("gzip+index image %s form %q (gzip form now %q), want digest %s form %q", d3, idx.Form, img.Form, d1, FormGzipIndex)
	}
	if !NeedsIndex(FormGzipIndex) || NeedsIndex(FormGzip) {
		t.Errorf("NeedsIndex: want true only for %s", FormGzipIndex)
	}
}
