package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLimitFiles(t *testing.T) {
	type f = limitFile
	for _, tc := range []struct {
		name string
		l    Limits
		v    int
		want []limitFile
	}{
		{"v1 memory, podman's default swap", Limits{MemoryBytes: 512 << 20}, 1, []limitFile{
			f{Memory, "memory.limit_in_bytes", "536870912", false},
			f{Memory, "memory.memsw.limit_in_bytes", "1073741824", true},
		}},
		{"v2 memory, podman's default swap", Limits{MemoryBytes: 512 << 20}, 2, []limitFile{
			f{Memory, "memory.max", "536870912", false},
			f{Memory, "memory.swap.max", "536870912", true},
		}},
		{"v1 memory, no swap", Limits{MemoryBytes: 1000, MemorySwap: 1000}, 1, []limitFile{
			f{Memory, "memory.limit_in_bytes", "1000", false},
			f{Memory, "memory.memsw.limit_in_bytes", "1000", true},
		}},
		{"v2 memory, no swap", Limits{MemoryBytes: 1000, MemorySwap: 1000}, 2, []limitFile{
			f{Memory, "memory.max", "1000", false},
			f{Memory, "memory.swap.max", "0", true},
		}},
		{"v1 memory, unlimited swap", Limits{MemoryBytes: 1000, MemorySwap: -1}, 1, []limitFile{
			f{Memory, "memory.limit_in_bytes", "1000", false},
			f{Memory, "memory.memsw.limit_in_bytes", "-1", true},
		}},
		{"v2 memory, unlimited swap", Limits{MemoryBytes: 1000, MemorySwap: -1}, 2, []limitFile{
			f{Memory, "memory.max", "1000", false},
			f{Memory, "memory.swap.max", "max", true},
		}},
		{"v1 pids and cpus", Limits{Pids: 100, CPUs: 1.5}, 1, []limitFile{
			f{Pids, "pids.max", "100", false},
			f{CPU, "cpu.cfs_period_us", "100000", false},
			f{CPU, "cpu.cfs_quota_us", "150000", false},
		}},
		{"v2 pids and cpus", Limits{Pids: 100, CPUs: 0.01}, 2, []limitFile{
			f{Pids, "pids.max", "100", false},
			f{CPU, "cpu.max", "1000 100000", false},
		}},
		{"unlimited pids", Limits{Pids: -1}, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.l.files(tc.v); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("files(%d) =\n%v\nwant\n%v", tc.v, got, tc.want)
			}
		})
	}
}

func TestLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		l    Limits
		want string
	}{
		{Limits{MemoryBytes: -1}, "negative"},
		{Limits{MemoryBytes: 10, MemorySwap: -2}, "unlimited swap"},
		{Limits{MemorySwap: 10}, "set --memory too"},
		{Limits{MemoryBytes: 10, MemorySwap: 5}, "at least the memory limit"},
		{Limits{Pids: -2}, "pids limit -2"},
		{Limits{CPUs: -1}, "non-negative"},
		{Limits{CPUs: 0.001}, "smallest"},
	} {
		err := tc.l.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v.Validate() = %v, want an error saying %q", tc.l, err, tc.want)
		}
		if _, err := New("x", tc.l); err == nil {
			t.Errorf("New(%+v) accepted invalid limits", tc.l)
		}
	}
	for _, l := range []Limits{{}, {MemoryBytes: 1, MemorySwap: -1}, {Pids: -1}, {CPUs: 0.01}} {
		if err := l.Validate(); err != nil {
			t.Errorf("%+v.Validate() = %v", l, err)
		}
	}
}

func TestNames(t *testing.T) {
	for _, n := range []string{"", ".", "..", "-x", "a/b", "a b", "ä", strings.Repeat("a", 201)} {
		if _, err := New(n, Limits{Pids: 1}); err == nil || !strings.Contains(err.Error(), "cgroup name") {
			t.Errorf("New(%q) error %v, want a bad name", n, err)
		}
	}
	if err := checkName("abc-1.2_X"); err != nil {
		t.Error(err)
	}
}

func TestNoLimits(t *testing.T) {
	cg, err := New("x", Limits{Pids: -1})
	if err != nil || cg.Version() != 0 || cg.Dir(Pids) != "" || cg.Add(1) != nil || cg.Remove() != nil {
		t.Errorf("New without limits = %+v, %v: want a cgroup that does nothing", cg, err)
	}
}

// TestDetectHere checks that this machine's own files make sense.
func TestDetectHere(t *testing.T) {
	mi, err1 := os.ReadFile("/proc/self/mountinfo")
	pc, err2 := os.ReadFile("/proc/self/cgroup")
	if err1 != nil || err2 != nil {
		t.Skip("no /proc")
	}
	l, err := detect(mi, pc)
	if err != nil {
		t.Skipf("no usable cgroup mount here: %v", err)
	}
	for c, dir := range l.own {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Errorf("own %s cgroup %s: %v", c, dir, err)
		}
	}
}

