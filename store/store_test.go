package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestLayerDirOnceAndShared(t *testing.T) {
	s := openTemp(t)
	diff := sha256Hash([]byte("layer"))
	var calls atomic.Int32
	extract := func(ctx context.Context, tmp string) error {
		calls.Add(1)
		return os.WriteFile(filepath.Join(tmp, "f"), []byte("x"), 0o644)
	}
	var wg sync.WaitGroup
	dirs := make([]string, 4)
	errs := make([]error, 4)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s2, _ := Open(s.Root())
			dirs[i], errs[i] = s2.LayerDir(context.Background(), diff, "", extract)
		}()
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil || dirs[i] != dirs[0] {
			t.Fatalf("LayerDir: %q, %v", dirs[i], errs[i])
		}
	}
	if calls.Load() != 1 {
		t.Errorf("extract called %d times, want 1", calls.Load())
	}
	if b, err := os.ReadFile(filepath.Join(dirs[0], "f")); err != nil || string(b) != "x" {
		t.Errorf("extracted content: %q, %v", b, err)
	}
}

func TestLayerDirFailedExtractLeavesNothing(t *testing.T) {
	s := openTemp(t)
	diff := sha256Hash([]byte("bad layer"))
	boom := errors.New("boom")
	_, err := s.LayerDir(context.Background(), diff, "", func(ctx context.Context, tmp string) error {
		os.MkdirAll(filepath.Join(tmp, "a", "b"), 0o755)
		os.WriteFile(filepath.Join(tmp, "a", "b", "f"), nil, 0o644)
		os.Chmod(filepath.Join(tmp, "a"), 0o555) // read-only dirs, as layers have
		return boom
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), diff.String()) {
		t.Fatalf("LayerDir error: %v", err)
	}
	if n := listDir(t, filepath.Join(s.Root(), "layers")); len(n) != 0 {
		t.Errorf("layers/ holds %v after a failed extract", n)
	}
	if _, err := s.LayerDir(context.Background(), v1.Hash{Algorithm: "sha256", Hex: "../../x"}, "", nil); err == nil {
		t.Error("LayerDir accepted a bad digest")
	}
}

func TestContainerDir(t *testing.T) {
	s := openTemp(t)
	d, err := s.ContainerDir("abc123")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(d); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("container dir: %v %v", fi, err)
	}
	for _, bad := range []string{"", "../x", "a/b", ".hidden"} {
		if _, err := s.ContainerDir(bad); err == nil {
			t.Errorf("ContainerDir(%q) accepted", bad)
		}
	}
	if err := s.RemoveContainerDir("abc123"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d); !os.IsNotExist(err) {
		t.Error("container dir still there")
	}
}

func TestHoldLayersKeepsThemFromGC(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	diff := sha256Hash([]byte("held"))
	dir, err := s.LayerDir(ctx, diff, "", func(ctx context.Context, tmp string) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	release, err := s.HoldLayers(ctx, []v1.Hash{diff})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.InUse) != 1 || st.LayerDirs != 0 {
		t.Errorf("gc of a held layer: %+v", st)
	}
	release()
	st, err = s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LayerDirs != 1 {
		t.Errorf("gc after release: %+v", st)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Error("layer dir still there")
	}
}

func TestGCWaitsForPulls(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	l, err := s.storeLock(ctx, false) // as a running pull holds it
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.GC(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("GC during a pull with a cancelled context: %v", err)
	}
	l.Unlock()
	if _, err := s.GC(ctx); err != nil {
		t.Error(err)
	}
}

func TestRefsDBCorrupt(t *testing.T) {
	s := openTemp(t)
	os.WriteFile(s.refsPath(), []byte("{not json"), 0o644)
	if _, err := s.Images(); err == nil || !strings.Contains(err.Error(), "refs.json") {
		t.Errorf("corrupt refs.json: %v", err)
	}
}
