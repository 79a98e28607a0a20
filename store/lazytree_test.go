package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers"
)

// A lazy open saves the merged tree of its layers' indexes; the next open
// of the same indexes reads it instead of merging; a damaged one is merged
// again and replaced; gc removes them.
func TestLazySavedTree(t *testing.T) {
	img := mixedImage(t)
	ref := testenv.Push(t, img, testenv.Registry(t), "lazy/tree:1")
	ctx := context.Background()
	full := openTemp(t)
	if _, err := full.PushIndex(ctx, ref, IndexPushOptions{}); err != nil {
		t.Fatal(err)
	}
	s := openTemp(t)
	marshal := func(tr *layers.Tree) []byte {
		t.Helper()
		b, err := tr.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	saved := func() []string {
		t.Helper()
		ps, _ := filepath.Glob(filepath.Join(s.root, "lazy", "trees", "*"))
		return ps
	}

	li, err := s.OpenLazy(ctx, ref, LazyOptions{NoPrefetch: true, NoRecord: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(li); !slices.Equal(got, []LazyKind{KindEStargz, KindIndexed, KindIndexed}) {
		t.Fatalf("kinds %v", got)
	}
	merged, err := layers.Merge(li.Indexes())
	if err != nil {
		t.Fatal(err)
	}
	want := marshal(merged)
	contents := lazyContents(t, li)
	li.Close() // waits for the tree to be saved
	ps := saved()
	if len(ps) != 1 {
		t.Fatalf("saved trees %v, want one", ps)
	}
	if b, _ := os.ReadFile(ps[0]); !bytes.Equal(b, want) || !bytes.Equal(marshal(li.Tree), want) {
		t.Fatal("the saved tree is not the merge of the layers' indexes")
	}

	// The next open uses the saved tree: one that differs (a valid tree of
	// three layers) shows through.
	other, err := layers.Merge([]*layers.Index{li.Layers[1].Index, li.Layers[1].Index, li.Layers[2].Index})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ps[0], marshal(other), 0o600); err != nil {
		t.Fatal(err)
	}
	li = openLazy(t, s, ref, LazyOptions{NoPrefetch: true, NoRecord: true})
	if !bytes.Equal(marshal(li.Tree), marshal(other)) {
		t.Fatal("the second open merged the indexes instead of reading the saved tree")
	}
	li.Close()

	// A damaged one is merged again, and replaced.
	if err := os.WriteFile(ps[0], []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	li = openLazy(t, s, ref, LazyOptions{NoPrefetch: true, NoRecord: true})
	if !bytes.Equal(marshal(li.Tree), want) {
		t.Fatal("a damaged saved tree was used")
	}
	sameContents(t, lazyContents(t, li), contents)
	li.Close()
	if b, _ := os.ReadFile(ps[0]); !bytes.Equal(b, want) {
		t.Fatal("the damaged saved tree was not replaced")
	}

	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ps := saved(); len(ps) != 0 || st.MergedTrees < 1 {
		t.Fatalf("after gc: saved trees %v, stats %+v", ps, st)
	}
}
