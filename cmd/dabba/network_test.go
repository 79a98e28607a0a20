package main

// Integration tests of `dabba run` networking: the real binary as the test
// user, a busybox image (plus a small static helper for UDP and for
// throughput, as busybox's nc has no -u), and real slirp4netns. Traffic goes
// only to the host's loopback and to network namespaces the tests make.

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/dabba/dabba/internal/imagebuild"
	"github.com/dabba/dabba/internal/testenv"
	"github.com/dabba/dabba/netns"
)

// netEnv is the ground of the network tests: runEnv's, plus an image of
// busybox with the nettest helper.
type netEnv struct {
	*runEnv
	tools string
}

// newNetEnv is newRunEnv for tests and benchmarks, also requiring
// slirp4netns and a usable /dev/net/tun.
func newNetEnv(t testing.TB) *netEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping: runs the real binary as the test user (-short)")
	}
	u := testenv.TestUser(t)
	testenv.RequireCommand(t, "newuidmap", "uidmap")
	testenv.RequireCommand(t, "slirp4netns", "slirp4netns")
	if err := netns.CheckTun(); err != nil {
		testenv.Missing(t, err.Error(), "run `make deps` as root")
	}
	dabba, _ := testenv.Binaries(t)
	host := testenv.Registry(t)
	e := &runEnv{u: u, dabba: dabba}
	e.home = u.Dir(t)
	e.root = filepath.Join(e.home, "store")
	e.bbox = testenv.Push(t, testenv.BusyboxImage(t), host, "test/busybox:1")
	n := &netEnv{runEnv: e}
	n.pull(t, e.bbox)
	return n
}

// pull pulls ref into the store, so that no run prints a pull's progress.
func (e *netEnv) pull(t testing.TB, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if o := e.u.RunAs(ctx, e.home, nil, "", e.dabba, "--root", e.root, "pull", ref); o.Code != 0 {
		t.Fatalf("dabba pull %s: status %d, stderr %q", ref, o.Code, o.Stderr)
	}
}

// toolsImage pushes, once, busybox plus /usr/local/bin/dabba-nettest.
func (e *netEnv) toolsImage(t testing.TB) string {
	t.Helper()
	if e.tools == "" {
		e.tools = pushToolsImage(t, e.bbox)
		e.pull(t, e.tools)
	}
	return e.tools
}

// dabbaArgs is `--root ROOT run ARGS...` verbatim: without --network in
// args, the default network (slirp4netns).
func (e *netEnv) dabbaArgs(args ...string) []string {
	return append([]string{"--root", e.root, "run"}, args...)
}

// runNet runs dabba run ARGS as the test user and returns what it printed.
func (e *netEnv) runNet(t testing.TB, env []string, args ...string) testenv.Output {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return e.u.RunAs(ctx, e.home, env, "", e.dabba, e.dabbaArgs(args...)...)
}

// okNet is runNet requiring status 0; it returns stdout.
func (e *netEnv) okNet(t testing.TB, args ...string) string {
	t.Helper()
	o := e.runNet(t, nil, args...)
	if o.Code != 0 {
		t.Fatalf("dabba run %q: status %d\nstdout: %s\nstderr: %s", args, o.Code, o.Stdout, o.Stderr)
	}
	return o.Stdout
}

// running is a dabba run in the background.
type running struct {
	cmd         *exec.Cmd
	stdin       io.WriteCloser // the command's with -i
	out, errOut testenv.SyncBuffer
	done        chan struct{}
}

// start starts dabba run ARGS as the test user; setup, when not nil, starts
// the command itself (e.g. in another mount namespace). The test's cleanup
// stops it (SIGTERM, then SIGKILL) if it still runs.
func (e *netEnv) start(t testing.TB, setup func(*exec.Cmd) error, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	r := &running{done: make(chan struct{})}
	r.cmd = e.u.Command(ctx, e.home, e.dabba, e.dabbaArgs(args...)...)
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.errOut
	var err error
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		err = setup(r.cmd)
	} else {
		err = r.cmd.Start()
	}
	if err != nil {
		cancel()
		t.Fatalf("starting dabba run %q: %v", args, err)
	}
	go func() {
		r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		r.stop()
		cancel()
		<-r.done
	})
	return r
}

