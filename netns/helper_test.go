package netns

// The integration tests mimic `dabba run`: the test binary re-executes itself
// as the unprivileged test user in the "parent" role, which starts itself
// again as the "child" in new user, network and mount namespaces (one id
// mapped, as os/exec can write it), waiting on a handshake pipe. The parent
// then does what the sandbox parent does through Hook.Setup: Start
// slirp4netns against the child's pid, add the port forwards, release the
// child, wait for it, tear down. The child does what the sandbox child does
// (SetupLoopback, /etc/resolv.conf and /etc/hosts from ResolvConf and
// Hosts) and then runs the test's actions, printing one line each.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dabba/dabba/internal/testenv"
)

const (
	roleEnv   = "DABBA_NETNS_TEST_ROLE"
	configEnv = "DABBA_NETNS_TEST_CONFIG"
	// childHostname is the name the child gives itself in /etc/hosts.
	childHostname = "box"
)

// parentConfig is what a test asks of the parent role.
type parentConfig struct {
	// Network is a --network value.
	Network string
	// Publish are -p values.
	Publish []string
	// Actions are the child's, in order (see childAction).
	Actions [][]string
	// Target, when set, is the pid slirp4netns is started against
	// instead of the child's (to see it fail); -1 is the parent's own.
	Target int
	// Duplicate asks slirp4netns (without the pre-check) to add the
	// first forward again, and prints "duplicate: ERROR".
	Duplicate bool
	// Cycles > 0 measures: start that many children (and slirp4netns),
	// each doing Actions, and print "cycle-ns N" with the mean time
	// from clone to the child's release.
	Cycles int
}

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "parent":
		os.Exit(parentMain())
	case "child":
		os.Exit(childMain())
	}
	code := m.Run()
	if helperDir != "" {
		os.RemoveAll(helperDir)
	}
	os.Exit(code)
}

func parentMain() int {
	var cfg parentConfig
	if err := json.Unmarshal([]byte(os.Getenv(configEnv)), &cfg); err != nil {
		fmt.Println("error: config:", err)
		return 2
	}
	if err := parentRun(cfg); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	return 0
}

func parentRun(cfg parentConfig) error {
	nw, err := ParseNetworkOption(cfg.Network)
	if err != nil {
		return err
	}
	if err := nw.Publish(cfg.Publish); err != nil {
		return err
	}
	cycles := max(cfg.Cycles, 1)
	var total time.Duration
	for range cycles {
		took, err := parentCycle(cfg, nw)
		if err != nil {
			return err
		}
		total += took
	}
	if cfg.Cycles > 0 {
		fmt.Printf("teardown-ns %d\n", teardownTotal.Nanoseconds()/int64(cycles))
		fmt.Printf("cycle-ns %d\n", total.Nanoseconds()/int64(cycles))
	}
	return nil
}

// teardownTotal sums the time of the teardowns of parentCycle.
var teardownTotal time.Duration

// parentCycle runs one child; it returns the time from the clone to the
// child's release, the start latency a container sees.
func parentCycle(cfg parentConfig, nw Network) (time.Duration, error) {
	ctx := context.Background()
	releaseR, releaseW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	actions, _ := json.Marshal(cfg.Actions)
	child := exec.Command("/proc/self/exe")
	child.Env = append(os.Environ(), roleEnv+"=child", configEnv+"="+string(actions))
	child.Stdin, child.Stdout, child.Stderr = os.Stdin, os.Stdout, os.Stderr
	child.ExtraFiles = []*os.File{releaseR}
	flags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWUTS)
	if nw.Mode != ModeHost {
		flags |= unix.CLONE_NEWNET
	}
	child.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  flags,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	t0 := time.Now()
	if err := child.Start(); err != nil {
		return 0, fmt.Errorf("starting the child: %w", err)
	}
	releaseR.Close()
	fmt.Printf("child-pid %d\n", child.Process.Pid)

	teardown := func() error { return nil }
	if nw.Mode == ModeSlirp4netns {
		target := child.Process.Pid
		if cfg.Target > 0 {
			target = cfg.Target
		} else if cfg.Target == -1 {
			target = os.Getpid()
		}
		s, err := Start(ctx, target, nw.Options)
		if err != nil {
			child.Process.Kill()
			child.Wait()
			return 0, err
		}
		if cfg.Cycles == 0 {
			fmt.Printf("slirp-pid %d\n", s.PID())
			fmt.Printf("api-socket %s\n", s.APISocket())
		}
		if cfg.Duplicate && len(nw.Options.PortForwards) > 0 {
			fmt.Printf("duplicate: %v\n", s.addHostFwd(ctx, nw.Options.PortForwards[0]))
		}
		teardown = s.Close
	}
	took := time.Since(t0)
	if cfg.Cycles == 0 {
		fmt.Printf("network-ready\n")
	}
	releaseW.Write([]byte{1})
	releaseW.Close()
	werr := child.Wait()
	t1 := time.Now()
	if err := teardown(); err != nil {
		return 0, fmt.Errorf("teardown: %w", err)
	}
	teardownTotal += time.Since(t1)
	if cfg.Cycles == 0 {
		fmt.Printf("child-exit %v\n", werr)
	}
	return took, nil
}

