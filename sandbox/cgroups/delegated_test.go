package cgroups_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/sandbox/cgroups"
)

// helperEnv selects a helper role when the test binary is run again: as the
// test user (a scenario below) or as a process the scenario limits.
const helperEnv = "DABBA_CGROUPS_HELPER"

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(helper(role, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// helper runs a role and returns the exit code; failures go to stderr.
func helper(role string, args []string) int {
	var err error
	switch role {
	case "alloc":
		alloc()
	case "memory":
		err = scenarioMemory()
	case "pids":
		err = scenarioPids()
	case "cpus":
		err = scenarioCPUs()
	case "remove":
		err = scenarioRemove()
	case "undelegated":
		err = scenarioUndelegated()
	default:
		err = fmt.Errorf("unknown helper role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	fmt.Println("ok")
	return 0
}

// alloc waits for a byte on stdin, then allocates and touches memory until
// it is killed.
func alloc() {
	os.Stdin.Read(make([]byte, 1))
	var keep [][]byte
	for {
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = byte(i)
		}
		keep = append(keep, b)
	}
}

// gated starts cmd with a stdin pipe, puts it in cg, and releases it by
// writing a newline, so it does nothing before it is in the cgroup.
func gated(cg *cgroups.Cgroup, cmd *exec.Cmd) error {
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := cg.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	_, err = io.WriteString(in, "\n")
	in.Close()
	return err
}

func gone(dirs ...string) error {
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cgroup %s still there after Remove (%v)", d, err)
		}
	}
	return nil
}

func name(s string) string { return s + "-" + strconv.Itoa(os.Getpid()) }

func scenarioMemory() error {
	cg, err := cgroups.New(name("mem"), cgroups.Limits{MemoryBytes: 16 << 20})
	if err != nil {
		return err
	}
	defer cg.Remove()
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), helperEnv+"=alloc")
	if err := gated(cg, cmd); err != nil {
		return err
	}
	err = cmd.Wait()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return fmt.Errorf("allocating beyond 16MiB ended with %v, want SIGKILL from the OOM killer", err)
	}
	dir := cg.Dir(cgroups.Memory)
	events := "memory.oom_control"
	if cg.Version() == 2 {
		events = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(dir, events))
	if err != nil {
		return err
	}
	if n := counter(string(b), "oom_kill"); n < 1 {
		return fmt.Errorf("%s/%s shows no oom_kill:\n%s", dir, events, b)
	}
	if err := cg.Remove(); err != nil {
		return err
	}
	return gone(dir)
}

// counter reads "key N" from a cgroup's flat keyed file.
func counter(s, key string) int {
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return -1
}

func scenarioPids() error {
	cg, err := cgroups.New(name("pids"), cgroups.Limits{Pids: 8})
	if err != nil {
		return err
	}
	defer cg.Remove()
	// The shell starts cats that hold fd 3, a pipe this process closes to
	// end them: nothing needs killing afterwards.
	hr, hw, err := os.Pipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd := exec.Command("/bin/sh", "-c", `read _; i=0; while [ $i -lt 32 ]; do cat <&3 >/dev/null 2>&1 & i=$((i+1)); done`)
	cmd.ExtraFiles = []*os.File{hr}
	cmd.Stderr = &stderr
	if err := gated(cg, cmd); err != nil {
		return err
	}
	hr.Close()
	werr := cmd.Wait()
	hw.Close()
	b, err := os.ReadFile(filepath.Join(cg.Dir(cgroups.Pids), "pids.events"))
	if err != nil {
		return err
	}
	if counter(string(b), "max") < 1 || !strings.Contains(strings.ToLower(stderr.String()), "fork") {
		return fmt.Errorf("32 processes under pids.max 8: shell ended with %v, stderr %q, pids.events %q: want fork refused", werr, stderr.String(), b)
	}
	dir := cg.Dir(cgroups.Pids)
	if err := cg.Remove(); err != nil {
		return err
	}
	return gone(dir)
}

func scenarioCPUs() error {
	cg, err := cgroups.New(name("cpus"), cgroups.Limits{CPUs: 1.5})
	if err != nil {
		return err
	}
	defer cg.Remove()
	dir := cg.Dir(cgroups.CPU)
	want := map[string]string{"cpu.cfs_quota_us": "150000", "cpu.cfs_period_us": "100000"}
	if cg.Version() == 2 {
		want = map[string]string{"cpu.max": "150000 100000"}
	}
	for f, v := range want {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(string(b)); got != v {
			return fmt.Errorf("%s/%s = %q, want %q", dir, f, got, v)
		}
	}
	if err := cg.Remove(); err != nil {
		return err
	}
	return gone(dir)
}

