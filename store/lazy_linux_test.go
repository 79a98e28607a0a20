package store

import (
	"context"
	"syscall"
	"testing"

	"github.com/dabba/dabba/fs"
	"github.com/dabba/dabba/fs/fstest"
	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/layers/remote"
)

// TestLazyFUSEConformance serves a lazily opened image (an eStargz layer
// and two layers read by their dabba index) over FUSE and compares the
// mounted tree, every file read through the kernel, with the full pull's.
func TestLazyFUSEConformance(t *testing.T) {
	testenv.RequireFUSE(t)
	host := referrersRegistry(t)
	ref := testenv.Push(t, mixedImage(t), host, "lazy/fuse:1")
	full := openTemp(t)
	if _, err := full.PushIndex(context.Background(), ref, IndexPushOptions{}); err != nil {
		t.Fatal(err)
	}
	local := openLazy(t, full, ref, LazyOptions{NoPrefetch: true, NoRecord: true})
	want, err := fstest.FromTree(local.Tree, local)
	if err != nil {
		t.Fatal(err)
	}
	// The eStargz blob's own files are in the pulled tar, not in its TOC.
	delete(want, "stargz.index.json")
	delete(want, remote.PrefetchLandmark)

	li := openLazy(t, openTemp(t), ref, LazyOptions{NoPrefetch: true})
	f, err := fs.New(li.Tree, li, fs.Options{OnError: func(err error) { t.Errorf("read failed: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srv, err := fs.Mount(dir, f, fs.MountOptions{Name: "dabba-lazy-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	got, err := fstest.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range fstest.Compare(got, want, fstest.Options{}) {
		t.Error(d)
	}
	st := li.Stats()
	t.Logf("%d entries compared; lazy: %d requests, %d bytes", len(want), st.Requests, st.BytesFetched)
	if len(li.Recorded()) == 0 {
		t.Error("no file recorded for the next run")
	}
}