func childMain() int {
	release := os.NewFile(3, "release")
	var b [1]byte
	if _, err := release.Read(b[:]); err != nil {
		fmt.Println("error: not released:", err)
		return 2
	}
	release.Close()
	// What the sandbox child does in every mode.
	if err := SetupLoopback(); err != nil {
		fmt.Println("error:", err)
		return 2
	}
	if err := childFiles(); err != nil {
		fmt.Println("error:", err)
		return 2
	}
	var actions [][]string
	json.Unmarshal([]byte(os.Getenv(configEnv)), &actions)
	status := 0
	for _, a := range actions {
		line, err := childAction(a)
		if err != nil {
			line = "error: " + err.Error()
			status = 1
		}
		fmt.Printf("%s: %s\n", a[0], line)
	}
	return status
}

// childFiles puts ResolvConf and Hosts over /etc/resolv.conf and /etc/hosts
// in the child's own mount namespace, as the sandbox will in the rootfs.
func childFiles() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", 0, "size=64k"); err != nil {
		return fmt.Errorf("tmpfs on /tmp: %w", err)
	}
	for dst, content := range map[string]string{
		"/etc/resolv.conf": ResolvConf(Options{}),
		"/etc/hosts":       Hosts(childHostname, GuestIP),
	} {
		src := filepath.Join("/tmp", filepath.Base(dst))
		if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
			return err
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mounting %s: %w", dst, err)
		}
	}
	return nil
}

// childAction runs one action of the child and returns its line.
func childAction(a []string) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	switch a[0] {
	case "links":
		ifs, err := net.Interfaces()
		if err != nil {
			return "", err
		}
		var s []string
		for _, i := range ifs {
			s = append(s, fmt.Sprintf("%s,mtu=%d,%s", i.Name, i.MTU, i.Flags))
		}
		return strings.Join(s, " "), nil
	case "get":
		resp, err := client.Get(a[1])
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body))), err
	case "lookup":
		addrs, err := net.DefaultResolver.LookupHost(context.Background(), a[1])
		return strings.Join(addrs, ","), err
	case "serve":
		// serve TCPPORT UDPPORT: an HTTP server and a UDP echo until
		// stdin closes.
		ln, err := net.Listen("tcp4", ":"+a[1])
		if err != nil {
			return "", err
		}
		pc, err := net.ListenPacket("udp4", ":"+a[2])
		if err != nil {
			return "", err
		}
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from the container to %s", r.RemoteAddr)
		}))
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
			}
		}()
		fmt.Println("listening")
		io.Copy(io.Discard, os.Stdin)
		return "stopped", nil
	case "wait":
		fmt.Println("waiting")
		io.Copy(io.Discard, os.Stdin)
		return "stdin closed", nil
	case "send":
		// send HOST:PORT BYTES
		n, _ := strconv.ParseInt(a[2], 10, 64)
		c, err := net.DialTimeout("tcp4", a[1], 5*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		buf := make([]byte, 1<<20)
		for left := n; left > 0; {
			k := min(left, int64(len(buf)))
			if _, err := c.Write(buf[:k]); err != nil {
				return "", err
			}
			left -= k
		}
		// Wait for the receiver to have it all: the network ends with
		// the container, bytes still in flight with it.
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		return fmt.Sprintf("sent %d", n), nil
	}
	return "", fmt.Errorf("unknown action %q", a[0])
}

