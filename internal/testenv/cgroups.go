package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dabba/dabba/sandbox/cgroups"
)

// CgroupDelegation is a cgroup below the test process's own cgroup in each
// v1 hierarchy asked for, handed to the test user the way root delegates a
// cgroup on v1: the directory, its cgroup.procs and tasks chowned to the user.
type CgroupDelegation struct {
	// Dirs maps a controller (memory, pids, cpu) to the delegated directory.
	Dirs map[string]string
	user *User
}

// DelegateCgroups makes and delegates the cgroups, and removes them (and any
// cgroup the user made inside) when the test ends, first killing, by PID,
// the processes left in them: only processes the test put there can be.
//
// cgroup v2 cannot be delegated this way: the kernel enables memory for a
// cgroup's children only while that cgroup holds no processes, and the
// test's own cgroup holds the test. On v2 the test is skipped, saying so.
func DelegateCgroups(t testing.TB, u *User, controllers ...string) *CgroupDelegation {
	t.Helper()
	RequireRoot(t)
	RequireCommand(t, "setpriv", "util-linux")
	version, own, err := cgroups.Own()
	if err != nil {
		Missing(t, "no cgroup filesystem: "+err.Error(), "mount the cgroup hierarchies (systemd does)")
	}
	if version != 1 {
		t.Skipf("skipping: cgroup v2 delegation below the test's own cgroup %s would need moving the test out of it (the no-internal-process rule); this test runs on v1 and hybrid hosts", own[cgroups.Memory])
	}
	var suffix [4]byte
	rand.Read(suffix[:])
	name := "dabba-test-" + hex.EncodeToString(suffix[:])
	d := &CgroupDelegation{Dirs: map[string]string{}, user: u}
	t.Cleanup(func() { d.remove(t) })
	for _, c := range controllers {
		parent, ok := own[c]
		if !ok {
			Missing(t, "no cgroup v1 hierarchy has the "+c+" controller", "mount it, as systemd does")
		}
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("delegating a %s cgroup: %v", c, err)
		}
		d.Dirs[c] = dir
		for _, p := range []string{dir, filepath.Join(dir, "cgroup.procs"), filepath.Join(dir, "tasks")} {
			if err := os.Chown(p, u.UID, u.GID); err != nil {
				t.Fatalf("delegating %s: %v", p, err)
			}
		}
	}
	return d
}

// Command runs name as the user inside the delegated cgroups: a root shell
// enters them, then setpriv drops to the user and execs name. Env and
// directory are as in User.Command.
func (d *CgroupDelegation) Command(ctx context.Context, home, name string, args ...string) *exec.Cmd {
	u := d.user
	script := `n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || exit 125; shift; n=$((n-1)); done
exec setpriv --reuid="$U" --regid="$G" --clear-groups -- "$@"`
	a := []string{"-c", "U=" + strconv.Itoa(u.UID) + " G=" + strconv.Itoa(u.GID) + "; " + script, "sh", strconv.Itoa(len(d.Dirs))}
	for _, dir := range d.Dirs {
		a = append(a, dir)
	}
	a = append(a, name)
	a = append(a, args...)
	cmd := exec.CommandContext(ctx, "/bin/sh", a...)
	cmd.Env = u.Env(home)
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// remove removes the delegated cgroups and everything below them.
func (d *CgroupDelegation) remove(t testing.TB) {
	for _, dir := range d.Dirs {
		if err := removeCgroupTree(dir); err != nil {
			t.Errorf("cleaning up delegated cgroup: %v", err)
		}
	}
}

func removeCgroupTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroupTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	var last error
	for i := 0; i < 200; i++ {
		// Whatever is left here was started by this test.
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		last = syscall.Rmdir(dir)
		if last == nil || errors.Is(last, syscall.ENOENT) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &os.PathError{Op: "rmdir", Path: dir, Err: last}
}
