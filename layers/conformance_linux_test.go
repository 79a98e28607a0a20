package layers_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
	lt "github.com/dabba/dabba/layers/layertest"
)

// TestTreeMatchesExtraction merges real and built layers and checks, entry
// by entry, that the tree says what extracting the same layers in order
// onto one directory (as Docker applies layers; whiteouts applied by hand
// as the tree resolves them) gives: types, modes, owners, sizes, link
// targets, link counts, and contents read from the tar at the tree's
// offsets.
func TestTreeMatchesExtraction(t *testing.T) {
	requireRoot(t)
	alpine, err := os.ReadFile(testenv.AlpineTarball(t))
	if err != nil {
		t.Fatal(err)
	}
	rc, c, err := layers.Decompress(bytes.NewReader(alpine))
	if err != nil {
		t.Fatal(err)
	}
	alpineTar, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || c != layers.Gzip {
		t.Fatalf("decompressing alpine: %v (%v)", err, c)
	}
	tars := [][]byte{alpineTar}
	ix, err := layers.IndexLayer(bytes.NewReader(alpineTar), "sha256:alpine")
	if err != nil {
		t.Fatal(err)
	}
	tree, err := layers.Merge([]*layers.Index{ix})
	if err != nil {
		t.Fatal(err)
	}
	if tree.NumNames() < 400 {
		t.Fatalf("alpine tree has only %d names", tree.NumNames())
	}
	dir := t.TempDir()
	if err := layers.Extract(dir, bytes.NewReader(alpine), layers.ExtractOptions{Layer: "sha256:alpine"}); err != nil {
		t.Fatal(err)
	}
	compareTree(t, tree, tars, dir)

	// A second layer on top, without whiteouts (those differ on disk by
	// design), extracted in place over the first, so its hard link to a
	// file of the first layer resolves as in the tree.
	upper := lt.Tar(lt.File("etc/motd", "new motd\n"), lt.Dir("etc/apk", lt.Mode(0o700)),
		lt.Hardlink("etc/motd2", "etc/motd"), lt.Hardlink("bin/sh2", "bin/busybox"))
	if err := layers.Extract(dir, bytes.NewReader(upper), layers.ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	ix2, err := layers.IndexLayer(bytes.NewReader(upper), "sha256:upper")
	if err != nil {
		t.Fatal(err)
	}
	tree, err = layers.Merge([]*layers.Index{ix, ix2})
	if err != nil {
		t.Fatal(err)
	}
	compareTree(t, tree, append(tars, upper), dir)
}

func compareTree(t *testing.T, tree *layers.Tree, tars [][]byte, dir string) {
	t.Helper()
	names := 0
	tree.Walk(func(p string, n *layers.Node) error {
		names++
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, p), &st); err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		if st.Mode != n.StatMode() || st.Uid != n.UID || st.Gid != n.GID {
			t.Errorf("%s: disk mode %o %d:%d, tree %o %d:%d", p, st.Mode, st.Uid, st.Gid, n.StatMode(), n.UID, n.GID)
		}
		if p != "." && st.Nlink != uint64(n.Nlink) {
			t.Errorf("%s: disk nlink %d, tree %d", p, st.Nlink, n.Nlink)
		}
		if n.Type != layers.TypeDir && st.Mtim.Nano() != n.Mtime {
			t.Errorf("%s: disk mtime %d, tree %d", p, st.Mtim.Nano(), n.Mtime)
		}
		switch n.Type {
		case layers.TypeReg:
			disk, _ := os.ReadFile(filepath.Join(dir, p))
			tar := tars[n.Layer][n.Offset : n.Offset+n.Size]
			if sha256.Sum256(disk) != sha256.Sum256(tar) {
				t.Errorf("%s: content differs from the tar at layer %d offset %d", p, n.Layer, n.Offset)
			}
		case layers.TypeSymlink:
			if l, _ := os.Readlink(filepath.Join(dir, p)); l != n.Linkname {
				t.Errorf("%s: disk link %q, tree %q", p, l, n.Linkname)
			}
		}
		return nil
	})
	// Nothing on disk that the tree lacks.
	disk := 0
	filepath.Walk(dir, func(string, os.FileInfo, error) error { disk++; return nil })
	if disk != names {
		t.Errorf("disk has %d names, tree %d", disk, names)
	}
}

// BenchmarkExtractAlpine extracts the Alpine minirootfs (gzip) as root.
func BenchmarkExtractAlpine(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	blob, err := os.ReadFile(testenv.AlpineTarball(b))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(blob)))
	for b.Loop() {
		dir := b.TempDir()
		if err := layers.Extract(dir, bytes.NewReader(blob), layers.ExtractOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
