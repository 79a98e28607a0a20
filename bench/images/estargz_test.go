package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/layertest"
)

// text is n bytes of varied, poorly compressible content seeded by seed.
func text(seed, n int) string {
	var b strings.Builder
	x := uint32(seed)*2654435761 + 1
	for b.Len() < n {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b.WriteByte(byte('a' + x%26))
	}
	return b.String()
}

// syntheticImage is three gzip layers with what upper layers do to lower
// ones: replace a file, delete one (whiteout), hide a directory's old
// entries (opaque), hard links and symlinks.
func syntheticImage(t *testing.T) v1.Image {
	t.Helper()
	l0 := layertest.Tar(
		layertest.Dir("etc"),
		layertest.File("etc/hostname", "box\n"),
		layertest.File("etc/passwd", "root:x:0:0::/root:/bin/sh\n", layertest.Mode(0o600), layertest.Owner(0, 0)),
		layertest.Dir("usr"),
		layertest.Dir("usr/bin"),
		layertest.File("usr/bin/tool", text(1, 200_000), layertest.Mode(0o755)),
		layertest.File("usr/bin/old", "old\n", layertest.Mode(0o755)),
		layertest.Hardlink("usr/bin/tool2", "usr/bin/tool"),
		layertest.Symlink("usr/bin/sh", "tool"),
		layertest.Dir("opt"),
		layertest.File("opt/a", "a\n"),
		layertest.Dir("opt/sub"),
		layertest.File("opt/sub/deep", "deep\n"),
		layertest.Dir("var"),
		layertest.File("var/gone", "gone\n"),
		layertest.File("var/keep", "keep\n", layertest.Owner(1000, 100)),
	)
	l1 := layertest.Tar(
		layertest.Dir("usr"),
		layertest.Dir("usr/bin"),
		layertest.File("usr/bin/tool", text(2, 300_000), layertest.Mode(0o4755)),
		layertest.Hardlink("usr/bin/toolx", "usr/bin/tool"),
		layertest.Dir("var"),
		layertest.Whiteout("var/gone"),
		layertest.Dir("opt", layertest.Mode(0o700)),
		layertest.Opaque("opt"),
		layertest.File("opt/b", text(3, 50_000)),
		layertest.Dir("etc"),
		layertest.Symlink("etc/link", "hostname"),
	)
	l2 := layertest.Tar(
		layertest.Dir("etc"),
		layertest.File("etc/motd", "hello\n", layertest.Xattr("user.note", "x")),
		layertest.Dir("usr"),
		layertest.Dir("usr/bin"),
		layertest.Whiteout("usr/bin/old"),
	)
	return testenv.ImageOfTars(t, l0, l1, l2)
}

