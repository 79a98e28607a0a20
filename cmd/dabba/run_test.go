package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/internal/testenv"
)

func TestParseEntrypoint(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"", []string{}, false},
		{"/bin/sh", []string{"/bin/sh"}, false},
		{`["/bin/sh","-c"]`, []string{"/bin/sh", "-c"}, false},
		{`["/bin/sh",`, nil, true},
	} {
		got, err := parseEntrypoint(tc.in)
		if (err != nil) != tc.err || !tc.err && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseEntrypoint(%q) = %q, %v; want %q (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestRunFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "no image given"},
		{[]string{"run", "--network", "bogus", "img"}, `--network "bogus"`},
		{[]string{"run", "--network", "none", "-p", "8080:80", "img"}, "-p needs --network slirp4netns"},
		{[]string{"run", "--memory", "lots", "img"}, "--memory"},
		{[]string{"run", "--rootfs", "bogus", "img"}, "--rootfs"},
		{[]string{"run", "--name", "-x", "img"}, "--name"},
		{[]string{"run", "-e", "=v", "img"}, "-e"},
		{[]string{"run", "--entrypoint", "[1", "img"}, "--entrypoint"},
	} {
		var out, errb strings.Builder
		code := realMain(append([]string{"--root", t.TempDir()}, tc.args...), &out, &errb)
		if code != exitUsageStatus || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("dabba %q: status %d, stderr %q; want %d and %q", tc.args, code, errb.String(), exitUsageStatus, tc.want)
		}
	}
}

// runEnv is the shared ground of the run tests: the test user, a store, and
// real images on a registry on loopback.
type runEnv struct {
	u            *testenv.User
	home, root   string
	dabba        string
	alpine, bbox string
	path         string // PATH for dabba
}

func newRunEnv(t *testing.T) *runEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: runs the real binary as the test user (-short)")
	}
	u := testenv.TestUser(t)
	testenv.RequireCommand(t, "newuidmap", "uidmap")
	dabba, _ := testenv.Binaries(t)
	host := testenv.Registry(t)
	e := &runEnv{u: u, dabba: dabba}
	e.home = u.Dir(t)
	e.root = filepath.Join(e.home, "store")
	e.alpine = testenv.Push(t, testenv.AlpineImage(t), host, "test/alpine:3")
	e.bbox = testenv.Push(t, testenv.BusyboxImage(t), host, "test/busybox:1")
	return e
}

// run runs `dabba --root ROOT run ARGS...` as the test user, with
// --network none unless args choose a network: these tests need no
// slirp4netns (netns has its own).
func (e *runEnv) run(t *testing.T, stdin string, env []string, args ...string) testenv.Output {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return e.u.RunAs(ctx, e.home, env, stdin, e.dabba, e.runArgs(args...)...)
}

// runArgs is the command line of `dabba run args...` (see run).
func (e *runEnv) runArgs(args ...string) []string {
	a := []string{"--root", e.root, "run"}
	if !slices.Contains(args, "--network") {
		a = append(a, "--network", "none")
	}
	return append(a, args...)
}

