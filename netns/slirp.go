package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Sentinel errors; the errors Start and AddPortForward return wrap them.
var (
	// ErrNotInstalled is returned when the slirp4netns program is missing.
	ErrNotInstalled = errors.New("netns: slirp4netns not found")
	// ErrNoTun is returned when /dev/net/tun cannot be opened.
	ErrNoTun = errors.New("netns: /dev/net/tun unavailable")
	// ErrPortInUse is returned when a host port of a forward is taken.
	ErrPortInUse = errors.New("netns: host port in use")
	// ErrExited is returned when slirp4netns dies before it is stopped.
	ErrExited = errors.New("netns: slirp4netns exited")
)

// hintNone ends the errors of a missing prerequisite.
const hintNone = ", or use --network none (loopback only, needs neither)"

// tunPath is the TUN/TAP clone device slirp4netns opens inside the container.
const tunPath = "/dev/net/tun"

// Timeouts of Start and Close. The start of slirp4netns takes milliseconds;
// the bound only keeps a wedged one from hanging dabba forever.
const (
	startTimeout = 30 * time.Second
	stopGrace    = 2 * time.Second
)

// Slirp is a running slirp4netns connected to one container.
type Slirp struct {
	pid    int
	sock   string
	cmd    *exec.Cmd
	exitW  *os.File // closing it tells slirp4netns to exit
	output *tailBuffer
	// allowHostLoopback is Options.AllowHostLoopback, for AddPortForward.
	allowHostLoopback bool

	done    chan struct{} // closed once the process is reaped
	waitErr error         // valid after done

	closeOnce sync.Once
	closeErr  error
}

// PID is slirp4netns's process id (for logs and tests).
func (s *Slirp) PID() int { return s.cmd.Process.Pid }

// APISocket is the path of slirp4netns's API socket.
func (s *Slirp) APISocket() string { return s.sock }

// Done is closed when slirp4netns has exited, for whatever reason.
func (s *Slirp) Done() <-chan struct{} { return s.done }

// LookPath finds the slirp4netns program: bin if given, else in PATH.
func LookPath(bin string) (string, error) {
	if bin == "" {
		bin = "slirp4netns"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%w (%s): install the slirp4netns package%s", ErrNotInstalled, err, hintNone)
	}
	return p, nil
}