// layerTars returns each layer's uncompressed tar.
func layerTars(t *testing.T, img v1.Image) [][]byte {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// estargzOwn are the files eStargz adds at the root of each layer.
var estargzOwn = map[string]bool{estargz.PrefetchLandmark: true, estargz.NoPrefetchLandmark: true, estargz.TOCTarName: true}

// mergedView is the project's merged view of img (layers.Merge over
// layers.IndexLayer of each uncompressed layer), one line per name: path,
// type, mode, owner, size, link target, link count, xattrs and a digest of
// the content. eStargz's own files at the root are left out.
func mergedView(t *testing.T, img v1.Image) []string {
	t.Helper()
	tars := layerTars(t, img)
	var idx []*layers.Index
	for i, tb := range tars {
		ix, err := layers.IndexLayer(bytes.NewReader(tb), strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		idx = append(idx, ix)
	}
	tree, err := layers.Merge(idx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	err = tree.Walk(func(p string, n *layers.Node) error {
		if estargzOwn[p] {
			return nil
		}
		content := ""
		if n.Type == layers.TypeReg {
			b := tars[n.Layer][n.Offset : n.Offset+n.Size]
			s := sha256.Sum256(b)
			content = hex.EncodeToString(s[:8])
		}
		out = append(out, fmt.Sprintf("%s %s %o %d:%d size=%d link=%q nlink=%d xattrs=%v %s",
			p, n.Type, n.Mode, n.UID, n.GID, n.Size, n.Linkname, n.Nlink, n.Xattrs, content))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// esgzLayer opens an eStargz layer blob and returns its reader and the
// offsets of its TOC entries by name.
func esgzLayer(t *testing.T, l v1.Layer) *estargz.Reader {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob))))
	if err != nil {
		t.Fatalf("not an eStargz blob: %v", err)
	}
	return r
}

// TestConvertEStargz converts a small synthetic image and checks the
// result: the same merged tree as the gzip form, the annotations and diff
// IDs right, and the prioritized files before the prefetch landmark of the
// layer they come from.
func TestConvertEStargz(t *testing.T) {
	ctx := context.Background()
	src := syntheticImage(t)
	prioritized := cleanPaths([]string{"/usr/bin/tool", "etc/hostname", "/opt/b", "./usr/bin/sh",
		"/var/gone", "/nope", "/usr", "/opt/a", "/usr/bin/tool"})
	c, err := convertEStargz(ctx, src, t.TempDir(), prioritized)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := mergedView(t, c.image), mergedView(t, src); !slices.Equal(got, want) {
		t.Errorf("merged tree of the eStargz form:\n%s\nwant (gzip form):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantLists := [][]string{{"etc/hostname", "usr/bin/sh"}, {"usr/bin/tool", "opt/b"}, nil}
	if !slices.EqualFunc(c.lists, wantLists, slices.Equal) {
		t.Errorf("prioritized per layer %q, want %q", c.lists, wantLists)
	}
	// /var/gone is whited out, /opt/a hidden by the opaque /opt, /usr a
	// directory, /nope absent.
	if want := []string{"/var/gone", "/nope", "/usr", "/opt/a"}; !slices.Equal(c.missed, want) || c.prioritized != 4 {
		t.Errorf("missed %q, prioritized %d; want %q and 4", c.missed, c.prioritized, want)
	}

	m, err := c.image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := c.image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	scf, _ := src.ConfigFile()
	if !slices.Equal(cf.Config.Cmd, scf.Config.Cmd) || !slices.Equal(cf.Config.Env, scf.Config.Env) || len(cf.History) != len(scf.History) {
		t.Errorf("config %+v, want the gzip form's %+v", cf, scf)
	}
	ls, _ := c.image.Layers()
	tars := layerTars(t, c.image)
	if len(ls) != 3 || len(m.Layers) != 3 || len(cf.RootFS.DiffIDs) != 3 {
		t.Fatalf("%d layers, %d descriptors, %d diff IDs: want 3", len(ls), len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	for i, l := range ls {
		d := m.Layers[i]
		r := esgzLayer(t, l)
		if got := d.Annotations[AnnotationTOCDigest]; got != r.TOCDigest().String() || got != c.tocs[i] {
			t.Errorf("layer %d: TOC digest annotation %q, the blob's TOC %s", i, got, r.TOCDigest())
		}
		if _, err := r.VerifyTOC(r.TOCDigest()); err != nil {
			t.Errorf("layer %d: %v", i, err)
		}
		if got, want := d.Annotations[AnnotationUncompressedSize], strconv.Itoa(len(tars[i])); got != want {
			t.Errorf("layer %d: uncompressed-size annotation %q, want %s", i, got, want)
		}
		if sum := sha256.Sum256(tars[i]); cf.RootFS.DiffIDs[i].Hex != hex.EncodeToString(sum[:]) {
			t.Errorf("layer %d: diff ID %s, want the sha256 of the uncompressed blob", i, cf.RootFS.DiffIDs[i])
		}
		if d.MediaType != "application/vnd.docker.image.rootfs.diff.tar.gzip" {
			t.Errorf("layer %d: media type %s, want the gzip form's", i, d.MediaType)
		}

		// The landmark: prefetch after the layer's prioritized files, in
		// their order, and before the rest; none-to-prefetch otherwise.
		_, hasPre := r.Lookup(estargz.PrefetchLandmark)
		_, hasNo := r.Lookup(estargz.NoPrefetchLandmark)
		if want := len(wantLists[i]) > 0; hasPre != want || hasNo == want {
			t.Errorf("layer %d: prefetch landmark %v, no-prefetch landmark %v; want prefetch %v", i, hasPre, hasNo, want)
			continue
		}
		if !hasPre {
			continue
		}
		pos := tarOrder(t, tars[i])
		prev := -1
		for _, p := range wantLists[i] {
			at, ok := pos[p]
			if !ok || at <= prev || at >= pos[estargz.PrefetchLandmark] {
				t.Errorf("layer %d: %s is entry %d (found %v), want after %d and before the landmark, entry %d", i, p, at, ok, prev, pos[estargz.PrefetchLandmark])
			}
			prev = at
		}
	}
	// A file not prioritized in its layer comes after the landmark.
	pos := tarOrder(t, tars[0])
	if pos["usr/bin/tool"] <= pos[estargz.PrefetchLandmark] {
		t.Errorf("layer 0: usr/bin/tool (replaced by layer 1) is entry %d, want after the landmark, entry %d", pos["usr/bin/tool"], pos[estargz.PrefetchLandmark])
	}
}

// tarOrder gives the place of each path in a layer's tar.
func tarOrder(t *testing.T, tb []byte) map[string]int {
	t.Helper()
	ix, err := layers.IndexLayer(bytes.NewReader(tb), "layer")
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, e := range ix.Entries {
		if _, ok := pos[e.Path]; !ok {
			pos[e.Path] = i
		}
	}
	return pos
}

// TestConvertEStargzNoList: without a list, every layer gets the
// no-prefetch landmark, and the tree is still the gzip form's.
func TestConvertEStargzNoList(t *testing.T) {
	src := syntheticImage(t)
	c, err := convertEStargz(context.Background(), src, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := mergedView(t, c.image), mergedView(t, src); !slices.Equal(got, want) {
		t.Errorf("merged tree of the eStargz form:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	ls, _ := c.image.Layers()
	for i, l := range ls {
		r := esgzLayer(t, l)
		if _, ok := r.Lookup(estargz.NoPrefetchLandmark); !ok {
			t.Errorf("layer %d: no %s", i, estargz.NoPrefetchLandmark)
		}
		if _, ok := r.Lookup(estargz.PrefetchLandmark); ok {
			t.Errorf("layer %d: %s without prioritized files", i, estargz.PrefetchLandmark)
		}
	}
}

// TestBuildEStargzCache builds the eStargz form of the alpine image (a
// small stand-in minirootfs) through the cache: the key follows the
// cleaned prioritized list, the cache serves a build again, and the
// manifest read back from the layout keeps the annotations.
func TestBuildEStargzCache(t *testing.T) {
	ctx := context.Background()
	shared := t.TempDir()
	tb := filepath.Join(shared, "alpine-minirootfs-0.0-x86_64.tar.gz")
	gz := layertest.Gzip(layertest.Tar(layertest.Dir("bin"), layertest.File("bin/busybox", text(4, 100_000), layertest.Mode(0o755)),
		layertest.Symlink("bin/sh", "busybox"), layertest.Dir("etc"), layertest.File("etc/alpine-release", "0.0\n")))
	if err := os.WriteFile(tb, gz, 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := fileSHA512(tb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tb+".sha512", []byte(sum+"  "+filepath.Base(tb)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	b := &Builder{Cache: cache, Shared: shared}
	entries := func() []string {
		m, _ := filepath.Glob(filepath.Join(cache, "images", "alpine-*-estargz-*"))
		return m
	}
	digest := func(img *Image) v1.Hash {
		d, err := img.Image.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	plain, err := b.Build(ctx, "alpine", FormEStargz)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Form != FormEStargz || plain.Prioritized != 0 || plain.Layers != 1 || len(plain.Cold) == 0 || len(entries()) != 1 {
		t.Errorf("plain eStargz image %+v, %d cache entries", plain, len(entries()))
	}
	opt, err := b.BuildEStargz(ctx, "alpine", []string{"/bin/busybox", "/etc/alpine-release", "/absent"})
	if err != nil {
		t.Fatal(err)
	}
	if opt.Prioritized != 2 || !slices.Equal(opt.Missed, []string{"/absent"}) || len(entries()) != 2 {
		t.Errorf("optimized image: %d prioritized, missed %q, %d cache entries; want 2, [/absent], 2", opt.Prioritized, opt.Missed, len(entries()))
	}
	if digest(opt) == digest(plain) {
		t.Error("the prioritized list did not change the image")
	}
	// The same list, written differently: the same cache entry.
	again, err := b.BuildEStargz(ctx, "alpine", []string{"bin/busybox", "./etc/alpine-release", "/absent", "/bin/busybox"})
	if err != nil {
		t.Fatal(err)
	}
	if digest(again) != digest(opt) || len(entries()) != 2 {
		t.Errorf("same list again: digest %s (first %s), %d cache entries", digest(again), digest(opt), len(entries()))
	}
	m, err := again.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	l, _ := again.Image.Layers()
	r := esgzLayer(t, l[0])
	if m.Layers[0].Annotations[AnnotationTOCDigest] != r.TOCDigest().String() || m.Layers[0].Annotations[AnnotationUncompressedSize] == "" {
		t.Errorf("annotations read back %v, TOC %s", m.Layers[0].Annotations, r.TOCDigest())
	}
	if pos := tarOrder(t, layerTars(t, again.Image)[0]); pos["bin/busybox"] >= pos[estargz.PrefetchLandmark] {
		t.Errorf("bin/busybox is entry %d, the prefetch landmark %d: want it before", pos["bin/busybox"], pos[estargz.PrefetchLandmark])
	}
	gzipForm, err := b.Build(ctx, "alpine", FormGzip)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := mergedView(t, again.Image), mergedView(t, gzipForm.Image); !slices.Equal(got, want) {
		t.Errorf("merged tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Old conversions are pruned: at most keepEStargz kept.
	for i := range keepEStargz + 1 {
		if _, err := b.BuildEStargz(ctx, "alpine", []string{fmt.Sprintf("/absent%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(entries()); n != keepEStargz {
		t.Errorf("%d cached eStargz conversions, want %d", n, keepEStargz)
	}
}