// fakeKernel makes mkdirCgroup behave like the kernel on a plain directory
// tree: a new cgroup comes with its control files.
func fakeKernel(t *testing.T, files ...string) {
	old := mkdirCgroup
	mkdirCgroup = func(dir string) error {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		for _, f := range append([]string{"cgroup.procs"}, files...) {
			if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	t.Cleanup(func() { mkdirCgroup = old })
}

// v2Tree lays out a cgroup2 tree in a temporary directory: the caller's
// cgroup own with the given available and enabled controllers.
func v2Tree(t *testing.T, available, enabled string) (*layout, string) {
	root := t.TempDir()
	own := filepath.Join(root, "user.slice", "user@1000.service", "app.slice", "dabba.scope")
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{"cgroup.procs": "4242\n", "cgroup.controllers": available, "cgroup.subtree_control": enabled} {
		if err := os.WriteFile(filepath.Join(own, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mi := fmt.Sprintf("26 22 0:23 / %s rw - cgroup2 cgroup2 rw,nsdelegate\n", root)
	l, err := detect([]byte(mi), []byte("0::/user.slice/user@1000.service/app.slice/dabba.scope\n"))
	if err != nil || l.version != 2 || l.own[Memory] != own {
		t.Fatalf("detect = %+v, %v", l, err)
	}
	return l, own
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCreateV2Tree(t *testing.T) {
	fakeKernel(t, "memory.max", "memory.swap.max", "pids.max", "cpu.max")
	l, own := v2Tree(t, "cpuset cpu io memory pids\n", "")
	cg, err := create(l, "c1", Limits{MemoryBytes: 64 << 20, Pids: 50, CPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(own, "dabba-c1")
	if cg.Version() != 2 || cg.Dir(Memory) != dir || cg.Dir(Pids) != dir || cg.Dir(CPU) != dir {
		t.Fatalf("cgroup %+v, want v2 in %s", cg, dir)
	}
	// Each missing controller is enabled by its own write; the file keeps
	// the last one (the kernel would list all three).
	if got := readFile(t, filepath.Join(own, "cgroup.subtree_control")); got != "+cpu" {
		t.Errorf("subtree_control got %q last", got)
	}
	for f, want := range map[string]string{
		"memory.max": "67108864", "memory.swap.max": "67108864", "pids.max": "50", "cpu.max": "200000 100000",
	} {
		if got := readFile(t, filepath.Join(dir, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
	if err := cg.Add(77); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "cgroup.procs")); got != "77" {
		t.Errorf("cgroup.procs = %q, want 77", got)
	}
	if _, err := create(l, "c1", Limits{Pids: 1}); err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), dir) {
		t.Errorf("second cgroup of the same name: %v", err)
	}
}

func TestCreateV2NoSwapAccounting(t *testing.T) {
	fakeKernel(t, "memory.max") // no memory.swap.max: swap accounting off
	l, own := v2Tree(t, "memory pids\n", "memory pids\n")
	if _, err := create(l, "c", Limits{MemoryBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(own, "dabba-c", "memory.max")); got != "1048576" {
		t.Errorf("memory.max = %q", got)
	}
	if got := readFile(t, filepath.Join(own, "cgroup.subtree_control")); got != "memory pids\n" {
		t.Errorf("subtree_control rewritten to %q though everything was enabled", got)
	}
}

func TestCreateV2NotDelegated(t *testing.T) {
	fakeKernel(t, "pids.max")
	l, own := v2Tree(t, "cpu pids\n", "")
	_, err := create(l, "c", Limits{MemoryBytes: 1 << 20, Pids: 5})
	var nd *NotDelegatedError
	if !errors.Is(err, ErrNotDelegated) || !errors.As(err, &nd) {
		t.Fatalf("create without the memory controller: %v, want ErrNotDelegated", err)
	}
	if nd.Version != 2 || nd.Controller != Memory || nd.Dir != own {
		t.Errorf("error details %+v", nd)
	}
	if Ignorable(err) {
		t.Error("a v2 delegation error is ignorable; podman fails there")
	}
	for _, want := range []string{own, "memory", "Delegate=", "without resource limits"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(own, "dabba-c")); !os.IsNotExist(err) {
		t.Errorf("a failed New left its cgroup behind: %v", err)
	}
}

func TestCreateV1Tree(t *testing.T) {
	fakeKernel(t, "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "pids.max", "cpu.cfs_period_us", "cpu.cfs_quota_us")
	root := t.TempDir()
	mi, pc := "", ""
	for i, c := range []string{"memory", "pids", "cpu,cpuacct"} {
		if err := os.MkdirAll(filepath.Join(root, c, "user.slice"), 0o755); err != nil {
			t.Fatal(err)
		}
		mi += fmt.Sprintf("%d 31 0:%d / %s rw - cgroup cgroup rw,%s\n", 40+i, 30+i, filepath.Join(root, c), c)
		pc += fmt.Sprintf("%d:%s:/user.slice\n", i+1, c)
	}
	l, err := detect([]byte(mi), []byte(pc))
	if err != nil {
		t.Fatal(err)
	}
	cg, err := create(l, "c", Limits{MemoryBytes: 1 << 20, Pids: 9, CPUs: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		"memory/user.slice/dabba-c/memory.limit_in_bytes":       "1048576",
		"memory/user.slice/dabba-c/memory.memsw.limit_in_bytes": "2097152",
		"pids/user.slice/dabba-c/pids.max":                      "9",
		"cpu,cpuacct/user.slice/dabba-c/cpu.cfs_period_us":      "100000",
		"cpu,cpuacct/user.slice/dabba-c/cpu.cfs_quota_us":       "50000",
	} {
		if got := readFile(t, filepath.Join(root, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if err := cg.Add(5); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{Memory, Pids, CPU} {
		if got := readFile(t, filepath.Join(cg.Dir(c), "cgroup.procs")); got != "5" {
			t.Errorf("%s cgroup.procs = %q", c, got)
		}
	}

	// A controller no hierarchy has.
	l2, err := detect([]byte(mi), []byte(pc))
	if err != nil {
		t.Fatal(err)
	}
	delete(l2.own, Pids)
	_, err = create(l2, "d", Limits{MemoryBytes: 1 << 20, Pids: 9})
	if !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), "pids") {
		t.Errorf("create without a pids hierarchy: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "memory/user.slice/dabba-d")); !os.IsNotExist(err) {
		t.Errorf("a failed New left its memory cgroup behind: %v", err)
	}
}

// TestCreateV1NotWritable checks the undelegated v1 message without root;
// the integration test checks it again as the test user on the real tree.
func TestCreateV1NotWritable(t *testing.T) {
	root := t.TempDir()
	own := filepath.Join(root, "memory", "user.slice")
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	makeReadOnly(t, own, 0o555)
	mi := fmt.Sprintf("40 31 0:30 / %s rw - cgroup cgroup rw,memory\n", filepath.Join(root, "memory"))
	l, err := detect([]byte(mi), []byte("4:memory:/user.slice\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = create(l, "c", Limits{MemoryBytes: 1 << 20})
	if !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), "chown") || !strings.Contains(err.Error(), own) {
		t.Errorf("create in a read-only cgroup: %v", err)
	}
}

// TestCreateV2NotWritable checks the undelegated v2 message without root.
func TestCreateV2NotWritable(t *testing.T) {
	l, own := v2Tree(t, "memory pids\n", "")
	makeReadOnly(t, filepath.Join(own, "cgroup.procs"), 0o444)
	_, err := create(l, "c", Limits{Pids: 5})
	var nd *NotDelegatedError
	if !errors.As(err, &nd) || nd.Version != 2 || !strings.Contains(err.Error(), "Delegate=yes") || !strings.Contains(err.Error(), own+"/cgroup.procs") {
		t.Errorf("create in an undelegated v2 cgroup: %v", err)
	}
}

// makeReadOnly takes write permission away from p: by its mode for an
// ordinary user, and for root (who may write anywhere) by a read-only bind
// mount of p onto itself, which the test unmounts when it ends.
func makeReadOnly(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := unix.Mount(p, p, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount of %s: %v", p, err)
	}
	t.Cleanup(func() { unix.Unmount(p, unix.MNT_DETACH) })
	if err := unix.Mount("", p, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("read-only remount of %s: %v", p, err)
	}
}

// TestCreateV1CoMounted checks controllers that share one v1 hierarchy.
func TestCreateV1CoMounted(t *testing.T) {
	fakeKernel(t, "memory.limit_in_bytes", "pids.max")
	root := t.TempDir()
	mi := fmt.Sprintf("40 31 0:30 / %s rw - cgroup cgroup rw,memory,pids\n", root)
	l, err := detect([]byte(mi), []byte("4:memory,pids:/\n"))
	if err != nil {
		t.Fatal(err)
	}
	cg, err := create(l, "c", Limits{MemoryBytes: 4096, Pids: 3})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "dabba-c")
	if cg.Dir(Memory) != dir || cg.Dir(Pids) != dir {
		t.Errorf("dirs %q %q, want both %s", cg.Dir(Memory), cg.Dir(Pids), dir)
	}
	if readFile(t, filepath.Join(dir, "memory.limit_in_bytes")) != "4096" || readFile(t, filepath.Join(dir, "pids.max")) != "3" {
		t.Error("limits not written")
	}
}