// ok runs and requires status 0, returning stdout.
func (e *runEnv) ok(t *testing.T, args ...string) string {
	t.Helper()
	o := e.run(t, "", nil, args...)
	if o.Code != 0 {
		t.Fatalf("dabba run %q: status %d\nstdout: %s\nstderr: %s", args, o.Code, o.Stdout, o.Stderr)
	}
	return o.Stdout
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func TestRun(t *testing.T) {
	e := newRunEnv(t)

	t.Run("Identity", func(t *testing.T) {
		out := e.ok(t, "--hostname", "box", e.alpine, "sh", "-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; hostname; cat /etc/hostname")
		want := []string{"0", "0",
			fmt.Sprintf("0 %d 1", e.u.UID), fmt.Sprintf("1 %d %d", e.u.SubUID, e.u.SubCount),
			fmt.Sprintf("0 %d 1", e.u.GID), fmt.Sprintf("1 %d %d", e.u.SubGID, e.u.SubCount),
			"box", "box"}
		var got []string
		for _, l := range lines(out) {
			got = append(got, strings.Join(strings.Fields(l), " "))
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("Privileges", func(t *testing.T) {
		out := e.ok(t, "--rootfs", "overlay", e.alpine, "sh", "-c", "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; id -G; ls /proc/self/fd")
		// podman's default capabilities: CHOWN DAC_OVERRIDE FOWNER FSETID
		// KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT SETFCAP.
		// The init starts with every capability ambient (to keep them
		// across its first execve): none of that reaches the command.
		want := []string{"CapInh: 0000000000000000", "CapPrm: 00000000800405fb", "CapEff: 00000000800405fb",
			"CapBnd: 00000000800405fb", "CapAmb: 0000000000000000", "NoNewPrivs: 1",
			// root's supplementary groups from Alpine's /etc/group.
			"0 1 2 3 4 6 10 11 20 26 27",
			// stdio and ls's own directory: nothing leaked.
			"0", "1", "2", "3"}
		var got []string
		for _, l := range lines(out) {
			got = append(got, strings.Join(strings.Fields(l), " "))
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
		// A user other than root has none, with or without --init.
		for _, args := range [][]string{{"-u", "1000"}, {"--init", "-u", "1000"}} {
			out := e.ok(t, append(args, e.alpine, "grep", "^Cap", "/proc/self/status")...)
			want := []string{"CapInh: 0000000000000000", "CapPrm: 0000000000000000", "CapEff: 0000000000000000",
				"CapBnd: 00000000800405fb", "CapAmb: 0000000000000000"}
			var got []string
			for _, l := range lines(out) {
				got = append(got, strings.Join(strings.Fields(l), " "))
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%v: got %q, want %q", args, got, want)
			}
		}
		// Layers were extracted in the user namespace: Alpine's /etc/shadow
		// (root:shadow, gid 42) belongs to the caller and subordinate gid 41.
		shadows, _ := filepath.Glob(filepath.Join(e.root, "layers", "*", "etc", "shadow"))
		if len(shadows) == 0 {
			t.Fatal("no extracted layer with etc/shadow in the store")
		}
		var st unix.Stat_t
		if err := unix.Lstat(shadows[0], &st); err != nil || int(st.Uid) != e.u.UID || int(st.Gid) != e.u.SubGID+41 {
			t.Fatalf("%s owned by %d:%d (%v), want %d:%d", shadows[0], st.Uid, st.Gid, err, e.u.UID, e.u.SubGID+41)
		}
	})

	t.Run("Cmdline", func(t *testing.T) {
		out := e.ok(t, e.bbox, "cat", "/proc/1/cmdline")
		if out != "cat\x00/proc/1/cmdline\x00" {
			t.Fatalf("/proc/1/cmdline = %q", out)
		}
		// Flags after the image belong to the command.
		if out := e.ok(t, e.bbox, "sh", "-c", "echo $0 -n", "zero"); strings.TrimSpace(out) != "zero -n" {
			t.Fatalf("sh -c: %q", out)
		}
	})

	t.Run("Environment", func(t *testing.T) {
		out := e.ok(t, "--hostname", "envbox", "-e", "A=b=c", "-e", "EMPTY=", e.bbox, "env")
		got := lines(out)
		sort.Strings(got)
		want := []string{"A=b=c", "EMPTY=", "HOME=/root", "HOSTNAME=envbox",
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "container=dabba"}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("env = %q, want %q", got, want)
		}
		out = e.ok(t, "-t", "-u", "nobody", "-w", "/tmp", e.alpine, "sh", "-c", "echo $TERM $HOME; pwd; id -u")
		if got := strings.Fields(out); !reflect.DeepEqual(got, []string{"xterm", "/", "/tmp", "65534"}) {
			t.Fatalf("with -t -u nobody -w /tmp: %q", got)
		}
	})

	t.Run("Entrypoint", func(t *testing.T) {
		if out := e.ok(t, "--entrypoint", "echo", e.bbox, "a", "b"); strings.TrimSpace(out) != "a b" {
			t.Fatalf("--entrypoint echo: %q", out)
		}
		if out := e.ok(t, "--entrypoint", `["sh","-c","echo $0"]`, e.bbox, "x"); strings.TrimSpace(out) != "x" {
			t.Fatalf("--entrypoint JSON: %q", out)
		}
	})

	t.Run("Devices", func(t *testing.T) {
		out := e.ok(t, e.alpine, "sh", "-c", "ls /dev; echo x > /dev/null; head -c 4 /dev/zero | wc -c; test -c /dev/pts/ptmx && echo ptmx")
		got := lines(out)
		want := []string{"core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero", "4", "ptmx"}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("MaskedAndReadOnly", func(t *testing.T) {
		out := e.ok(t, e.alpine, "sh", "-c", `
			for f in /proc/keys /proc/timer_list /proc/interrupts; do [ -e $f ] && echo "$f $(wc -c < $f)"; done
			find /proc/acpi /sys/firmware -mindepth 1 | wc -l
			echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo WROTE-proc-sys
			echo x > /sys/kernel/uevent_helper 2>/dev/null && echo WROTE-sys
			touch /sys/newfile 2>/dev/null && echo WROTE-sys-file
			echo done`)
		for _, l := range lines(out) {
			if strings.HasPrefix(l, "/proc/") && !strings.HasSuffix(l, " 0") {
				t.Errorf("masked path readable: %s", l)
			}
			if strings.HasPrefix(l, "WROTE") {
				t.Errorf("write succeeded: %s", l)
			}
		}
		if !strings.Contains(out, "\n0\n") || !strings.HasSuffix(out, "done\n") {
			t.Errorf("output %q", out)
		}
	})

	t.Run("Isolation", func(t *testing.T) {
		// The shell's own glob: a pipeline's processes are forked one by
		// one, so ls could list /proc before grep exists.
		out := e.ok(t, e.alpine, "sh", "-c", fmt.Sprintf("set -- /proc/[0-9]*; echo $#; test -e %s && echo HOSTFILE; cat /proc/net/dev | grep -c :", e.home))
		got := lines(out)
		// sh alone; only lo.
		if len(got) != 2 || got[0] != "1" || got[1] != "1" {
			t.Fatalf("got %q: want 1 process, no host file, one interface", got)
		}
	})

	t.Run("HostNetwork", func(t *testing.T) {
		// The interfaces themselves are compared in TestNetwork/Interfaces,
		// robust to other tests adding veths meanwhile.
		out := e.ok(t, "--network", "host", "--hostname", "hostnet", e.bbox, "sh", "-c", "grep -c : /proc/net/dev; grep hostnet /etc/hosts")
		got := lines(out)
		if len(got) != 2 || got[0] == "1" || !strings.HasSuffix(got[1], "hostnet") {
			t.Fatalf("--network host: %q, want more than lo and the hostname in /etc/hosts", got)
		}
	})

	t.Run("KilledParent", func(t *testing.T) {
		// SIGKILL of dabba: the container dies with it (Pdeathsig).
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := e.u.Command(ctx, e.home, e.dabba, e.runArgs(e.bbox, "sh", "-c", "echo ready; exec sleep 1000")...)
		var out testenv.SyncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		out.WaitFor(t, 0, "ready")
		// Any thread of dabba may have started the child.
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", cmd.Process.Pid))
		var children []string
		for _, task := range tasks {
			b, _ := os.ReadFile(task)
			children = append(children, strings.Fields(string(b))...)
		}
		if len(children) != 1 {
			t.Fatalf("children of dabba: %q", children)
		}
		child := children[0]
		cmd.Process.Kill()
		cmd.Wait()
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, err := os.ReadFile("/proc/" + child + "/stat")
			if err != nil || strings.Contains(string(st), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("container process %s still alive after dabba was killed: %s", child, st)
			}
			time.Sleep(20 * time.Millisecond)
		}
		// What a killed dabba leaves (its container's directories) is for
		// `dabba gc`; remove it here so later checks start clean.
		left, _ := filepath.Glob(filepath.Join(e.root, "containers", "*"))
		for _, d := range left {
			testenv.RemoveAll(t, d)
			testenv.RemoveAll(t, filepath.Join(os.TempDir(), fmt.Sprintf("dabba-%d", e.u.UID), "containers", filepath.Base(d)))
		}
	})

	t.Run("ExitCodes", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{e.bbox, "true"}, 0, ""},
			{[]string{e.bbox, "sh", "-c", "exit 7"}, 7, ""},
			{[]string{e.bbox, "nonexistent-cmd"}, 127, "nonexistent-cmd: executable file not found in $PATH"},
			{[]string{e.bbox, "/no/such/file"}, 127, "no such file"},
			{[]string{e.bbox, "/etc/passwd"}, 126, "permission denied"},
			{[]string{"--init", e.bbox, "sh", "-c", "kill -9 $$"}, 128 + 9, ""},
			{[]string{"-u", "nosuchuser", e.bbox, "true"}, 125, "nosuchuser"},
			{[]string{"-w", "relative", e.bbox, "true"}, 125, "--workdir"},
			{[]string{"--entrypoint", "", e.bbox}, 125, "no command"},
			{[]string{strings.Replace(e.bbox, "busybox:1", "missing:1", 1), "true"}, 125, "missing"},
		} {
			o := e.run(t, "", nil, tc.args...)
			if o.Code != tc.code || !strings.Contains(o.Stderr, tc.msg) {
				t.Errorf("dabba run %q: status %d, stderr %q; want %d and %q", tc.args, o.Code, o.Stderr, tc.code, tc.msg)
			}
			if tc.msg != "" && strings.Count(strings.TrimSpace(o.Stderr), "\n") != 0 {
				t.Errorf("dabba run %q: want one line of error, got %q", tc.args, o.Stderr)
			}
		}
	})

	t.Run("ReadOnly", func(t *testing.T) {
		o := e.run(t, "", nil, "--read-only", e.bbox, "sh", "-c", "touch /tmp/ok && echo tmp-ok; touch /x 2>&1")
		if !strings.Contains(o.Stdout, "tmp-ok") || !strings.Contains(o.Stdout, "Read-only file system") || o.Code != 1 {
			t.Fatalf("--read-only: status %d, stdout %q, stderr %q", o.Code, o.Stdout, o.Stderr)
		}
	})

	t.Run("Stdin", func(t *testing.T) {
		o := e.run(t, "hello\nworld\n", nil, "-i", e.bbox, "cat")
		if o.Code != 0 || o.Stdout != "hello\nworld\n" {
			t.Fatalf("status %d, stdout %q, stderr %q", o.Code, o.Stdout, o.Stderr)
		}
		// Without -i the command reads nothing.
		o = e.run(t, "hello\n", nil, e.bbox, "cat")
		if o.Code != 0 || o.Stdout != "" {
			t.Fatalf("without -i: status %d, stdout %q", o.Code, o.Stdout)
		}
	})

	t.Run("SingleIDFallback", func(t *testing.T) {
		root := filepath.Join(e.home, "store-single")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// newuidmap hidden from PATH.
		o := e.u.RunAs(ctx, e.home, []string{"PATH=/nonexistent"}, "", e.dabba, "--root", root, "run", "--network", "none", e.alpine, "cat", "/proc/self/uid_map")
		if o.Code != 0 {
			t.Fatalf("status %d, stderr %q", o.Code, o.Stderr)
		}
		if got := strings.Fields(o.Stdout); !reflect.DeepEqual(got, []string{"0", fmt.Sprint(e.u.UID), "1"}) {
			t.Fatalf("uid_map %q", o.Stdout)
		}
		var warnings []string
		for _, l := range lines(o.Stderr) {
			if strings.Contains(l, "warning") {
				warnings = append(warnings, l)
			}
		}
		if len(warnings) != 1 || !strings.Contains(warnings[0], "newuidmap not found") || !strings.Contains(warnings[0], "install the uidmap package") {
			t.Fatalf("want one line of warning, stderr %q", o.Stderr)
		}
		// --single-id asks for it: no warning.
		o = e.u.RunAs(ctx, e.home, nil, "", e.dabba, "--root", root, "run", "--network", "none", "--single-id", e.alpine, "cat", "/proc/self/uid_map")
		if o.Code != 0 || o.Stderr != "" || len(strings.Fields(o.Stdout)) != 3 {
			t.Fatalf("--single-id: status %d, stdout %q, stderr %q", o.Code, o.Stdout, o.Stderr)
		}
	})

	t.Run("OwnershipAndSignals", func(t *testing.T) {
		for _, init := range []bool{false, true} {
			t.Run(fmt.Sprint("init=", init), func(t *testing.T) {
				var args []string
				if init {
					args = append(args, "--init")
				}
				args = append(args, e.alpine, "sh", "-c",
					`touch /by-root; touch /by-1000; chown 1000:1000 /by-1000
					for s in INT HUP QUIT USR1 USR2; do trap "echo got-$s" $s; done
					trap 'echo got-TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done`)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cmd := e.u.Command(ctx, e.home, e.dabba, e.runArgs(args...)...)
				var out testenv.SyncBuffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				out.WaitFor(t, 0, "ready")
				uppers, _ := filepath.Glob(filepath.Join(e.root, "containers", "*", "upper"))
				found := 0
				for _, up := range uppers {
					for name, want := range map[string][2]int{
						"by-root": {e.u.UID, e.u.GID},
						"by-1000": {e.u.SubUID + 999, e.u.SubGID + 999},
					} {
						var st unix.Stat_t
						if unix.Lstat(filepath.Join(up, name), &st) != nil {
							continue
						}
						found++
						if int(st.Uid) != want[0] || int(st.Gid) != want[1] {
							t.Errorf("%s in the upper dir owned by %d:%d, want %d:%d", name, st.Uid, st.Gid, want[0], want[1])
						}
					}
				}
				if found != 2 {
					t.Errorf("found %d of 2 files in the upper dirs %q", found, uppers)
				}
				pos := 0
				for _, sig := range []struct {
					s    syscall.Signal
					name string
				}{{syscall.SIGINT, "INT"}, {syscall.SIGHUP, "HUP"}, {syscall.SIGQUIT, "QUIT"}, {syscall.SIGUSR1, "USR1"}, {syscall.SIGUSR2, "USR2"}} {
					cmd.Process.Signal(sig.s)
					pos = out.WaitFor(t, pos, "got-"+sig.name)
				}
				cmd.Process.Signal(syscall.SIGTERM)
				err := cmd.Wait()
				if code := cmd.ProcessState.ExitCode(); code != 3 || !strings.Contains(out.String(), "got-TERM") {
					t.Fatalf("after SIGTERM: status %d (%v), output %q", code, err, out.String())
				}
				// --rm: the container's directory is gone.
				if left, _ := filepath.Glob(filepath.Join(e.root, "containers", "*")); len(left) != 0 {
					t.Errorf("container directories left: %q", left)
				}
			})
		}
	})

	t.Run("RemoveSubordinateOwned", func(t *testing.T) {
		// A directory owned by a subordinate id with a file inside: the user
		// cannot remove it alone; dabba removes it in a user namespace.
		e.ok(t, e.bbox, "sh", "-c", "mkdir -p /d/e && touch /d/e/f && chown -R 1000:1000 /d && chmod 755 /d")
		if left, _ := filepath.Glob(filepath.Join(e.root, "containers", "*")); len(left) != 0 {
			t.Errorf("container directories left: %q", left)
		}
	})

	t.Run("Cgroups", func(t *testing.T) {
		d := testenv.DelegateCgroups(t, e.u, "pids", "memory")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		dabba := func(args ...string) testenv.Output {
			cmd := d.Command(ctx, e.home, e.dabba, e.runArgs(args...)...)
			var out, errb strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &errb
			cmd.Run()
			return testenv.Output{Stdout: out.String(), Stderr: errb.String(), Code: cmd.ProcessState.ExitCode()}
		}
		// Ten processes at most: the eleventh sleep cannot be forked.
		o := dabba("--pids-limit", "10", e.bbox, "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 30 & done 2>&1")
		if !strings.Contains(o.Stdout, "can't fork") {
			t.Errorf("--pids-limit 10: status %d, stdout %q, stderr %q", o.Code, o.Stdout, o.Stderr)
		}
		// 32 MiB of memory: a process holding 200 MiB is killed (128+9).
		// The OOM killer may take the shell (PID 1) too: then dabba's own
		// status is 137.
		o = dabba("--memory", "32m", e.bbox, "sh", "-c", "head -c 200000000 /dev/zero | tail -c 150000000 | wc -c")
		if (o.Code != 0 && o.Code != 137) || strings.TrimSpace(o.Stdout) == "150000000" {
			t.Errorf("--memory 32m: status %d, stdout %q, stderr %q: want the memory-hungry tail killed", o.Code, o.Stdout, o.Stderr)
		}
		// The container's cgroups are gone with it.
		for _, dir := range d.Dirs {
			if left, _ := filepath.Glob(filepath.Join(dir, "dabba-*")); len(left) != 0 {
				t.Errorf("cgroups left: %q", left)
			}
		}
	})

	t.Run("PTY", func(t *testing.T) { testPTY(t, e) })
}

// testPTY drives an interactive shell through a real pseudo-terminal.
func testPTY(t *testing.T, e *runEnv) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		t.Fatal(err)
	}
	// The user's terminal must belong to the user.
	os.Chown(tty.Name(), e.u.UID, -1)
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := e.u.Command(ctx, e.home, e.dabba, e.runArgs("-it", e.alpine, "/bin/sh")...)
	cmd.Env = append(cmd.Env, "TERM=xterm")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr.Setpgid = false
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out testenv.SyncBuffer
	go io.Copy(&out, ptmx)
	send := func(s string) {
		if _, err := ptmx.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	// Markers are computed by the shell, so the terminal's echo of the
	// command line never matches them.
	pos := out.WaitFor(t, 0, "# ")
	send("tty; echo T-$((1+1))\r")
	p2 := out.WaitFor(t, pos, "T-2")
	if seg := out.String()[pos:p2]; !strings.Contains(seg, "/dev/pts/0\r\n") {
		t.Errorf("tty did not print /dev/pts/0: %q", seg)
	}
	pos = p2
	send("sleep 100 &\r")
	send("jobs; echo J-$((2+2))\r")
	p2 = out.WaitFor(t, pos, "J-4")
	if seg := out.String()[pos:p2]; !strings.Contains(seg, "sleep 100") || strings.Contains(seg, "can't access tty") {
		t.Errorf("jobs: %q", seg)
	}
	pos = p2
	send("stty size\r")
	pos = out.WaitFor(t, pos, "24 80")
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 33, Cols: 101}); err != nil {
		t.Fatal(err)
	}
	// The kernel sends SIGWINCH to dabba, the terminal's foreground process;
	// wait until the new size reached the container's terminal.
	deadline := time.Now().Add(20 * time.Second)
	for {
		send("stty size\r")
		p, ok := waitShort(&out, pos, "33 101")
		if ok {
			pos = p
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stty size never showed 33 101: %q", out.String()[pos:])
		}
	}
	// Ctrl-C interrupts the foreground sleep, not dabba nor the shell.
	send("sleep 50\r")
	pos = out.WaitFor(t, pos, "sleep 50\r\n")
	time.Sleep(200 * time.Millisecond) // let sleep start; an early ^C still passes the check below
	send("\x03")
	send("echo st $?\r")
	pos = out.WaitFor(t, pos, "st 130")
	send("echo alive $((40+2))\r")
	pos = out.WaitFor(t, pos, "alive 42")
	send("exit 5\r")
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 5 {
		t.Fatalf("status %d (%v) after exit 5; output %q", code, err, out.String())
	}
	after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Fatalf("terminal not restored:\nbefore %+v\nafter  %+v", before, after)
	}
}

func waitShort(b *testenv.SyncBuffer, from int, s string) (int, bool) {
	for i := 0; i < 50; i++ {
		all := b.String()
		if i := strings.Index(all[from:], s); i >= 0 {
			return from + i + len(s), true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return from, false
}
