package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
	"github.com/dabba/dabba/layers/layertest"
)

// TestMergedTree: a merged tree saved for an image reads back the same,
// a damaged one is refused, and gc keeps it while an image has those
// layers and removes it after.
func TestMergedTree(t *testing.T) {
	host := testenv.Registry(t)
	base := layertest.Tar(layertest.Dir("etc"), layertest.File("etc/a", "a\n"))
	upper := layertest.Tar(layertest.Whiteout("etc/a"), layertest.File("etc/b", "b\n"))
	ref := testenv.Push(t, testenv.ImageOfTars(t, base, upper), host, "test/merged:1")
	s := openTemp(t)
	ctx := context.Background()
	img, err := s.Pull(ctx, ref, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.MergedTree(img); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("before any save: %v", err)
	}
	var ixs []*layers.Index
	for _, l := range img.Layers {
		ix, err := s.LayerIndex(l.Digest)
		if err != nil {
			t.Fatal(err)
		}
		ixs = append(ixs, ix)
	}
	tree, err := layers.Merge(ixs)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveMergedTree(img, tree); err != nil {
		t.Fatal(err)
	}
	got, err := s.MergedTree(img)
	if err != nil {
		t.Fatal(err)
	}
	if listing(tree) != listing(got) {
		t.Errorf("read back:\n%s\nwant:\n%s", listing(got), listing(tree))
	}

	// Damaged: refused, naming the file.
	p := s.mergedPath(img.Layers)
	b, _ := os.ReadFile(p)
	os.WriteFile(p, bytes.Replace(b, []byte("etc"), []byte("ETC"), 1), 0o644)
	if _, err := s.MergedTree(img); !errors.Is(err, layers.ErrTreeFile) {
		t.Errorf("damaged saved tree: %v", err)
	}
	os.WriteFile(p, b, 0o644)

	// gc keeps it with the image, removes it without.
	if st, err := s.GC(ctx); err != nil || st.MergedTrees != 0 {
		t.Errorf("gc with the image: %+v, %v", st, err)
	}
	if _, err := s.Remove(ctx, ref, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err == nil {
		if st, err := s.GC(ctx); err != nil || st.MergedTrees != 1 {
			t.Errorf("gc without the image: %+v, %v", st, err)
		}
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("saved tree of a removed image: %v", err)
	}
}

// listing prints a tree's names with their inodes and metadata.
func listing(t *layers.Tree) string {
	var b bytes.Buffer
	t.Walk(func(p string, n *layers.Node) error {
		fmt.Fprintf(&b, "%s %d %v %o %d %d %d %d\n", p, n.Ino, n.Type, n.Mode, n.Nlink, n.Size, n.Offset, n.Layer)
		return nil
	})
	return b.String()
}
