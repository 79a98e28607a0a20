package store

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// startContainer does what `dabba run` does in process s: the container's
// directory, then its record (skipped when info.Image is "", a container
// still starting).
func startContainer(t *testing.T, s *Store, info ContainerInfo) {
	t.Helper()
	if _, err := s.ContainerDir(info.ID); err != nil {
		t.Fatal(err)
	}
	if info.Image == "" {
		return
	}
	if err := s.WriteContainerInfo(info); err != nil {
		t.Fatal(err)
	}
}

func ids(cs []ContainerInfo) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func TestContainers(t *testing.T) {
	run := openTemp(t) // the dabba processes running containers
	other, err := Open(run.Root())
	if err != nil {
		t.Fatal(err)
	}
	ps, err := Open(run.Root()) // dabba ps
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	newer := ContainerInfo{ID: "c-newer", Name: "web", Image: "alpine", ImageID: "abc", Rootfs: "fuse",
		Command: []string{"sleep", "30"}, Created: t0.Add(time.Minute), PID: 42}
	older := ContainerInfo{ID: "c-older", Image: "busybox", Rootfs: "overlay", Command: []string{"sh"}, Created: t0, PID: 43}
	startContainer(t, run, newer)
	startContainer(t, other, older)
	startContainer(t, run, ContainerInfo{ID: "c-starting"})
	startContainer(t, other, ContainerInfo{ID: "c-dead", Image: "alpine", Created: t0})
	die(t, other, "c-dead")
	// A directory nobody ever locked (no lock file): dead too.
	if err := os.Mkdir(filepath.Join(run.Root(), "containers", "orphan"), 0o700); err != nil {
		t.Fatal(err)
	}

	cs, err := ps.Containers()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cs, []ContainerInfo{older, newer}) {
		t.Fatalf("Containers() = %+v\nwant %+v", cs, []ContainerInfo{older, newer})
	}
	// The process running containers sees the same.
	if cs, err := run.Containers(); err != nil || !reflect.DeepEqual(ids(cs), []string{"c-older", "c-newer"}) {
		t.Fatalf("Containers() in the running process = %q, %v", ids(cs), err)
	}

	// Listing held no lock and made no lock file: the dead one can still
	// be removed, the running ones still cannot.
	if exists(ps.lockPath(containerLock("orphan"))) {
		t.Error("Containers() made a lock file for a directory without one")
	}
	if err := ps.RemoveContainerDir("c-dead"); err != nil {
		t.Fatalf("removing the dead container after listing: %v", err)
	}
	if err := ps.RemoveContainerDir("c-older"); !errors.Is(err, ErrContainerRunning) {
		t.Fatalf("removing a running container: %v", err)
	}

	// A container whose dabba exits (or dies) leaves the list.
	die(t, other, "c-older")
	if cs, err := ps.Containers(); err != nil || !reflect.DeepEqual(ids(cs), []string{"c-newer"}) {
		t.Fatalf("after c-older died: %q, %v", ids(cs), err)
	}
	if err := run.RemoveContainerDir("c-newer"); err != nil {
		t.Fatal(err)
	}
	if cs, err := ps.Containers(); err != nil || len(cs) != 0 {
		t.Fatalf("after c-newer was removed: %q, %v", ids(cs), err)
	}
}

func TestContainersBadRecord(t *testing.T) {
	s := openTemp(t)
	startContainer(t, s, ContainerInfo{ID: "good", Image: "alpine"})
	startContainer(t, s, ContainerInfo{ID: "bad"})
	startContainer(t, s, ContainerInfo{ID: "liar"})
	bad := filepath.Join(s.Root(), "containers", "bad", containerInfoFile)
	os.WriteFile(bad, []byte("{not json"), 0o644)
	os.WriteFile(filepath.Join(s.Root(), "containers", "liar", containerInfoFile), []byte(`{"Id":"good"}`), 0o644)
	cs, err := s.Containers()
	if !reflect.DeepEqual(ids(cs), []string{"good"}) {
		t.Errorf("Containers() = %q, want the readable one", ids(cs))
	}
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `records id "good"`) {
		t.Errorf("Containers() error = %v, want one naming %s and the liar", err, bad)
	}
}