func scenarioRemove() error {
	cg, err := cgroups.New(name("rm"), cgroups.Limits{MemoryBytes: 64 << 20, Pids: 100, CPUs: 1})
	if err != nil {
		return err
	}
	dirs := []string{cg.Dir(cgroups.Memory), cg.Dir(cgroups.Pids), cg.Dir(cgroups.CPU)}
	cmd := exec.Command("cat")
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	defer in.Close()
	if err := cg.Add(cmd.Process.Pid); err != nil {
		return err
	}
	// A process inside: Remove must refuse, name the cgroup and the
	// process, and kill nothing.
	err = cg.Remove()
	pid := strconv.Itoa(cmd.Process.Pid)
	if err == nil || !strings.Contains(err.Error(), pid) || !strings.Contains(err.Error(), cgroups.DirName(name("rm"))) {
		return fmt.Errorf("Remove with process %s inside: %v, want an error naming the cgroup and the process", pid, err)
	}
	if e := cmd.Process.Signal(syscall.Signal(0)); e != nil {
		return fmt.Errorf("Remove hurt the process inside: %v", e)
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("cat ended with %v", err)
	}
	if err := cg.Remove(); err != nil {
		return fmt.Errorf("Remove once the process ended: %w", err)
	}
	if err := gone(dirs...); err != nil {
		return err
	}
	return cg.Remove() // twice is harmless
}

func scenarioUndelegated() error {
	if cg, err := cgroups.New("none", cgroups.Limits{}); err != nil || cg.Add(os.Getpid()) != nil || cg.Remove() != nil {
		return fmt.Errorf("without limits New must succeed undelegated: %v", err)
	}
	_, err := cgroups.New(name("undeleg"), cgroups.Limits{MemoryBytes: 64 << 20})
	var nd *cgroups.NotDelegatedError
	if !errors.Is(err, cgroups.ErrNotDelegated) || !errors.As(err, &nd) || !cgroups.Ignorable(err) {
		return fmt.Errorf("New with a memory limit, undelegated on v1: %v, want an ignorable ErrNotDelegated", err)
	}
	for _, want := range []string{nd.Dir, "not writable", "chown", "without resource limits", "--memory"} {
		if !strings.Contains(err.Error(), want) {
			return fmt.Errorf("error %q does not say %q", err, want)
		}
	}
	fmt.Println(err)
	return nil
}

// userBinary copies the test binary where the test user can run it.
func userBinary(t *testing.T, u *testenv.User) (exe, home string) {
	home = u.Dir(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(home, "cgroups.test")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe, home
}

func runHelper(t *testing.T, cmd *exec.Cmd, role string) string {
	t.Helper()
	cmd.Env = append(cmd.Env, helperEnv+"="+role)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s as the test user: %v\n%s", role, err, out.String())
	}
	return out.String()
}

// TestDelegated runs the scenarios as the test user inside a cgroup root
// delegated to it, below this test's own cgroup.
func TestDelegated(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	u := testenv.TestUser(t)
	d := testenv.DelegateCgroups(t, u, cgroups.Memory, cgroups.Pids, cgroups.CPU)
	exe, home := userBinary(t, u)
	for _, role := range []string{"memory", "pids", "cpus", "remove"} {
		t.Run(role, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			runHelper(t, d.Command(ctx, home, exe), role)
			// Everything the scenario made is gone again.
			for c, dir := range d.Dirs {
				entries, _ := os.ReadDir(dir)
				for _, e := range entries {
					if e.IsDir() {
						t.Errorf("%s: cgroup %s left behind in %s", role, e.Name(), c)
					}
				}
			}
		})
	}
}

// TestUndelegated runs New as the test user in this test's own cgroups,
// which are root's.
func TestUndelegated(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	u := testenv.TestUser(t)
	if v, _, err := cgroups.Own(); err != nil || v != 1 {
		t.Skipf("skipping: the undelegated case is checked on cgroup v1 here (version %d, %v)", v, err)
	}
	exe, home := userBinary(t, u)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := runHelper(t, u.Command(ctx, home, exe), "undelegated")
	t.Logf("the user sees: %s", strings.TrimSpace(out))
}