var (
	helperOnce sync.Once
	helperDir  string
	helperBin  string
	helperErr  error
)

// helperBinary copies the test binary where the test user may run it.
func helperBinary(t testing.TB) string {
	t.Helper()
	helperOnce.Do(func() {
		self, err := os.Executable()
		if err != nil {
			helperErr = err
			return
		}
		helperDir, err = os.MkdirTemp("", "dabba-netns-test-")
		if err != nil {
			helperErr = err
			return
		}
		os.Chmod(helperDir, 0o755)
		helperBin = filepath.Join(helperDir, "netns.test")
		b, err := os.ReadFile(self)
		if err == nil {
			err = os.WriteFile(helperBin, b, 0o755)
		}
		helperErr = err
	})
	if helperErr != nil {
		t.Fatalf("copying the test binary: %v", helperErr)
	}
	return helperBin
}

// requireSlirp skips (or fails under CI) without the test user, slirp4netns
// or a usable /dev/net/tun.
func requireSlirp(t testing.TB) *testenv.User {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	u := testenv.TestUser(t)
	testenv.RequireCommand(t, "slirp4netns", "slirp4netns")
	if err := CheckTun(); err != nil {
		testenv.Missing(t, err.Error(), "run `make deps` as root")
	}
	return u
}

// parentRun is one run of the parent role as the test user.
type parentProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	mu    sync.Mutex
	out   strings.Builder
	done  chan struct{}
}

type startOpts struct {
	// binds are files bind-mounted over host paths in the parent's own
	// mount namespace (see testenv.StartInMountNS).
	binds map[string]string
}

func startParent(t testing.TB, u *testenv.User, cfg parentConfig, o startOpts) *parentProc {
	t.Helper()
	bin := helperBinary(t)
	home := u.Dir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	b, _ := json.Marshal(cfg)
	cmd := u.Command(ctx, home, bin, "-test.run=^$")
	cmd.Env = append(cmd.Env, roleEnv+"=parent", configEnv+"="+string(b))
	p := &parentProc{cmd: cmd, lines: make(chan string, 100), done: make(chan struct{})}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if o.binds != nil {
		err = testenv.StartInMountNS(cmd, o.binds)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		t.Fatalf("starting the parent: %v", err)
	}
	go func() {
		defer close(p.done)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			p.mu.Lock()
			p.out.WriteString(s.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- s.Text():
			default:
			}
		}
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		p.wait()
	})
	return p
}

// waitLine returns the first line starting with prefix; it fails the test
// if the parent ends first.
func (p *parentProc) waitLine(t testing.TB, prefix string) string {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case l := <-p.lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-p.done:
			// Drain what is left.
			for {
				select {
				case l := <-p.lines:
					if strings.HasPrefix(l, prefix) {
						return l
					}
				default:
					t.Fatalf("parent ended without a %q line; output:\n%s", prefix, p.output())
				}
			}
		case <-timeout:
			t.Fatalf("no %q line in a minute; output:\n%s", prefix, p.output())
		}
	}
}

func (p *parentProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// wait closes stdin, waits for the parent and returns its output and error.
func (p *parentProc) wait() (string, error) {
	p.stdin.Close()
	<-p.done
	err := p.cmd.Wait()
	return p.output(), err
}

// pidOf parses the number after prefix in a line like "slirp-pid 123".
func pidOf(t testing.TB, line string) int {
	t.Helper()
	f := strings.Fields(line)
	n, err := strconv.Atoi(f[len(f)-1])
	if err != nil {
		t.Fatalf("no pid in %q", line)
	}
	return n
}

// slirpPIDs lists the slirp4netns processes whose parent is ppid.
func slirpChildren(ppid int) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.Contains(s[:i], "(slirp4netns") {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) && f[0] != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGone waits up to 10s for pid to end.
func waitGone(t testing.TB, pid int, what string) {
	t.Helper()
	for range 200 {
		if processGone(pid) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s (pid %d) still running", what, pid)
}