func TestWriteContainerInfoErrors(t *testing.T) {
	s := openTemp(t)
	other, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.ContainerDir("theirs"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id, want string
	}{
		{"theirs", "not made by this process"},
		{"never", "not made by this process"},
		{"../x", "container id"},
	} {
		if err := s.WriteContainerInfo(ContainerInfo{ID: tc.id}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("WriteContainerInfo(%q) = %v, want %q", tc.id, err, tc.want)
		}
	}
}

func TestClaimName(t *testing.T) {
	a := openTemp(t)
	b, err := Open(a.Root()) // another dabba process
	if err != nil {
		t.Fatal(err)
	}
	const idA, idB = "aaaaaaaaaaaaaaaa1111", "bbbbbbbbbbbbbbbb2222"
	release, err := a.ClaimName("web", idA)
	if err != nil {
		t.Fatal(err)
	}
	// Another process, and the same one again, find it taken.
	for _, s := range []*Store{b, a} {
		_, err := s.ClaimName("web", idB)
		want := `the name "web" is already used by running container aaaaaaaaaaaa: choose another name`
		if !errors.Is(err, ErrNameInUse) || err.Error() != want {
			t.Fatalf("second ClaimName = %v, want %q", err, want)
		}
	}
	// Other names are free.
	relOther, err := b.ClaimName("db", idB)
	if err != nil {
		t.Fatal(err)
	}
	relOther()

	release()
	release() // twice is harmless
	relB, err := b.ClaimName("web", idB)
	if err != nil {
		t.Fatalf("ClaimName after release: %v", err)
	}
	if _, err := a.ClaimName("web", idA); err == nil || !strings.Contains(err.Error(), "bbbbbbbbbbbb") {
		t.Fatalf("ClaimName of b's name = %v", err)
	}
	relB()
	if exists(a.lockPath(nameLock("web"))) {
		t.Error("release left the name's lock file")
	}

	// A holder killed -9 leaves the lock file with its id, unlocked.
	if err := os.WriteFile(a.lockPath(nameLock("web")), []byte(idA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rel, err := b.ClaimName("web", idB)
	if err != nil {
		t.Fatalf("ClaimName of a dead holder's name: %v", err)
	}
	if got, _ := os.ReadFile(b.lockPath(nameLock("web"))); string(got) != idB+"\n" {
		t.Errorf("name lock records %q, want %q", got, idB)
	}
	rel()

	for _, name := range []string{"", "-x", "a/b", "..", strings.Repeat("n", 129)} {
		if _, err := a.ClaimName(name, idA); err == nil || !strings.Contains(err.Error(), "container name") {
			t.Errorf("ClaimName(%q) = %v, want a container name error", name, err)
		}
	}
}

func TestLookupContainer(t *testing.T) {
	s := openTemp(t)
	t0 := time.Now()
	for i, c := range []ContainerInfo{
		{ID: "abc111aaa", Name: "web"},
		{ID: "abc222bbb"},
		{ID: "def333ccc", Name: "abc"}, // a name that is also an id prefix
	} {
		c.Image, c.Created = "alpine", t0.Add(time.Duration(i)*time.Second)
		startContainer(t, s, c)
	}
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{"abc111aaa", "abc111aaa", nil},
		{"web", "abc111aaa", nil},
		{"abc2", "abc222bbb", nil},
		{"def", "def333ccc", nil},
		{"abc", "def333ccc", nil}, // the name wins over the prefix
		{"abc1", "abc111aaa", nil},
		{"ab", "", ErrNoContainer}, // too short a prefix
		{"zzz", "", ErrNotFound},
		{"", "", ErrNotFound},
	} {
		c, err := s.LookupContainer(tc.in)
		switch {
		case tc.err != nil && !errors.Is(err, tc.err):
			t.Errorf("LookupContainer(%q) = %v, want %v", tc.in, err, tc.err)
		case tc.err == nil && (err != nil || c.ID != tc.want):
			t.Errorf("LookupContainer(%q) = %+v, %v; want %s", tc.in, c, err, tc.want)
		}
	}
	_, err := s.LookupContainer("zzz")
	if !errors.Is(err, ErrNoContainer) || !strings.Contains(err.Error(), `container "zzz"`) || !strings.Contains(err.Error(), "dabba ps") {
		t.Errorf("unknown container: %v", err)
	}
	// An ambiguous prefix, once the name "abc" is gone.
	die(t, s, "def333ccc")
	_, err = s.LookupContainer("abc")
	if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "matches 2 running containers") {
		t.Errorf("ambiguous prefix: %v", err)
	}
}
