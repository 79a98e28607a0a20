package layers

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/dabba/dabba/layers/layertest"
)

// TestTreeFileRoundTrip: a merged tree saved and read back is the same
// tree, name by name, with the same inode numbers, metadata and layers.
func TestTreeFileRoundTrip(t *testing.T) {
	base := layertest.Tar(
		layertest.Dir("etc"), layertest.File("etc/passwd", "root\n", layertest.Owner(0, 42), layertest.Mode(0o640)),
		layertest.Dir("bin"), layertest.File("bin/sh", "#!", layertest.Mode(0o4755)),
		layertest.Hardlink("bin/sh2", "bin/sh"), layertest.Symlink("usr", "/bin"),
		layertest.File("x", "x", layertest.Xattr("user.a", "1"), layertest.Xattr("security.capability", "\x01\x00")),
		layertest.Char("null", 1, 3), layertest.Fifo("fifo"), layertest.Dir("gone"), layertest.File("gone/f", "f"),
	)
	upper := layertest.Tar(layertest.Whiteout("gone"), layertest.File("etc/passwd", "root:x\n"), layertest.Dir("new/deep/er"))
	var ixs []*Index
	for i, l := range [][]byte{base, upper} {
		ix, err := IndexLayer(bytes.NewReader(l), fmt.Sprintf("sha256:%d", i))
		if err != nil {
			t.Fatal(err)
		}
		ixs = append(ixs, ix)
	}
	tree, err := Merge(ixs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tree.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalTree(b)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := treeListing(tree), treeListing(got); a != b {
		t.Errorf("read back:\n%s\nwant:\n%s", b, a)
	}
	if got.NumInodes() != tree.NumInodes() || got.NumNames() != tree.NumNames() || fmt.Sprint(got.Layers) != fmt.Sprint(tree.Layers) {
		t.Errorf("read back %d inodes, %d names, layers %v; want %d, %d, %v", got.NumInodes(), got.NumNames(), got.Layers, tree.NumInodes(), tree.NumNames(), tree.Layers)
	}
	if n := got.Lookup("x"); n == nil || n.Xattrs["security.capability"] != "\x01\x00" {
		t.Errorf("xattrs read back: %+v", n)
	}
	if got.Lookup("bin/sh") != got.Lookup("bin/sh2") {
		t.Error("hard links read back as two nodes")
	}

	// Every damage is refused: each byte flipped, and every truncation.
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x5a
		if _, err := UnmarshalTree(c); !errors.Is(err, ErrTreeFile) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for n := range len(b) {
		if _, err := UnmarshalTree(b[:n]); !errors.Is(err, ErrTreeFile) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
}
