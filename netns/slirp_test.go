package netns

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/internal/testenv"
)

// sandbox's NetworkHook, as sandbox/config.go declares it.
var _ interface {
	Setup(ctx context.Context, childPID int) (teardown func() error, err error)
} = (*Hook)(nil)

func TestSetupLoopback(t *testing.T) {
	testenv.RequireRoot(t)
	errc := make(chan error, 1)
	go func() {
		// A thread of its own in a new netns; it ends locked, so the
		// runtime discards it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		lo, err := net.InterfaceByName("lo")
		if err != nil || lo.Flags&net.FlagUp != 0 {
			errc <- fmt.Errorf("lo in a new netns: %v, %v (want down)", lo, err)
			return
		}
		for range 2 { // twice: it is idempotent
			if err := SetupLoopback(); err != nil {
				errc <- err
				return
			}
		}
		if lo, err = net.InterfaceByName("lo"); err != nil || lo.Flags&net.FlagUp == 0 {
			errc <- fmt.Errorf("lo after SetupLoopback: %v, %v (want up)", lo, err)
			return
		}
		if err := setLinkUp("nosuchlink0"); err == nil || !strings.Contains(err.Error(), "nosuchlink0") {
			errc <- fmt.Errorf("setLinkUp(nosuchlink0): %v, want an error naming it", err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// serveHost serves on the host's 127.0.0.1 (the test's own namespace).
func serveHost(t *testing.T, body string) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func TestHostLoopback(t *testing.T) {
	u := requireSlirp(t)
	port := serveHost(t, "hello from the host")
	url := fmt.Sprintf("http://%s:%d/", GatewayIP, port)
	allowed := startParent(t, u, parentConfig{
		Network: "slirp4netns:allow_host_loopback=true,enable_ipv6=true",
		Actions: [][]string{{"links"}, {"get", url}},
	}, startOpts{})
	refused := startParent(t, u, parentConfig{
		Network: "slirp4netns",
		Actions: [][]string{{"get", url}},
	}, startOpts{})

	out, err := allowed.wait()
	t.Logf("allow_host_loopback=true:\n%s", out)
	if err != nil {
		t.Fatalf("parent: %v", err)
	}
	for _, want := range []string{"get: 200 hello from the host", "lo,mtu=65536,up", "tap0,mtu=65520,up"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	out, _ = refused.wait()
	t.Logf("default (--disable-host-loopback):\n%s", out)
	if !strings.Contains(out, "get: error:") || strings.Contains(out, "hello from the host") {
		t.Errorf("the host's 127.0.0.1 was reachable without allow_host_loopback")
	}
}

func TestOutboundAndDNS(t *testing.T) {
	u := requireSlirp(t)
	outside := testenv.NewNetns(t)
	base := outside.ServeHTTP(t, 80, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from outside, host %s", r.Host)
	}))
	outside.ServeDNS(t, map[string]netip.Addr{"outbound.dabba.test": outside.PeerIP})
	// slirp4netns forwards 10.0.2.3 to the nameservers of the
	// /etc/resolv.conf it sees: give the parent (and so slirp4netns) a
	// mount namespace where that is the DNS server of the test netns.
	dir := u.Dir(t)
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+outside.PeerIP.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startParent(t, u, parentConfig{
		Network: "slirp4netns:mtu=1500",
		Actions: [][]string{
			{"links"},
			{"get", base + "/"},
			{"lookup", "outbound.dabba.test"},
			{"get", "http://outbound.dabba.test/"},
			{"lookup", childHostname},
			{"lookup", "localhost"},
			{"lookup", "unknown.dabba.test"},
		},
	}, startOpts{binds: map[string]string{resolv: "/etc/resolv.conf"}})
	out, err := p.wait()
	t.Logf("outbound to %s:\n%s", outside.PeerIP, out)
	if err != nil || !strings.Contains(out, "child-exit exit status 1") {
		t.Errorf("parent: %v, want the child's failed lookup reported", err)
	}
	for _, want := range []string{
		"tap0,mtu=1500,up",
		"get: 200 hello from outside, host " + outside.PeerIP.String(),
		"lookup: " + outside.PeerIP.String() + "\n",
		"get: 200 hello from outside, host outbound.dabba.test",
		"lookup: " + GuestIP + "\n",
		"lookup: error: lookup unknown.dabba.test",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if !strings.Contains(out, "lookup: 127.0.0.1") && !strings.Contains(out, "lookup: ::1") {
		t.Errorf("localhost not resolved from /etc/hosts")
	}
	// The container exited on its own: slirp4netns went with it.
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "slirp-pid ") {
			waitGone(t, pidOf(t, l), "slirp4netns")
		}
	}
}

func TestPortForward(t *testing.T) {
	u := requireSlirp(t)
	// Clients: the test on the host's 127.0.0.1, and another host (a
	// test netns) for UDP under the default --disable-host-loopback.
	outside := testenv.NewNetns(t)
	tcpPort, udpPort, udpLoopPort := freeTCPPort(t), freeUDPPort(t), freeUDPPort(t)
	pubTCP := fmt.Sprintf("127.0.0.1:%d:80", tcpPort)
	pubUDP := fmt.Sprintf("%s:%d:5353/udp", outside.HostIP, udpPort)
	pubUDPLoop := fmt.Sprintf("127.0.0.1:%d:5353/udp", udpLoopPort)
	p := startParent(t, u, parentConfig{
		Publish:   []string{pubTCP, pubUDP},
		Duplicate: true,
		Actions:   [][]string{{"serve", "80", "5353"}},
	}, startOpts{})
	loop := startParent(t, u, parentConfig{
		Network: "slirp4netns:allow_host_loopback=true",
		Publish: []string{pubUDPLoop},
		Actions: [][]string{{"serve", "80", "5353"}},
	}, startOpts{})
	dup := p.waitLine(t, "duplicate: ")
	p.waitLine(t, "listening")
	loop.waitLine(t, "listening")

	// TCP: an HTTP GET from the host.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/", tcpPort))
	if err != nil {
		t.Fatalf("GET through -p %s: %v", pubTCP, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "hello from the container") {
		t.Fatalf("GET through -p %s: %q", pubTCP, body)
	}
	t.Logf("tcp: %s", body)

	// UDP from another host, and from the host's loopback.
	var c net.Conn
	if err := outside.Do(func() (err error) {
		c, err = net.Dial("udp4", netip.AddrPortFrom(outside.HostIP, uint16(udpPort)).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	udpEcho(t, c, pubUDP)
	c, err = net.Dial("udp4", fmt.Sprintf("127.0.0.1:%d", udpLoopPort))
	if err != nil {
		t.Fatal(err)
	}
	udpEcho(t, c, pubUDPLoop+" with allow_host_loopback")

	// The same host ports again: a second container fails before its
	// command starts (the pre-check), with the port named; and
	// slirp4netns's own refusal is reported the same way.
	for _, pub := range []string{pubTCP, pubUDP, pubUDPLoop} {
		second := startParent(t, u, parentConfig{Network: "slirp4netns:allow_host_loopback=true", Publish: []string{pub}, Actions: [][]string{{"links"}}}, startOpts{})
		out, err := second.wait()
		t.Logf("second container with -p %s:\n%s", pub, out)
		pf, _ := ParsePortForward(pub)
		want := fmt.Sprintf("%s:%d/%s is already taken", pf.HostIP, pf.HostPort, pf.Proto)
		if err == nil || !strings.Contains(out, want) || strings.Contains(out, "links:") || strings.Contains(out, "network-ready") {
			t.Errorf("second -p %s: %v, want a failure before the child ran with %q", pub, err, want)
		}
	}
	t.Logf("slirp4netns's own answer: %s", dup)
	if !strings.Contains(dup, fmt.Sprintf("could not listen on host 127.0.0.1:%d/tcp", tcpPort)) || !strings.Contains(dup, "slirp_add_hostfwd failed") {
		t.Errorf("duplicate add_hostfwd: %s", dup)
	}
	for _, p := range []*parentProc{p, loop} {
		if out, err := p.wait(); err != nil {
			t.Fatalf("parent: %v\n%s", err, out)
		}
	}
}

// udpEcho sends "ping" on c and wants "echo ping" back; a datagram may be
// lost, so it asks a few times.
func udpEcho(t *testing.T, c net.Conn, what string) {
	t.Helper()
	defer c.Close()
	var got string
	for range 5 {
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 100)
		if n, err := c.Read(buf); err == nil {
			got = string(buf[:n])
			break
		}
	}
	if got != "echo ping" {
		t.Fatalf("udp through -p %s: got %q, want %q", what, got, "echo ping")
	}
	t.Logf("udp through -p %s: %s", what, got)
}

func TestSlirpEndsWithContainer(t *testing.T) {
	u := requireSlirp(t)
	t.Run("container killed", func(t *testing.T) {
		p := startParent(t, u, parentConfig{Actions: [][]string{{"wait"}}}, startOpts{})
		child := pidOf(t, p.waitLine(t, "child-pid "))
		slirp := pidOf(t, p.waitLine(t, "slirp-pid "))
		sock := strings.TrimPrefix(p.waitLine(t, "api-socket "), "api-socket ")
		p.waitLine(t, "waiting")
		if _, err := os.Stat(sock); err != nil {
			t.Fatalf("API socket: %v", err)
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", slirp))
		args := strings.ReplaceAll(string(cmdline), "\x00", " ")
		t.Logf("slirp4netns: %s", args)
		for _, want := range []string{"--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp",
			"--netns-type=pid", fmt.Sprintf("--userns-path=/proc/%d/ns/user", child), fmt.Sprintf(" %d tap0", child)} {
			if !strings.Contains(args, want) {
				t.Errorf("slirp4netns arguments lack %q", want)
			}
		}
		syscall.Kill(child, syscall.SIGKILL)
		out, err := p.wait()
		t.Logf("parent:\n%s", out)
		if err != nil || !strings.Contains(out, "child-exit signal: killed") {
			t.Fatalf("parent: %v", err)
		}
		waitGone(t, slirp, "slirp4netns")
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Errorf("API socket %s left behind: %v", sock, err)
		}
	})
	t.Run("dabba killed", func(t *testing.T) {
		p := startParent(t, u, parentConfig{Actions: [][]string{{"wait"}}}, startOpts{})
		child := pidOf(t, p.waitLine(t, "child-pid "))
		slirp := pidOf(t, p.waitLine(t, "slirp-pid "))
		sock := strings.TrimPrefix(p.waitLine(t, "api-socket "), "api-socket ")
		p.waitLine(t, "waiting")
		// SIGKILL to the parent alone (not its group): nothing of
		// dabba's runs to tear down.
		syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
		p.wait()
		waitGone(t, slirp, "slirp4netns")
		waitGone(t, child, "container")
		// Nobody could remove the socket; the next Start sweeps it.
		if _, err := os.Stat(sock); err != nil {
			t.Fatalf("API socket %s: %v (want it left behind)", sock, err)
		}
		next := startParent(t, u, parentConfig{Actions: [][]string{{"links"}}}, startOpts{})
		if out, err := next.wait(); err != nil {
			t.Fatalf("next container: %v\n%s", err, out)
		}
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Errorf("stale API socket %s not swept: %v", sock, err)
		}
	})
}

func TestStartFailures(t *testing.T) {
	u := requireSlirp(t)
	t.Run("namespace not ours", func(t *testing.T) {
		// pid 1's namespaces belong to root: slirp4netns cannot join
		// them, dies, and its stderr is in the error.
		p := startParent(t, u, parentConfig{Target: 1, Actions: [][]string{{"links"}}}, startOpts{})
		out, err := p.wait()
		t.Logf("parent:\n%s", out)
		if err == nil || !strings.Contains(out, "slirp4netns exited before the network was ready for container pid 1") ||
			strings.Contains(out, "network-ready") {
			t.Fatalf("parent: %v", err)
		}
		// slirp4netns's own words follow the status.
		if i := strings.Index(out, "(exit status"); i < 0 || !strings.Contains(out[i:], "): ") || len(strings.TrimSpace(out[strings.Index(out[i:], "): ")+i+3:])) == 0 {
			t.Errorf("no slirp4netns output in the error")
		}
	})
	t.Run("namespace of the host", func(t *testing.T) {
		// The parent's own pid: the user may not join the initial
		// network namespace; slirp4netns's child says so and dies.
		p := startParent(t, u, parentConfig{Target: -1, Actions: [][]string{{"links"}}}, startOpts{})
		out, err := p.wait()
		t.Logf("parent:\n%s", out)
		if err == nil || !strings.Contains(out, "slirp4netns exited before the network was ready") ||
			!strings.Contains(out, "setns(CLONE_NEWNET)") || strings.Contains(out, "network-ready") {
			t.Fatalf("parent: %v", err)
		}
	})
	t.Run("tun not usable", func(t *testing.T) {
		// /dev/net/tun replaced, in the parent's mount namespace only,
		// by a file the test user may not open.
		dir := t.TempDir()
		fake := filepath.Join(dir, "tun")
		if err := os.WriteFile(fake, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		p := startParent(t, u, parentConfig{Actions: [][]string{{"links"}}}, startOpts{binds: map[string]string{fake: tunPath}})
		out, err := p.wait()
		t.Logf("parent:\n%s", out)
		for _, want := range []string{"opening /dev/net/tun", "chmod 0666 /dev/net/tun", "--network none"} {
			if err == nil || !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})
	t.Run("network none needs none of it", func(t *testing.T) {
		dir := t.TempDir()
		fake := filepath.Join(dir, "tun")
		os.WriteFile(fake, nil, 0o600)
		p := startParent(t, u, parentConfig{Network: "none", Actions: [][]string{{"links"}}}, startOpts{binds: map[string]string{fake: tunPath}})
		out, err := p.wait()
		t.Logf("parent:\n%s", out)
		if err != nil || !strings.Contains(out, "links: lo,mtu=65536,up|loopback") || strings.Contains(out, "tap0") {
			t.Fatalf("network none: %v, want only lo, up", err)
		}
	})
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
