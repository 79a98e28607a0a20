package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"testing"
)

func TestResolvConf(t *testing.T) {
	if got, want := ResolvConf(Options{}), "nameserver 10.0.2.3\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := ResolvConf(Options{EnableIPv6: true}); !strings.Contains(got, "nameserver fd00::3\n") {
		t.Fatalf("got %q, want fd00::3 too", got)
	}
}

func TestHosts(t *testing.T) {
	h := Hosts("box", GuestIP)
	for _, want := range []string{"127.0.0.1\tlocalhost", "::1\tlocalhost", "10.0.2.100\tbox\n"} {
		if !strings.Contains(h, want) {
			t.Errorf("hosts %q lacks %q", h, want)
		}
	}
	if h := Hosts("box", ""); !strings.Contains(h, "127.0.1.1\tbox\n") {
		t.Errorf("hosts %q lacks 127.0.1.1 box", h)
	}
	if h := Hosts("localhost", ""); strings.Count(h, "\n") != 2 {
		t.Errorf("hosts %q repeats localhost", h)
	}
}

func TestRuntimeDir(t *testing.T) {
	x := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", x)
	d, err := RuntimeDir()
	if err != nil {
		t.Fatal(err)
	}
	if d != filepath.Join(x, "dabba") {
		t.Fatalf("runtime dir %s, want below XDG_RUNTIME_DIR %s", d, x)
	}
	fi, err := os.Stat(d)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("runtime dir %s: %v, mode %v", d, err, fi.Mode())
	}
	// A directory others may enter is made private.
	os.Chmod(d, 0o755)
	if _, err := RuntimeDir(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(d); fi.Mode().Perm() != 0o700 {
		t.Fatalf("runtime dir mode %v, want 0700", fi.Mode())
	}
	// A file in its place is refused (in the fallback too).
	t.Setenv("TMPDIR", x)
	os.Remove(d)
	os.WriteFile(d, nil, 0o600)
	os.WriteFile(filepath.Join(x, "dabba-"+strconv.Itoa(os.Getuid())), nil, 0o600)
	if _, err := RuntimeDir(); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("error %v, want a file refused", err)
	}
}

func TestRuntimeDirFallback(t *testing.T) {
	// Without XDG_RUNTIME_DIR, the directory is below TMPDIR.
	tmp := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", tmp)
	d, err := RuntimeDir()
	if err != nil {
		t.Fatal(err)
	}
	uid := strconv.Itoa(os.Getuid())
	if d != filepath.Join(tmp, "dabba-"+uid) {
		t.Fatalf("runtime dir %s, want %s", d, filepath.Join(tmp, "dabba-"+uid))
	}
	if os.Getuid() == 0 {
		// Owned by someone else: refused.
		os.Chown(d, 12345, 12345)
		if _, err := RuntimeDir(); err == nil || !strings.Contains(err.Error(), "owned by uid 12345") {
			t.Fatalf("error %v, want foreign owner refused", err)
		}
	}
}

func TestStartErrors(t *testing.T) {
	ctx := t.Context()
	_, err := Start(ctx, 1, Options{Binary: "no-such-slirp4netns"})
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "install the slirp4netns package") ||
		!strings.Contains(err.Error(), "--network none") {
		t.Fatalf("error %v, want ErrNotInstalled with the hints", err)
	}
	if _, err := Start(ctx, 0, Options{}); err == nil || !strings.Contains(err.Error(), "bad container pid 0") {
		t.Fatalf("error %v, want bad pid", err)
	}
	if _, err := Start(ctx, 1, Options{MTU: 10}); err == nil || !strings.Contains(err.Error(), "mtu 10 out of range") {
		t.Fatalf("error %v, want mtu refused", err)
	}
	udpLoop := PortForward{Proto: "udp", HostIP: "127.0.0.1", HostPort: 5353, ContainerPort: 53}
	if _, err := Start(ctx, 1, Options{PortForwards: []PortForward{udpLoop}}); err == nil || !strings.Contains(err.Error(), "allow_host_loopback=true") {
		t.Fatalf("error %v, want a UDP forward on loopback refused without allow_host_loopback", err)
	}
	if err := Check(Options{Binary: "no-such-slirp4netns"}); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("Check: %v, want ErrNotInstalled", err)
	}
	// A program that is not slirp4netns fails the probe; nothing else runs.
	if _, err := probe("/bin/true"); err == nil || !strings.Contains(err.Error(), "lacks --netns-type") {
		t.Fatalf("probe /bin/true: %v", err)
	}
}

func TestSocketPathTooLong(t *testing.T) {
	if _, err := socketPath("/"+strings.Repeat("d", 100), 42); err == nil || !strings.Contains(err.Error(), "XDG_RUNTIME_DIR") {
		t.Fatalf("error %v, want a long path refused", err)
	}
}

func listenTCP(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestSweepSockets(t *testing.T) {
	dir := t.TempDir()
	// A reaped process's pid is gone (until reused, which would only keep
	// the file).
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(dir, fmt.Sprintf("slirp4netns-%d-00000000.sock", c.Process.Pid))
	live := filepath.Join(dir, fmt.Sprintf("slirp4netns-%d-00000000.sock", os.Getpid()))
	other := filepath.Join(dir, "slirp4netns-notapid-0.sock")
	for _, p := range []string{dead, live, other} {
		os.WriteFile(p, nil, 0o600)
	}
	sweepSockets(dir)
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("socket of a gone container kept: %v", err)
	}
	for _, p := range []string{live, other} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}
