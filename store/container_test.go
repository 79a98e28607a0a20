package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// die does to a container what kill -9 of its dabba does: the kernel drops
// the lock, the directory stays.
func die(t *testing.T, s *Store, id string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.containers[id]
	if l == nil {
		t.Fatalf("container %s not held", id)
	}
	l.Unlock()
	delete(s.containers, id)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestGCRemovesDeadContainersOnly(t *testing.T) {
	ctx := context.Background()
	running := openTemp(t)
	dead, err := Open(running.Root()) // another dabba process
	if err != nil {
		t.Fatal(err)
	}
	rdir, err := running.ContainerDir("running")
	if err != nil {
		t.Fatal(err)
	}
	ddir, err := dead.ContainerDir("dead")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{rdir, ddir} {
		os.MkdirAll(filepath.Join(d, "upper", "etc"), 0o755)
		os.WriteFile(filepath.Join(d, "upper", "etc", "f"), []byte("12345"), 0o644)
		os.Chmod(filepath.Join(d, "upper", "etc"), 0o555)
	}
	die(t, dead, "dead")

	gc, err := Open(running.Root()) // dabba gc
	if err != nil {
		t.Fatal(err)
	}
	st, err := gc.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Containers != 1 || st.Bytes != 5 {
		t.Errorf("gc: %+v, want 1 dead container of 5 bytes", st)
	}
	if exists(ddir) || exists(gc.lockPath(containerLock("dead"))) {
		t.Error("the dead container's directory or lock is still there")
	}
	if !exists(filepath.Join(rdir, "upper", "etc", "f")) {
		t.Fatal("gc touched the running container's directory")
	}
	// Nor may anyone remove a running container's directory by id.
	if err := gc.RemoveContainerDir("running"); !errors.Is(err, ErrContainerRunning) || !exists(rdir) {
		t.Fatalf("RemoveContainerDir of a running container: %v", err)
	}
	if err := running.RemoveContainerDir("running"); err != nil {
		t.Fatal(err)
	}
	if exists(rdir) || exists(running.lockPath(containerLock("running"))) {
		t.Error("the container's directory or lock is still there after RemoveContainerDir")
	}
}

func TestRemoveDeadContainers(t *testing.T) {
	s := openTemp(t)
	other, _ := Open(s.Root())
	mine, err := s.ContainerDir("mine")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"d1", "d2"} {
		if _, err := other.ContainerDir(id); err != nil {
			t.Fatal(err)
		}
		die(t, other, id)
	}
	// A directory from before container locks existed: dead too.
	os.Mkdir(filepath.Join(s.Root(), "containers", "old"), 0o700)
	n, err := s.RemoveDeadContainers()
	if err != nil || n != 3 {
		t.Fatalf("RemoveDeadContainers: %d, %v; want 3", n, err)
	}
	if got := listDir(t, filepath.Join(s.Root(), "containers")); len(got) != 1 || got[0] != "mine" || !exists(mine) {
		t.Fatalf("containers/ holds %q, want only mine", got)
	}
	if n, err := s.RemoveDeadContainers(); n != 0 || err != nil {
		t.Fatalf("second RemoveDeadContainers: %d, %v", n, err)
	}
}

func TestContainerDirErrors(t *testing.T) {
	s := openTemp(t)
	if _, err := s.ContainerDir("c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ContainerDir("c"); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("second ContainerDir in one process: %v", err)
	}
	other, _ := Open(s.Root())
	if _, err := other.ContainerDir("c"); !errors.Is(err, ErrContainerRunning) {
		t.Errorf("ContainerDir of a running container's id: %v", err)
	}
	// A dead container's directory with the same id: gc's job first.
	if _, err := other.ContainerDir("x"); err != nil {
		t.Fatal(err)
	}
	die(t, other, "x")
	if _, err := s.ContainerDir("x"); err == nil || !strings.Contains(err.Error(), "dabba gc") {
		t.Errorf("ContainerDir over a dead container's directory: %v", err)
	}
	if err := s.RemoveContainerDir("../x"); err == nil {
		t.Error("RemoveContainerDir accepted a bad id")
	}
}

func TestGCRemovesOrphanContainerLocks(t *testing.T) {
	s := openTemp(t)
	// A dabba killed between taking the lock and making the directory.
	os.WriteFile(s.lockPath(containerLock("orphan")), nil, 0o600)
	// One starting right now: it holds the lock, the directory comes next.
	starting, ok, err := tryLockStable(s.lockPath(containerLock("starting")), true)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	defer starting.Unlock()
	if _, err := s.GC(context.Background()); err != nil {
		t.Fatal(err)
	}
	if exists(s.lockPath(containerLock("orphan"))) {
		t.Error("orphan container lock left")
	}
	if !exists(s.lockPath(containerLock("starting"))) {
		t.Error("gc removed the lock of a starting container")
	}
}

func TestLayerDirVariants(t *testing.T) {
	s := openTemp(t)
	ctx := context.Background()
	diff := sha256Hash([]byte("layer"))
	extract := func(owner string) func(context.Context, string) error {
		return func(ctx context.Context, tmp string) error {
			return os.WriteFile(filepath.Join(tmp, "owner"), []byte(owner), 0o644)
		}
	}
	single, err := s.LayerDir(ctx, diff, "single", extract("single"))
	if err != nil {
		t.Fatal(err)
	}
	// A container of the single-id variant is running...
	release, err := s.HoldLayers(ctx, []v1.Hash{diff})
	if err != nil {
		t.Fatal(err)
	}
	// ...and extracting the full-map variant does not wait for it.
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	full, err := s.LayerDir(tctx, diff, "map-0123456789abcdef", extract("full"))
	if err != nil {
		t.Fatal(err)
	}
	if single == full || filepath.Base(single) != diff.Hex+"-single" {
		t.Fatalf("variants share or misname their dirs: %s, %s", single, full)
	}
	for dir, want := range map[string]string{single: "single", full: "full"} {
		if b, _ := os.ReadFile(filepath.Join(dir, "owner")); string(b) != want {
			t.Errorf("%s holds %q, want %q", dir, b, want)
		}
	}
	// Found again without extracting.
	if d, err := s.LayerDir(ctx, diff, "single", nil); err != nil || d != single {
		t.Errorf("LayerDir again: %s, %v", d, err)
	}
	for _, bad := range []string{"Single", "a/b", "..", strings.Repeat("a", 65), "a b"} {
		if _, err := s.LayerDir(ctx, diff, bad, extract("x")); err == nil || !strings.Contains(err.Error(), "variant") {
			t.Errorf("LayerDir variant %q: %v", bad, err)
		}
	}
	// Unreferenced, but held: both variants stay.
	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LayerDirs != 0 || len(st.InUse) != 2 {
		t.Errorf("gc of held variants: %+v", st)
	}
	release()
	st, err = s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LayerDirs != 2 || exists(single) || exists(full) {
		t.Errorf("gc after release: %+v", st)
	}
	if n := listDir(t, filepath.Join(s.Root(), "locks")); len(n) != 1 || n[0] != "store.lock" {
		t.Errorf("locks left: %q", n)
	}
}

func TestLayerDirDiffID(t *testing.T) {
	h := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{h, true},
		{h + "-single", true},
		{h + "-map-0123", true},
		{h + "-", false},
		{h + "x", false},
		{".tmp-" + h, false},
		{"short", false},
		{strings.ToUpper(h), false},
	} {
		got, ok := layerDirDiffID(tc.name)
		if ok != tc.ok || ok && got != h {
			t.Errorf("layerDirDiffID(%q) = %q, %v; want ok %v", tc.name, got, ok, tc.ok)
		}
	}
}