// CheckTun checks that /dev/net/tun can be opened, which slirp4netns does
// inside the container's namespaces to create tap0.
func CheckTun() error {
	f, err := os.OpenFile(tunPath, os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err == nil {
		f.Close()
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s does not exist: load the tun kernel module as root (modprobe tun)%s", ErrNoTun, tunPath, hintNone)
	}
	return fmt.Errorf("%w: opening %s: %v: as root, make it usable with `chmod 0666 %s` (or load the tun module: modprobe tun)%s", ErrNoTun, tunPath, err, tunPath, hintNone)
}

// Check runs Start's checks without starting anything: the program, the
// TUN device, the options and the host ports of the forwards. cmd/dabba may
// call it before doing any slow work.
func Check(opts Options) error {
	if err := opts.validate(); err != nil {
		return err
	}
	if _, err := LookPath(opts.Binary); err != nil {
		return err
	}
	if err := CheckTun(); err != nil {
		return err
	}
	return CheckPortForwards(opts.PortForwards)
}

// features are what a slirp4netns binary supports, from its --help.
type features struct {
	sandbox, seccomp bool
}

var (
	featMu    sync.Mutex
	featCache = map[string]features{}
)

// probe reads the flags bin supports once per process.
func probe(bin string) (features, error) {
	featMu.Lock()
	defer featMu.Unlock()
	if f, ok := featCache[bin]; ok {
		return f, nil
	}
	out, err := exec.Command(bin, "--help").CombinedOutput()
	help := string(out)
	if err != nil && help == "" {
		return features{}, fmt.Errorf("running %s --help: %w", bin, err)
	}
	for _, need := range []string{"--netns-type", "--userns-path", "--api-socket", "--disable-host-loopback", "--exit-fd", "--ready-fd"} {
		if !strings.Contains(help, need) {
			return features{}, fmt.Errorf("slirp4netns %s lacks %s: install slirp4netns 0.4 or newer%s", bin, need, hintNone)
		}
	}
	f := features{
		sandbox: strings.Contains(help, "--enable-sandbox"),
		seccomp: strings.Contains(help, "--enable-seccomp"),
	}
	featCache[bin] = f
	return f, nil
}

// Start runs slirp4netns for the network namespace of childPID, which must
// be in a user namespace owned by the caller (or in the caller's). It
// returns once tap0 is up and every forward of opts.PortForwards is in
// place; on error nothing is left running. Close stops it.
func Start(ctx context.Context, childPID int, opts Options) (*Slirp, error) {
	if childPID <= 0 {
		return nil, fmt.Errorf("starting slirp4netns: bad container pid %d", childPID)
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	bin, err := LookPath(opts.Binary)
	if err != nil {
		return nil, err
	}
	if err := CheckTun(); err != nil {
		return nil, err
	}
	if err := CheckPortForwards(opts.PortForwards); err != nil {
		return nil, err
	}
	feat, err := probe(bin)
	if err != nil {
		return nil, err
	}
	dir := opts.RuntimeDir
	if dir == "" {
		if dir, err = RuntimeDir(); err != nil {
			return nil, err
		}
	}
	sweepSockets(dir)
	sock, err := socketPath(dir, childPID)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	t0 := time.Now()

	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("starting slirp4netns: ready pipe: %w", err)
	}
	defer readyR.Close()
	exitR, exitW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return nil, fmt.Errorf("starting slirp4netns: exit pipe: %w", err)
	}

	// fd 3 and 4 in the child are ExtraFiles[0] and [1].
	args := []string{
		"--configure",
		"--mtu=" + strconv.Itoa(opts.mtu()),
		"--ready-fd=3",
		"--exit-fd=4",
		"--api-socket=" + sock,
		"--netns-type=pid",
		"--userns-path=/proc/" + strconv.Itoa(childPID) + "/ns/user",
	}
	if !opts.AllowHostLoopback {
		args = append(args, "--disable-host-loopback")
	}
	if opts.EnableIPv6 {
		args = append(args, "--enable-ipv6")
	}
	if feat.sandbox {
		args = append(args, "--enable-sandbox")
	}
	if feat.seccomp {
		args = append(args, "--enable-seccomp")
	}
	args = append(args, strconv.Itoa(childPID), TapName)

	s := &Slirp{
		pid:               childPID,
		sock:              sock,
		exitW:             exitW,
		output:            &tailBuffer{max: 8 << 10},
		allowHostLoopback: opts.AllowHostLoopback,
		done:              make(chan struct{}),
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = s.output, s.output
	cmd.ExtraFiles = []*os.File{readyW, exitR}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Dies with the thread that started it, which lives until it
		// is reaped (see run); its own process group keeps a terminal's
		// ^C for the container.
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true,
	}
	s.cmd = cmd
	slog.Debug("starting slirp4netns", "stage", "net", "pid", childPID, "args", strings.Join(args, " "))

	started := make(chan error, 1)
	go s.run(started)
	err = <-started
	readyW.Close()
	exitR.Close()
	if err != nil {
		exitW.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}

	ready := make(chan bool, 1)
	go func() {
		var b [1]byte
		n, _ := readyR.Read(b[:])
		ready <- n == 1
	}()
	select {
	case ok := <-ready:
		if !ok {
			s.Close()
			return nil, s.diedError("before the network was ready")
		}
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("waiting for slirp4netns (pid %d) to bring up %s for container pid %d: %w; its output: %s",
			s.PID(), TapName, childPID, ctx.Err(), s.output.String())
	}
	slog.Debug("slirp4netns ready", "stage", "net", "pid", s.PID(), "took", time.Since(t0))

	for _, pf := range opts.PortForwards {
		if err := s.AddPortForward(ctx, pf); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// run starts the process on a locked OS thread and stays on it until the
// process is reaped: Pdeathsig fires when the starting thread ends, and Go
// ends threads whose goroutine exits while locked.
func (s *Slirp) run(started chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := s.cmd.Start(); err != nil {
		started <- err
		return
	}
	started <- nil
	s.waitErr = s.cmd.Wait()
	close(s.done)
}

// diedError describes slirp4netns's unexpected end, with its output.
func (s *Slirp) diedError(when string) error {
	<-s.done
	status := "exit status 0"
	if s.waitErr != nil {
		status = s.waitErr.Error()
	}
	out := s.output.String()
	if i := strings.Index(out, "\nUsage:"); i >= 0 {
		out = out[:i] // its help text says nothing more
	}
	out = strings.TrimSpace(strings.ReplaceAll(out, "WARNING: Support for seccomp is experimental\n", ""))
	if strings.Contains(out, tunPath) {
		out += " (check " + tunPath + ": `chmod 0666 " + tunPath + "` as root" + hintNone + ")"
	}
	return fmt.Errorf("%w %s for container pid %d (%s): %s", ErrExited, when, s.pid, status, out)
}

// Close stops slirp4netns (closing its exit pipe, then SIGKILL to the
// process Start started if it lingers), waits for it and removes its API
// socket. It reports an earlier unexpected exit. Close may be called more
// than once.
func (s *Slirp) Close() error {
	s.closeOnce.Do(func() {
		select {
		case <-s.done:
			// Died on its own: worth reporting.
			s.closeErr = s.diedError("while the container ran")
		default:
		}
		s.exitW.Close()
		select {
		case <-s.done:
		case <-time.After(stopGrace):
			// Process.Kill targets this very process (a pidfd), never a
			// reused pid.
			s.cmd.Process.Kill()
			<-s.done
		}
		// The sandboxed slirp4netns cannot unlink it: it pivoted away.
		if err := os.Remove(s.sock); err != nil && !errors.Is(err, fs.ErrNotExist) && s.closeErr == nil {
			s.closeErr = fmt.Errorf("removing slirp4netns socket: %w", err)
		}
		slog.Debug("slirp4netns stopped", "stage", "net", "pid", s.cmd.Process.Pid)
	})
	return s.closeErr
}

// socketPath is a fresh API socket path in dir; sockaddr_un holds 108 bytes.
func socketPath(dir string, pid int) (string, error) {
	var r [4]byte
	rand.Read(r[:])
	p := filepath.Join(dir, fmt.Sprintf("slirp4netns-%d-%s.sock", pid, hex.EncodeToString(r[:])))
	if len(p) >= 108 {
		return "", fmt.Errorf("slirp4netns socket path %s is longer than 107 bytes: set XDG_RUNTIME_DIR to a shorter directory", p)
	}
	return p, nil
}

// sweepSockets removes the API sockets in dir of containers that are gone.
// A slirp4netns that pivoted into its sandbox cannot unlink its socket, and
// when dabba is killed nobody else does. The name holds the container's
// pid; a reused pid merely keeps a stale socket a while longer.
func sweepSockets(dir string) {
	names, _ := filepath.Glob(filepath.Join(dir, "slirp4netns-*.sock"))
	for _, n := range names {
		f := strings.Split(filepath.Base(n), "-")
		if len(f) != 3 {
			continue
		}
		pid, err := strconv.Atoi(f[1])
		if err != nil || pid <= 0 {
			continue
		}
		if processGone(pid) {
			os.Remove(n)
		}
	}
}

// processGone reports whether pid has ended: no such process, or a zombie
// its (new) parent has not reaped yet.
func processGone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	// "pid (comm) state ...": comm may hold anything but ends at the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return err == nil && i >= 0 && strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