// stop sends SIGTERM to dabba (which forwards it to the container) and
// waits up to 20s for it to end, then kills it; it returns dabba's status.
func (r *running) stop() int {
	select {
	case <-r.done:
	default:
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			r.cmd.Process.Kill()
			<-r.done
		}
	}
	return r.cmd.ProcessState.ExitCode()
}

// wait waits up to a minute for dabba to end by itself.
func (r *running) wait(t testing.TB) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(time.Minute):
		t.Fatalf("dabba still running after a minute; stdout %q, stderr %q", r.out.String(), r.errOut.String())
	}
	return r.cmd.ProcessState.ExitCode()
}

// slirpOf returns the pid of the slirp4netns that dabba (pid) started,
// waiting up to 30s for it to appear.
func slirpOf(t testing.TB, pid int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if pids := slirpChildren(pid); len(pids) == 1 {
			return pids[0]
		} else if len(pids) > 1 {
			t.Fatalf("dabba (pid %d) has %d slirp4netns children: %v", pid, len(pids), pids)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slirp4netns child of dabba (pid %d)", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slirpChildren lists the live slirp4netns processes whose parent is ppid.
func slirpChildren(ppid int) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		comm, state, parent, ok := procStat(pid)
		if ok && comm == "slirp4netns" && parent == ppid && state != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat reads the command name, state and parent of pid.
func procStat(pid int) (comm, state string, ppid int, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", 0, false
	}
	// "pid (comm) state ppid ...": comm ends at the last ')'.
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return "", "", 0, false
	}
	f := strings.Fields(s[j+1:])
	if len(f) < 2 {
		return "", "", 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return s[i+1 : j], f[0], ppid, err == nil
}

// waitGone waits up to 20s for pid to end (or be a zombie).
func waitGone(t testing.TB, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, state, _, ok := procStat(pid); !ok || state == "Z" {
			return
		}
		if time.Now().After(deadline) {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Fatalf("%s (pid %d) still running: %q", what, pid, cmdline)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort returns a port of proto ("tcp4" or "udp4") free on 127.0.0.1 a
// moment ago.
func freePort(t testing.TB, proto string) int {
	t.Helper()
	if proto == "udp4" {
		c, err := net.ListenPacket(proto, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen(proto, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// serveLoopback serves body over HTTP on the host's 127.0.0.1 until the test
// ends and returns the port.
func serveLoopback(t testing.TB, body string) int {
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

// getRetry GETs url until it answers (a server in a container may not be
// listening yet), for up to 30s, and returns the body.
func getRetry(t testing.TB, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				return string(body)
			}
			err = fmt.Errorf("status %s, %v", resp.Status, rerr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hostInterfaces is the set of the names of the host's interfaces.
func hostInterfaces(t testing.TB) map[string]bool {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, i := range ifs {
		m[i.Name] = true
	}
	return m
}

// udpPing sends "ping" on c until an answer comes (a datagram may be lost,
// or the server not be listening yet), for up to 20s, and returns it.
func udpPing(c net.Conn) string {
	for range 10 {
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 100)
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n])
		}
	}
	return ""
}

// interfaces parses `ip -o link` output into name -> line.
func interfaces(out string) map[string]string {
	m := map[string]string{}
	for _, l := range lines(out) {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		m[name] = l
	}
	return m
}

func TestNetwork(t *testing.T) {
	e := newNetEnv(t)

	t.Run("HostLoopback", func(t *testing.T) {
		// The host's 127.0.0.1 is 10.0.2.2 inside, with allow_host_loopback
		// only. (Debian's static busybox 1.35 crashes on wget -T: timeout
		// bounds the wgets instead.)
		port := serveLoopback(t, "hello from the host")
		url := fmt.Sprintf("http://%s:%d/", netns.GatewayIP, port)
		out := e.okNet(t, "--network", "slirp4netns:allow_host_loopback=true", e.bbox, "timeout", "20", "wget", "-q", "-O", "-", url)
		if out != "hello from the host" {
			t.Fatalf("GET %s with allow_host_loopback=true: %q", url, out)
		}
		// The default network refuses it.
		o := e.runNet(t, nil, e.bbox, "timeout", "10", "wget", "-q", "-O", "-", url)
		t.Logf("without allow_host_loopback: status %d, stdout %q, stderr %q", o.Code, o.Stdout, o.Stderr)
		if o.Code == 0 || strings.Contains(o.Stdout, "hello") {
			t.Fatalf("the host's 127.0.0.1 was reachable without allow_host_loopback")
		}
	})

	t.Run("Outbound", func(t *testing.T) {
		// Another host: a server in a network namespace, by its address.
		outside := testenv.NewNetns(t)
		base := outside.ServeHTTP(t, 80, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from outside to %s", r.RemoteAddr)
		}))
		out := e.okNet(t, e.bbox, "timeout", "20", "wget", "-q", "-O", "-", base+"/")
		// slirp4netns connects from the host: the server sees the host's
		// side of the veth.
		if want := "hello from outside to " + outside.HostIP.String() + ":"; !strings.HasPrefix(out, want) {
			t.Fatalf("GET %s/: %q, want %q...", base, out, want)
		}
	})

	t.Run("DNS", func(t *testing.T) {
		// 10.0.2.3 forwards to the nameservers of the /etc/resolv.conf
		// slirp4netns sees: dabba runs in a mount namespace of its own
		// where that names a DNS server in a test netns.
		outside := testenv.NewNetns(t)
		outside.ServeHTTP(t, 80, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello %s", r.Host)
		}))
		outside.ServeDNS(t, map[string]netip.Addr{"outbound.dabba.test": outside.PeerIP})
		resolv := filepath.Join(e.u.Dir(t), "resolv.conf")
		if err := os.WriteFile(resolv, []byte("nameserver "+outside.PeerIP.String()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		inMountNS := func(cmd *exec.Cmd) error {
			return testenv.StartInMountNS(cmd, map[string]string{resolv: "/etc/resolv.conf"})
		}
		r := e.start(t, inMountNS, e.bbox, "sh", "-c", `
			cat /etc/resolv.conf
			nslookup outbound.dabba.test `+netns.DNSIP+` 2>&1
			timeout 20 wget -q -O - http://outbound.dabba.test/; echo
			nslookup unknown.dabba.test 2>&1 || echo unknown-failed`)
		code := r.wait(t)
		out := r.out.String()
		t.Logf("status %d, stdout:\n%s\nstderr: %s", code, out, r.errOut.String())
		want := []string{
			"nameserver " + netns.DNSIP + "\n",
			"Address: " + outside.PeerIP.String(),
			"hello outbound.dabba.test\n",
			"unknown-failed",
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q", w)
			}
		}
		if l := lines(out); len(l) == 0 || l[0] != "nameserver "+netns.DNSIP {
			t.Errorf("/etc/resolv.conf is not just nameserver %s", netns.DNSIP)
		}
	})

	t.Run("Files", func(t *testing.T) {
		// /etc/hosts names the container and localhost: an httpd inside is
		// reached by both names.
		out := e.okNet(t, "--hostname", "box", e.bbox, "sh", "-c", `
			cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---
			mkdir /www && echo hi > /www/index.html && httpd -p 8080 -h /www
			for i in $(seq 100); do wget -q -O /dev/null http://localhost:8080/ 2>/dev/null && break; sleep 0.1; done
			wget -q -O - http://box:8080/; wget -q -O - http://localhost:8080/`)
		parts := strings.Split(out, "---\n")
		if len(parts) != 3 {
			t.Fatalf("output %q", out)
		}
		hosts := map[string]string{}
		for _, l := range lines(parts[0]) {
			f := strings.Fields(l)
			for _, name := range f[1:] {
				if _, ok := hosts[name]; !ok {
					hosts[name] = f[0]
				}
			}
		}
		if hosts["box"] != netns.GuestIP || hosts["localhost"] != "127.0.0.1" {
			t.Errorf("/etc/hosts %q: want box on %s and localhost on 127.0.0.1", parts[0], netns.GuestIP)
		}
		if parts[1] != "nameserver "+netns.DNSIP+"\n" {
			t.Errorf("/etc/resolv.conf %q", parts[1])
		}
		if parts[2] != "hi\nhi\n" {
			t.Errorf("GET http://box:8080/ and http://localhost:8080/: %q", parts[2])
		}
	})

	t.Run("Interfaces", func(t *testing.T) {
		// The default: lo and tap0 up, MTU 65520; mtu=1500 changes it.
		for _, tc := range []struct {
			network string
			mtu     string
		}{{"", "65520"}, {"slirp4netns:mtu=1500", "1500"}} {
			args := []string{e.bbox, "ip", "-o", "link"}
			if tc.network != "" {
				args = append([]string{"--network", tc.network}, args...)
			}
			ifs := interfaces(e.okNet(t, args...))
			if len(ifs) != 2 || !strings.Contains(ifs["lo"], ",UP") ||
				!strings.Contains(ifs["tap0"], ",UP") || !strings.Contains(ifs["tap0"], "mtu "+tc.mtu+" ") {
				t.Errorf("--network %q: interfaces %q, want lo and tap0 (mtu %s) up", tc.network, ifs, tc.mtu)
			}
		}
		// none: lo alone, up.
		ifs := interfaces(e.okNet(t, "--network", "none", e.bbox, "ip", "-o", "link"))
		if len(ifs) != 1 || !strings.Contains(ifs["lo"], ",UP") {
			t.Errorf("--network none: interfaces %q, want lo alone, up", ifs)
		}
		// host: the host's own. Other tests may add or remove veths
		// meanwhile: every interface there before and after must be seen,
		// and nothing that was never there.
		before := hostInterfaces(t)
		ifs = interfaces(e.okNet(t, "--network", "host", e.bbox, "ip", "-o", "link"))
		after := hostInterfaces(t)
		for n := range ifs {
			if !before[n] && !after[n] {
				t.Errorf("--network host: interface %s is not the host's (%v)", n, after)
			}
		}
		for n := range before {
			if _, ok := ifs[n]; !ok && after[n] {
				t.Errorf("--network host: the host's interface %s is missing (saw %v)", n, ifs)
			}
		}
	})

	t.Run("PublishTCP", func(t *testing.T) {
		// busybox httpd inside, reached from the host's 127.0.0.1.
		port := freePort(t, "tcp4")
		pub := fmt.Sprintf("127.0.0.1:%d:80", port)
		r := e.start(t, nil, "--init", "-p", pub, e.bbox, "sh", "-c",
			"mkdir /www && echo hello from httpd > /www/index.html && exec httpd -f -p 80 -h /www")
		slirp := slirpOf(t, r.cmd.Process.Pid)
		if body := getRetry(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); body != "hello from httpd\n" {
			t.Fatalf("GET through -p %s: %q", pub, body)
		}

		// A second container with the same host port fails before its
		// command runs, naming the port.
		for _, p := range []string{pub, fmt.Sprintf("%d:80", port)} {
			o := e.runNet(t, nil, "-p", p, e.bbox, "echo", "RAN")
			t.Logf("second container with -p %s: status %d, stderr %q", p, o.Code, o.Stderr)
			if o.Code != exitDabba || strings.Contains(o.Stdout, "RAN") ||
				!strings.Contains(o.Stderr, fmt.Sprintf(":%d/tcp is already taken", port)) {
				t.Errorf("second -p %s: status %d, stdout %q, stderr %q; want %d and the port named", p, o.Code, o.Stdout, o.Stderr, exitDabba)
			}
		}

		// The first still serves.
		if body := getRetry(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); body != "hello from httpd\n" {
			t.Fatalf("GET through -p %s after the second container: %q", pub, body)
		}

		// The container ends (SIGTERM forwarded by dabba): slirp4netns
		// goes with it, and the host port is free again.
		if code := r.stop(); code != 128+int(syscall.SIGTERM) {
			t.Errorf("dabba after SIGTERM: status %d, stderr %q", code, r.errOut.String())
		}
		waitGone(t, slirp, "slirp4netns")
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("host port %d after the container ended: %v", port, err)
		}
		ln.Close()
	})

	t.Run("PublishUDP", func(t *testing.T) {
		tools := e.toolsImage(t)
		// libslirp answers UDP clients on the host's loopback only with
		// allow_host_loopback (see netns): without it, dabba refuses.
		port := freePort(t, "udp4")
		pub := fmt.Sprintf("127.0.0.1:%d:5353/udp", port)
		o := e.runNet(t, nil, "-p", pub, tools, "echo", "RAN")
		if o.Code != exitDabba || strings.Contains(o.Stdout, "RAN") ||
			!strings.Contains(o.Stderr, pub) || !strings.Contains(o.Stderr, "allow_host_loopback=true") {
			t.Errorf("-p %s without allow_host_loopback: status %d, stdout %q, stderr %q", pub, o.Code, o.Stdout, o.Stderr)
		}

		r := e.start(t, nil, "--init", "--network", "slirp4netns:allow_host_loopback=true", "-p", pub, tools, "dabba-nettest", "udpecho", "5353")
		r.out.WaitFor(t, 0, "listening")
		c, err := net.Dial("udp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := udpPing(c); got != "echo ping" {
			t.Fatalf("UDP through -p %s: got %q, want %q", pub, got, "echo ping")
		}
		// Clients on another address are answered without
		// allow_host_loopback: one in a test netns, through the host's
		// side of its veth.
		outside := testenv.NewNetns(t)
		outPort := freePort(t, "udp4")
		outPub := fmt.Sprintf("%s:%d:5353/udp", outside.HostIP, outPort)
		r2 := e.start(t, nil, "--init", "-p", outPub, tools, "dabba-nettest", "udpecho", "5353")
		r2.out.WaitFor(t, 0, "listening")
		var c2 net.Conn
		if err := outside.Do(func() (err error) {
			c2, err = net.Dial("udp4", netip.AddrPortFrom(outside.HostIP, uint16(outPort)).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		if got := udpPing(c2); got != "echo ping" {
			t.Fatalf("UDP through -p %s from %s: got %q, want %q", outPub, outside.PeerIP, got, "echo ping")
		}

		// The same UDP port again: refused before the command runs.
		o = e.runNet(t, nil, "--network", "slirp4netns:allow_host_loopback=true", "-p", pub, tools, "echo", "RAN")
		if o.Code != exitDabba || strings.Contains(o.Stdout, "RAN") ||
			!strings.Contains(o.Stderr, fmt.Sprintf("127.0.0.1:%d/udp is already taken", port)) {
			t.Errorf("second -p %s: status %d, stdout %q, stderr %q", pub, o.Code, o.Stdout, o.Stderr)
		}
	})

	t.Run("SlirpEnds", func(t *testing.T) {
		// The container exits by itself.
		r := e.start(t, nil, "-i", e.bbox, "sh", "-c", "echo ready; read x; exit 3")
		r.out.WaitFor(t, 0, "ready")
		slirp := slirpOf(t, r.cmd.Process.Pid)
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", slirp))
		t.Logf("slirp4netns: %s", bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		r.stdin.Close()
		if code := r.wait(t); code != 3 {
			t.Errorf("dabba: status %d, stderr %q", code, r.errOut.String())
		}
		waitGone(t, slirp, "slirp4netns")

		// SIGKILL of dabba: nothing of dabba's runs, yet slirp4netns ends.
		r = e.start(t, nil, e.bbox, "sh", "-c", "echo ready; exec sleep 1000")
		r.out.WaitFor(t, 0, "ready")
		slirp = slirpOf(t, r.cmd.Process.Pid)
		// slirp4netns's last but one argument is the container's pid.
		cmdline, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", slirp))
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		child, err := strconv.Atoi(args[len(args)-2])
		if err != nil {
			t.Fatalf("no container pid in the arguments of slirp4netns: %q", args)
		}
		r.cmd.Process.Kill() // dabba alone, not its process group
		<-r.done
		waitGone(t, slirp, "slirp4netns")
		waitGone(t, child, "the container")
		// What a killed dabba leaves is for `dabba gc`.
		left, _ := filepath.Glob(filepath.Join(e.root, "containers", "*"))
		for _, d := range left {
			testenv.RemoveAll(t, d)
			testenv.RemoveAll(t, filepath.Join(os.TempDir(), fmt.Sprintf("dabba-%d", e.u.UID), "containers", filepath.Base(d)))
		}
	})

	t.Run("MissingSlirp", func(t *testing.T) {
		// A PATH with dabba's other helpers but no slirp4netns.
		dir := e.u.Dir(t)
		for _, h := range []string{"newuidmap", "newgidmap"} {
			p, err := exec.LookPath(h)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(p, filepath.Join(dir, h)); err != nil {
				t.Fatal(err)
			}
		}
		env := []string{"PATH=" + dir}
		for _, args := range [][]string{
			{e.bbox, "echo", "RAN"},
			{"--network", "slirp4netns:mtu=1500", "-p", "8080:80", e.bbox, "echo", "RAN"},
		} {
			o := e.runNet(t, env, args...)
			t.Logf("dabba run %q without slirp4netns: status %d, stderr %q", args, o.Code, o.Stderr)
			if o.Code != exitDabba || o.Stdout != "" || len(lines(o.Stderr)) != 1 ||
				!strings.Contains(o.Stderr, "slirp4netns not found") ||
				!strings.Contains(o.Stderr, "install the slirp4netns package") ||
				!strings.Contains(o.Stderr, "--network none") {
				t.Errorf("dabba run %q without slirp4netns: status %d, stdout %q, stderr %q", args, o.Code, o.Stdout, o.Stderr)
			}
		}
		// --network none needs none of it.
		o := e.runNet(t, env, "--network", "none", e.bbox, "echo", "RAN")
		if o.Code != 0 || o.Stdout != "RAN\n" || o.Stderr != "" {
			t.Errorf("--network none without slirp4netns: status %d, stdout %q, stderr %q", o.Code, o.Stdout, o.Stderr)
		}
	})

	t.Run("TunNotUsable", func(t *testing.T) {
		// /dev/net/tun replaced, in dabba's own mount namespace, by a file
		// the user may not open.
		fake := filepath.Join(t.TempDir(), "tun")
		if err := os.WriteFile(fake, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		inMountNS := func(cmd *exec.Cmd) error {
			return testenv.StartInMountNS(cmd, map[string]string{fake: "/dev/net/tun"})
		}
		r := e.start(t, inMountNS, e.bbox, "echo", "RAN")
		code := r.wait(t)
		stderr := r.errOut.String()
		t.Logf("status %d, stderr %q", code, stderr)
		if code != exitDabba || r.out.String() != "" || len(lines(stderr)) != 1 {
			t.Errorf("status %d, stdout %q, stderr %q; want %d and one line", code, r.out.String(), stderr, exitDabba)
		}
		for _, want := range []string{"opening /dev/net/tun", "chmod 0666 /dev/net/tun", "--network none"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("stderr lacks %q", want)
			}
		}
		r = e.start(t, inMountNS, "--network", "none", e.bbox, "echo", "RAN")
		if code := r.wait(t); code != 0 || r.out.String() != "RAN\n" {
			t.Errorf("--network none without a usable /dev/net/tun: status %d, stdout %q, stderr %q", code, r.out.String(), r.errOut.String())
		}
	})
}

// nettestSource is dabba-nettest, a static helper for the container:
//
//	dabba-nettest udpecho PORT       answer each datagram with "echo " + it
//	dabba-nettest send ADDR BYTES    send BYTES zeros over TCP to ADDR
const nettestSource = `package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: dabba-nettest udpecho PORT | send ADDR BYTES")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "udpecho":
		pc, err := net.ListenPacket("udp4", ":"+os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("listening")
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
		}
	case "send":
		n, err := strconv.ParseInt(os.Args[3], 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		c, err := net.Dial("tcp4", os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		buf := make([]byte, 256<<10)
		for left := n; left > 0; {
			k := min(left, int64(len(buf)))
			if _, err := c.Write(buf[:k]); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			left -= k
		}
		// The network ends with the container: wait until the receiver
		// has it all and closes.
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		fmt.Println("sent", n)
	}
}
`

var (
	nettestOnce sync.Once
	nettestBin  []byte
	nettestErr  error
)

// nettestBinary builds dabba-nettest (static, CGO_ENABLED=0) once.
func nettestBinary(t testing.TB) []byte {
	t.Helper()
	testenv.RequireCommand(t, "go", "golang-go")
	nettestOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dabba-nettest-")
		if err != nil {
			nettestErr = err
			return
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(nettestSource), 0o644); err != nil {
			nettestErr = err
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "dabba-nettest", "main.go")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			nettestErr = fmt.Errorf("go build dabba-nettest: %v\n%s", err, out)
			return
		}
		nettestBin, nettestErr = os.ReadFile(filepath.Join(dir, "dabba-nettest"))
	})
	if nettestErr != nil {
		t.Fatal(nettestErr)
	}
	return nettestBin
}

// pushToolsImage pushes busybox with dabba-nettest in /usr/local/bin next to
// bbox (host/test/busybox:1) and returns its reference.
func pushToolsImage(t testing.TB, bbox string) string {
	t.Helper()
	bin := nettestBinary(t)
	bb, err := imagebuild.BusyboxPath()
	if err != nil {
		testenv.Missing(t, err.Error(), "install busybox-static")
	}
	base, err := imagebuild.BusyboxTar(bb)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"usr/", "usr/local/", "usr/local/bin/"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "usr/local/bin/dabba-nettest", Mode: 0o755, Size: int64(len(bin))})
	tw.Write(bin)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var ls []v1.Layer
	for _, b := range [][]byte{base, buf.Bytes()} {
		l, err := imagebuild.LayerFromTar(b)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	img, err := imagebuild.FromLayers(imagebuild.DefaultConfig(), ls...)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := strings.Cut(bbox, "/")
	return testenv.Push(t, img, host, "test/nettest:1")
}

// BenchmarkNetworkStart measures the start latency slirp4netns adds: warm
// `dabba run IMG /bin/true` with the default network and with --network
// none, alternated, reporting the medians of 10 and their difference.
// Run it with -benchtime=1x.
func BenchmarkNetworkStart(b *testing.B) {
	e := newNetEnv(b)
	ctx := context.Background()
	run := func(args ...string) time.Duration {
		b.Helper()
		start := time.Now()
		if out, err := e.u.Command(ctx, e.home, e.dabba, e.dabbaArgs(args...)...).CombinedOutput(); err != nil {
			b.Fatalf("dabba run %q: %v\n%s", args, err, out)
		}
		return time.Since(start)
	}
	none := []string{"--network", "none", e.bbox, "/bin/true"}
	slirp := []string{e.bbox, "/bin/true"}
	run(none...) // pulls and warms up
	run(slirp...)
	median := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	for range b.N {
		var dn, ds []time.Duration
		for range 10 {
			dn = append(dn, run(none...))
			ds = append(ds, run(slirp...))
		}
		mn, ms := median(dn), median(ds)
		b.Logf("dabba run IMG /bin/true, median of 10: --network none %v, slirp4netns %v, added %v", mn, ms, ms-mn)
		b.ReportMetric(float64(mn.Microseconds())/1000, "none-ms")
		b.ReportMetric(float64(ms.Microseconds())/1000, "slirp4netns-ms")
		b.ReportMetric(float64((ms-mn).Microseconds())/1000, "added-ms")
	}
}

// BenchmarkNetworkThroughput measures TCP throughput from the container to
// the host through slirp4netns with MTU 1500 and 65520: dabba-nettest
// inside sends zeros to a Go listener on the host's 127.0.0.1 (10.0.2.2
// with allow_host_loopback), which times the bytes from the first to the
// last. Run it with -benchtime=1x.
func BenchmarkNetworkThroughput(b *testing.B) {
	e := newNetEnv(b)
	tools := e.toolsImage(b)
	const size = 256 << 20
	for range b.N {
		for _, mtu := range []int{1500, netns.DefaultMTU} {
			mbps := sendThrough(b, e, tools, mtu, size)
			b.Logf("container -> host, MTU %d: %d MiB at %.0f MB/s (%.2f Gbit/s)", mtu, size>>20, mbps, mbps*8/1000)
			b.ReportMetric(mbps, fmt.Sprintf("MB/s-mtu%d", mtu))
		}
	}
}

// sendThrough runs one container sending size bytes to a listener on the
// host and returns the rate the listener saw, in MB/s (10^6 bytes).
func sendThrough(b *testing.B, e *netEnv, tools string, mtu, size int) float64 {
	b.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n   int64
		d   time.Duration
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		buf := make([]byte, 1<<20)
		var n int64
		var first time.Time
		for {
			k, err := c.Read(buf)
			if k > 0 && n == 0 {
				first = time.Now()
			}
			n += int64(k)
			if err == io.EOF {
				res <- result{n: n, d: time.Since(first)}
				return
			}
			if err != nil {
				res <- result{n: n, err: err}
				return
			}
		}
	}()
	addr := fmt.Sprintf("%s:%d", netns.GatewayIP, ln.Addr().(*net.TCPAddr).Port)
	network := fmt.Sprintf("slirp4netns:allow_host_loopback=true,mtu=%d", mtu)
	o := e.runNet(b, nil, "--network", network, tools, "dabba-nettest", "send", addr, strconv.Itoa(size))
	if o.Code != 0 {
		b.Fatalf("sending through --network %s: status %d, stdout %q, stderr %q", network, o.Code, o.Stdout, o.Stderr)
	}
	r := <-res
	if r.err != nil || r.n != int64(size) {
		b.Fatalf("the listener got %d of %d bytes: %v", r.n, size, r.err)
	}
	return float64(r.n) / r.d.Seconds() / 1e6
}
