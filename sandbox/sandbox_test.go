package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dabba/dabba/internal/imagebuild"
	"github.com/dabba/dabba/internal/testenv"
)

// TestMain runs the container's init when the test binary is re-executed
// as one, so the tests exercise the real child path.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ChildArg {
		runtime.LockOSThread()
		os.Exit(ChildMain())
	}
	os.Exit(m.Run())
}

func TestLookupUser(t *testing.T) {
	const passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken:x:abc:1::/:\n"
	const group = "root:x:0:root\nwheel:x:10:root,alice\naudio:x:29:alice\nstaff:x:50:\nalice:x:1000:\n"
	for _, tc := range []struct {
		spec string
		want *ExecUser
		err  string
	}{
		{"", &ExecUser{UID: 0, GID: 0, Groups: []int{10}, Home: "/root"}, ""},
		{"root", &ExecUser{UID: 0, GID: 0, Groups: []int{10}, Home: "/root"}, ""},
		{"alice", &ExecUser{UID: 1000, GID: 1000, Groups: []int{10, 29}, Home: "/home/alice"}, ""},
		{"1000", &ExecUser{UID: 1000, GID: 1000, Groups: []int{10, 29}, Home: "/home/alice"}, ""},
		{"alice:staff", &ExecUser{UID: 1000, GID: 50, Groups: []int{10, 29}, Home: "/home/alice"}, ""},
		{"4242", &ExecUser{UID: 4242, GID: 0, Home: "/"}, ""},
		{"4242:77", &ExecUser{UID: 4242, GID: 77, Home: "/"}, ""},
		{"bob", nil, `user "bob": no such user`},
		{"alice:nogroup", nil, `group "nogroup": no such group`},
		{"alice:", nil, "empty group"},
		{"-1", nil, "negative uid"},
	} {
		got, err := LookupUser(tc.spec, strings.NewReader(passwd), strings.NewReader(group))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("LookupUser(%q) error %v, want %q", tc.spec, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("LookupUser(%q) = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
	// An image without /etc/passwd: ids work, names do not.
	if u, err := LookupUser("12:34", nil, nil); err != nil || u.UID != 12 || u.GID != 34 || u.Home != "/" {
		t.Errorf("without passwd: %+v, %v", u, err)
	}
	if _, err := LookupUser("alice", nil, nil); err == nil {
		t.Error("a name without passwd: no error")
	}
}

func TestResolveArgs(t *testing.T) {
	sl := func(s ...string) []string { return s }
	empty := []string{}
	for _, tc := range []struct {
		name         string
		ep, cmd      []string
		override     *[]string
		args, want   []string
		wantNoCmdErr bool
	}{
		{"cmd only", nil, sl("/bin/sh"), nil, nil, sl("/bin/sh"), false},
		{"args replace cmd", sl("/ep"), sl("x"), nil, sl("a", "b"), sl("/ep", "a", "b"), false},
		{"entrypoint and cmd", sl("/ep", "-v"), sl("x"), nil, nil, sl("/ep", "-v", "x"), false},
		{"override drops cmd", sl("/ep"), sl("x"), &[]string{"/other"}, nil, sl("/other"), false},
		{"override with args", sl("/ep"), sl("x"), &[]string{"/other"}, sl("y"), sl("/other", "y"), false},
		{"cleared entrypoint", sl("/ep"), sl("x"), &empty, sl("ls"), sl("ls"), false},
		{"nothing", nil, nil, nil, nil, nil, true},
		{"cleared, nothing", sl("/ep"), nil, &empty, nil, nil, true},
	} {
		got, err := ResolveArgs(tc.ep, tc.cmd, tc.override, tc.args)
		if tc.wantNoCmdErr {
			if !errors.Is(err, ErrNoCommand) {
				t.Errorf("%s: error %v, want ErrNoCommand", tc.name, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestBaseEnv(t *testing.T) {
	lookup := func(k string) (string, bool) {
		if k == "FROMHOST" {
			return "h=1", true
		}
		return "", false
	}
	got := BaseEnv("box", true, []string{"PATH=/img/bin", "LANG=C", "X=image"},
		[]string{"X=user=1", "FROMHOST", "MISSING", "EMPTY="}, lookup)
	want := []string{"PATH=/img/bin", "TERM=xterm", "container=dabba", "HOSTNAME=box", "LANG=C", "X=user=1", "FROMHOST=h=1", "EMPTY="}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("BaseEnv = %q, want %q", got, want)
	}
	if v, ok := envGet(got, "X"); !ok || v != "user=1" {
		t.Fatalf("envGet X = %q %v", v, ok)
	}
}

func TestParseSubIDs(t *testing.T) {
	in := "# comment\nalice:100000:65536\nbob:200000:1000\n1001:300000:10\nalice:bad:1\nalice:400000:0\n"
	got, err := ParseSubIDs(strings.NewReader(in), "alice", 1001)
	if err != nil {
		t.Fatal(err)
	}
	want := []SubIDRange{{100000, 65536}, {300000, 10}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	m := rangeMaps(1001, got)
	wantMap := []IDMapping{{0, 1001, 1}, {1, 100000, 65536}, {65537, 300000, 10}}
	if !reflect.DeepEqual(m, wantMap) {
		t.Fatalf("rangeMaps = %v, want %v", m, wantMap)
	}
	maps := &IDMaps{UID: m, GID: m}
	for id, host := range map[int]int{0: 1001, 1: 100000, 1000: 100999, 65537: 300000, 65547: -1} {
		if got := maps.HostUID(id); got != host {
			t.Errorf("HostUID(%d) = %d, want %d", id, got, host)
		}
	}
	if got := strings.Join(mapArgs(m[:2]), " "); got != "0 1001 1 1 100000 65536" {
		t.Errorf("mapArgs = %q", got)
	}
}

func TestFilterResolvConf(t *testing.T) {
	in := "# generated\nnameserver 127.0.0.53\nnameserver 10.1.2.3\nnameserver ::1\nnameserver fe80::1%eth0\nsearch example.com\noptions edns0\nbogus line\n"
	got := filterResolvConf(bufio.NewScanner(strings.NewReader(in)))
	want := "nameserver 10.1.2.3\nnameserver fe80::1%eth0\nsearch example.com\noptions edns0\n"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc", "real"), 0o755)
	os.Symlink("/run/resolv.conf", filepath.Join(root, "etc", "resolv.conf"))
	os.Symlink("../../../../../etc", filepath.Join(root, "etc", "up"))
	os.Symlink("real", filepath.Join(root, "etc", "rel"))
	os.Symlink("loop", filepath.Join(root, "loop"))
	for in, want := range map[string]string{
		"/etc/resolv.conf": "/run/resolv.conf",
		"/etc/up/hosts":    "/etc/hosts",
		"/etc/rel/x":       "/etc/real/x",
		"/../../etc":       "/etc",
		"/new/dir":         "/new/dir",
	} {
		got, err := resolveIn(root, in)
		if err != nil || got != root+want {
			t.Errorf("resolveIn(%q) = %q, %v; want %q", in, got, err, root+want)
		}
	}
	if _, err := resolveIn(root, "/loop/x"); err == nil {
		t.Error("a symlink loop resolved")
	}
}

func TestRuntimeDir(t *testing.T) {
	x := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", x)
	d, err := RuntimeDir()
	if err != nil || d != filepath.Join(x, "dabba") {
		t.Fatalf("RuntimeDir = %q, %v", d, err)
	}
	fi, _ := os.Stat(d)
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v", fi.Mode())
	}
	// Unset: the /tmp fallback, also private.
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", t.TempDir())
	d, err = RuntimeDir()
	if err != nil || !strings.HasPrefix(d, os.Getenv("TMPDIR")) {
		t.Fatalf("fallback RuntimeDir = %q, %v", d, err)
	}
	// Someone else's directory is refused.
	if os.Geteuid() == 0 {
		os.Chown(d, 12345, 12345)
		if _, err := RuntimeDir(); err == nil || !strings.Contains(err.Error(), "not a directory owned by") {
			t.Fatalf("foreign runtime dir: %v", err)
		}
	}
}

func TestRunValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Rootfs: Rootfs{Type: RootfsDir, Dir: "/"}}, "no command"},
		{Config{Args: []string{"x"}, Rootfs: Rootfs{Type: "zfs"}}, "want dir, overlay or fuse"},
		{Config{Args: []string{"x"}, Rootfs: Rootfs{Type: RootfsDir, Dir: "rel"}}, "absolute"},
		{Config{Args: []string{"x"}, Rootfs: Rootfs{Type: RootfsOverlay, Upper: "/u", Work: "/w"}}, "without lower"},
		{Config{Args: []string{"x"}, Rootfs: Rootfs{Type: RootfsDir, Dir: "/"}, Network: NetworkPrivate}, "network hook"},
		{Config{Args: []string{"x"}, Rootfs: Rootfs{Type: RootfsFUSE}}, "FUSE server"},
	} {
		_, err := Run(context.Background(), &tc.cfg)
		var se *StageError
		if !errors.As(err, &se) || se.Code != ExitDabba || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%+v) = %v, want a StageError with %q", tc.cfg.Rootfs, err, tc.want)
		}
	}
}

// busyboxRoot makes a minimal rootfs directory with Debian's static busybox.
func busyboxRoot(t *testing.T) string {
	t.Helper()
	bb, err := imagebuild.BusyboxPath()
	if err != nil {
		testenv.Missing(t, "busybox not found", "install busybox-static, or run `make deps` as root")
	}
	root := t.TempDir()
	for _, d := range []string{"bin", "etc"} {
		os.Mkdir(filepath.Join(root, d), 0o755)
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "cat", "id", "hostname", "ls", "echo"} {
		os.Symlink("busybox", filepath.Join(root, "bin", a))
	}
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.Chmod(root, 0o755)
	return root
}

// TestRunInProcess runs containers from this test binary (re-executed as
// the child through TestMain) as real root: identity map, a directory rootfs.
// The unprivileged paths are tested with the real binary in cmd/dabba.
func TestRunInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: runs containers (-short)")
	}
	testenv.RequireRoot(t)
	root := busyboxRoot(t)
	run := func(t *testing.T, cfg Config) (int, string, error) {
		t.Helper()
		var out bytes.Buffer
		cfg.Rootfs = Rootfs{Type: RootfsDir, Dir: root}
		cfg.Stdout, cfg.Stderr = &out, &out
		cfg.RuntimeDir = t.TempDir()
		if cfg.Env == nil {
			cfg.Env = []string{"PATH=/bin"}
		}
		st, err := Run(context.Background(), &cfg)
		return st, out.String(), err
	}
	st, out, err := run(t, Config{Hostname: "inproc", Args: []string{"sh", "-c", "hostname; id -u; cat /proc/self/uid_map; echo $HOME; exit 3"}})
	if err != nil || st != 3 {
		t.Fatalf("status %d, err %v, output %q", st, err, out)
	}
	if got := strings.Fields(out); !reflect.DeepEqual(got, []string{"inproc", "0", "0", "0", "4294967295", "/root"}) {
		t.Fatalf("output %q", out)
	}
	// An environment larger than a pipe's buffer (64 KiB) travels in the config.
	big := strings.Repeat("x", 100<<10)
	st, out, err = run(t, Config{Args: []string{"sh", "-c", "echo ${#BIG}"}, Env: []string{"PATH=/bin", "BIG=" + big}})
	if err != nil || st != 0 || strings.TrimSpace(out) != "102400" {
		t.Fatalf("large environment: status %d, err %v, output %q", st, err, out)
	}
	st, out, err = run(t, Config{Args: []string{"nosuch"}})
	var se *StageError
	if !errors.As(err, &se) || se.Stage != "exec" || se.Code != ExitNotFound || st != ExitNotFound {
		t.Fatalf("missing command: status %d, err %v, output %q", st, err, out)
	}
	_, _, err = run(t, Config{Args: []string{"true"}, User: "ghost"})
	if !errors.As(err, &se) || se.Stage != "user" || !strings.Contains(err.Error(), "ghost") {
		t.Fatalf("unknown user: %v", err)
	}
	// The minimal init reaps, and passes a signal death on as 128+N.
	st, out, err = run(t, Config{Init: true, Args: []string{"sh", "-c", "sh -c 'exit 0' & wait; kill -9 $$"}})
	if err != nil || st != 137 {
		t.Fatalf("--init: status %d, err %v, output %q", st, err, out)
	}
}

func TestSweepContainerDirs(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, lock bool, age time.Duration) string {
		d := filepath.Join(dir, name)
		os.Mkdir(d, 0o700)
		if lock {
			lp := filepath.Join(d, "lock")
			os.WriteFile(lp, nil, 0o600)
			old := time.Now().Add(-age)
			os.Chtimes(lp, old, old)
		}
		return d
	}
	dead := mk("dead", true, time.Hour)
	starting := mk("starting", true, 0)
	nolock := mk("nolock", false, 0)
	running := mk("running", true, time.Hour)
	f, err := lockContainerDir(running)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// An old lock file that is held: only the lock keeps this one.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(running, "lock"), old, old)
	sweepContainerDirs(dir)
	for d, want := range map[string]bool{dead: false, starting: true, nolock: true, running: true} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s present=%v, want %v", filepath.Base(d), err == nil, want)
		}
	}
}
