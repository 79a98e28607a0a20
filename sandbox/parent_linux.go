package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// ChildArg is the hidden subcommand (argv[1]) the child is re-executed with;
// the program's main must hand it to ChildMain before anything else.
const ChildArg = "init"

// Exit statuses of podman for failures that are not the command's own.
const (
	ExitDabba     = 125 // dabba itself failed
	ExitCannotRun = 126 // the command exists but cannot be run
	ExitNotFound  = 127 // the command was not found
)

// StageError is a failure of the container's setup, named by its stage
// ("idmap", "network", "mount", "exec", ...). Code is the exit status to
// report (ExitDabba, ExitCannotRun, ExitNotFound).
type StageError struct {
	Stage string
	Code  int
	Err   error
}

func (e *StageError) Error() string { return e.Stage + ": " + e.Err.Error() }
func (e *StageError) Unwrap() error { return e.Err }

func stageErr(stage string, err error) error {
	return &StageError{Stage: stage, Code: ExitDabba, Err: err}
}

// forwarded are the signals passed on to the container.
var forwarded = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH}

// Run runs the container described by cfg to its end and returns its exit
// status: the command's status, or 128+N when a signal N ended it. Setup
// failures are *StageError.
func Run(ctx context.Context, cfg *Config) (status int, err error) {
	if len(cfg.Args) == 0 {
		return ExitDabba, stageErr("config", ErrNoCommand)
	}
	if err := validateRootfs(&cfg.Rootfs); err != nil {
		return ExitDabba, stageErr("config", err)
	}
	if cfg.Network == "" {
		cfg.Network = NetworkNone
	}
	if cfg.Network == NetworkPrivate && cfg.NetworkHook == nil {
		return ExitDabba, stageErr("network", errors.New("a private network needs a network hook (slirp4netns): use --network none or host"))
	}
	if cfg.Rootfs.Type == RootfsFUSE && cfg.FUSE == nil {
		return ExitDabba, stageErr("config", errors.New("a FUSE rootfs needs a FUSE server"))
	}
	if cfg.ID == "" {
		cfg.ID = fmt.Sprintf("%x", os.Getpid())
	}
	if strings.ContainsAny(cfg.ID, "/\x00") || cfg.ID == "." || cfg.ID == ".." {
		return ExitDabba, stageErr("config", fmt.Errorf("container id %q: want a name without '/'", cfg.ID))
	}
	maps := cfg.IDMaps
	if maps == nil {
		var warning string
		maps, warning = ResolveIDMaps(false)
		if warning != "" {
			slog.Warn(warning, "stage", "run")
		}
	}

	rd := cfg.RuntimeDir
	if rd == "" {
		if rd, err = RuntimeDir(); err != nil {
			return ExitDabba, stageErr("runtime-dir", err)
		}
	}
	sweepContainerDirs(filepath.Join(rd, "containers"))
	cdir := filepath.Join(rd, "containers", cfg.ID)
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return ExitDabba, stageErr("runtime-dir", fmt.Errorf("container directory: %w", err))
	}
	defer os.RemoveAll(cdir)
	lock, err := lockContainerDir(cdir)
	if err != nil {
		return ExitDabba, stageErr("runtime-dir", fmt.Errorf("locking %s: %w", cdir, err))
	}
	defer lock.Close()

	cc := childConfig{Config: *cfg, Files: map[string]string{}, SingleID: maps.Single, OwnNetNS: cfg.Network != NetworkHost}
	if cc.Rootfs.Target == "" {
		cc.Rootfs.Target = filepath.Join(cdir, "rootfs")
		if err := os.Mkdir(cc.Rootfs.Target, 0o700); err != nil {
			return ExitDabba, stageErr("runtime-dir", err)
		}
	}
	hosts, resolv := cfg.Hosts, cfg.ResolvConf
	if hosts == "" {
		hosts = DefaultHosts(cfg.Hostname)
	}
	if resolv == "" {
		resolv = HostResolvConf()
	}
	for _, f := range []struct{ in, content string }{
		{"/etc/hostname", cfg.Hostname + "\n"}, {"/etc/hosts", hosts}, {"/etc/resolv.conf", resolv},
	} {
		p := filepath.Join(cdir, filepath.Base(f.in))
		if err := os.WriteFile(p, []byte(f.content), 0o644); err != nil {
			return ExitDabba, stageErr("runtime-dir", err)
		}
		// 0644 despite the umask: the container's users must read them.
		os.Chmod(p, 0o644)
		cc.Files[f.in] = p
	}
	if cfg.Rootfs.Type == RootfsFUSE {
		cc.Rootfs.FUSEName = orDefault(cc.Rootfs.FUSEName, "dabba-fs")
		cc.FUSEMount = filepath.Join(cdir, "fuse")
		if err := os.Mkdir(cc.FUSEMount, 0o700); err != nil {
			return ExitDabba, stageErr("runtime-dir", err)
		}
	}

	// With TTY: the terminal dabba runs in, whose size the container's
	// follows (sizeFrom), and which is put in raw mode when it is the input
	// (tin).
	var tin, sizeFrom *os.File
	if cfg.TTY {
		for _, s := range []any{cfg.Stdin, cfg.Stdout} {
			if f, ok := s.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				if w, h, err := term.GetSize(int(f.Fd())); err == nil {
					cc.TermCols, cc.TermRows = uint16(w), uint16(h)
				}
				sizeFrom = f
				if f == cfg.Stdin {
					tin = f
				}
				break
			}
		}
	}

	// The handshake: fd 3 the config, fd 4 the socket.
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return ExitDabba, stageErr("start", err)
	}
	defer cfgR.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return ExitDabba, stageErr("start", fmt.Errorf("socketpair: %w", err))
	}
	parentSock := channel{os.NewFile(uintptr(fds[0]), "handshake-parent")}
	childSock := os.NewFile(uintptr(fds[1]), "handshake-child")
	defer parentSock.f.Close()
	defer childSock.Close()

	exe := cfg.Exe
	if exe == "" {
		exe = "/proc/self/exe"
	}
	cmd := &exec.Cmd{
		Path:       exe,
		Args:       []string{os.Args[0], ChildArg},
		Env:        []string{},
		ExtraFiles: []*os.File{cfgR, childSock},
		Stderr:     cfg.Stderr,
		// Non-file streams are copied by goroutines; do not wait for them
		// forever once the container ended.
		WaitDelay: 5 * time.Second,
	}
	if !cfg.TTY {
		cmd.Stdin, cmd.Stdout = cfg.Stdin, cfg.Stdout
	}
	// No CLONE_NEWCGROUP here: the child unshares its cgroup namespace once
	// the parent moved it into its cgroup, so that cgroup is its root.
	flags := unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC
	if cfg.Network != NetworkHost {
		flags |= unix.CLONE_NEWNET
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: uintptr(flags),
		Pdeathsig:  syscall.SIGKILL,
		// Its own session: a Ctrl-C on dabba's terminal reaches dabba, which
		// forwards it once; with -t the child makes its pty the controlling
		// terminal of this session.
		Setsid: true,
		// Capabilities that survive the execve of the child, made before
		// its uid is mapped (ChildMain).
		AmbientCaps: allCaps(),
	}

	// Catch the forwarded signals before the child exists, so none kills
	// dabba in between.
	var sigs chan os.Signal
	if cfg.ForwardSignals {
		sigs = make(chan os.Signal, 16)
		signal.Notify(sigs, forwarded...)
		defer signal.Stop(sigs)
	}

	slog.Debug("starting the child", "stage", "run", "id", cfg.ID, "exe", exe)
	if err := cmd.Start(); err != nil {
		cfgW.Close()
		return ExitDabba, stageErr("start", fmt.Errorf("re-executing %s: %w", exe, err))
	}
	pid := cmd.Process.Pid
	cfgR.Close()
	childSock.Close()
	abort := func(stage string, err error) (int, error) {
		parentSock.send(message{Type: msgAbort}, nil)
		cmd.Process.Kill()
		cmd.Wait()
		return ExitDabba, stageErr(stage, err)
	}
	// The child reads the config only once released: write it meanwhile,
	// as a large environment may not fit in the pipe.
	go func() {
		if err := json.NewEncoder(cfgW).Encode(&cc); err != nil {
			slog.Debug("sending the config", "stage", "run", "err", err)
		}
		cfgW.Close()
	}()

	// What the hooks start lives as long as the container, not as long as
	// ctx: a Ctrl-C that cancels ctx is forwarded to the container instead.
	hookCtx := context.WithoutCancel(ctx)
	if err := WriteIDMaps(pid, maps); err != nil {
		return abort("idmap", err)
	}
	slog.Debug("id maps written", "stage", "run", "pid", pid, "single", maps.Single, "helpers", maps.Helpers)
	if cfg.Cgroup != nil {
		if err := cfg.Cgroup.Add(pid); err != nil {
			return abort("cgroup", err)
		}
	}
	if cfg.Network == NetworkPrivate {
		teardown, err := cfg.NetworkHook.Setup(hookCtx, pid)
		if err != nil {
			return abort("network", err)
		}
		if teardown != nil {
			defer func() {
				if err := teardown(); err != nil {
					slog.Warn("network teardown", "stage", "net", "err", err)
				}
			}()
		}
	}
	if err := parentSock.send(message{Type: msgRelease}, nil); err != nil {
		return abort("release", err)
	}

	// Forward signals from now on: the child handles them by dying before it
	// execs, the command as it chooses after.
	var master *os.File
	var masterMu sync.Mutex
	if sigs != nil {
		go func() {
			for s := range sigs {
				if s == unix.SIGWINCH && cfg.TTY {
					masterMu.Lock()
					if master != nil && sizeFrom != nil {
						resize(sizeFrom, master)
					}
					masterMu.Unlock()
					continue
				}
				// Through the pidfd (os.Process uses one): never a
				// recycled pid once the container is reaped.
				cmd.Process.Signal(s)
			}
		}()
	}

	var childErr *StageError
	var stopFUSE func() error
	var restore func()
	var outDone chan struct{}
	defer func() {
		if restore != nil {
			restore()
		}
	}()
	for {
		m, fd, err := parentSock.recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return abort("handshake", err)
		}
		switch m.Type {
		case msgError:
			childErr = &StageError{Stage: m.Stage, Code: m.Code, Err: errors.New(m.Error)}
			if childErr.Code == 0 {
				childErr.Code = ExitDabba
			}
		case msgFUSEFD:
			if fd == nil {
				return abort("fuse", errors.New("the child sent no /dev/fuse descriptor"))
			}
			stop, err := cfg.FUSE.Serve(hookCtx, fd)
			if err != nil {
				return abort("fuse", err)
			}
			stopFUSE = stop
			if err := parentSock.send(message{Type: msgFUSEServed}, nil); err != nil {
				return abort("fuse", err)
			}
		case msgPTY:
			if fd == nil {
				return abort("tty", errors.New("the child sent no pty master"))
			}
			masterMu.Lock()
			master = fd
			masterMu.Unlock()
			if tin != nil {
				if st, err := term.MakeRaw(int(tin.Fd())); err == nil {
					restore = func() { term.Restore(int(tin.Fd()), st) }
				}
			}
			outDone = make(chan struct{})
			go func() {
				if cfg.Stdout != nil {
					io.Copy(cfg.Stdout, fd)
				} else {
					io.Copy(io.Discard, fd)
				}
				close(outDone)
			}()
			if cfg.Stdin != nil {
				go func() {
					io.Copy(fd, cfg.Stdin)
					// End of input: send the terminal's EOF character, as a
					// user pressing Ctrl-D would.
					fd.Write([]byte{4})
				}()
			}
		default:
			if fd != nil {
				fd.Close()
			}
			return abort("handshake", fmt.Errorf("unexpected message %q", m.Type))
		}
	}

	werr := cmd.Wait()
	if outDone != nil {
		<-outDone
	}
	if master != nil {
		master.Close()
	}
	if stopFUSE != nil {
		if err := stopFUSE(); err != nil {
			slog.Warn("stopping the FUSE server", "stage", "fs", "err", err)
		}
	}
	if childErr != nil {
		return childErr.Code, childErr
	}
	status, err = exitStatus(cmd.ProcessState, werr)
	slog.Debug("container exited", "stage", "run", "status", status)
	return status, err
}

// exitStatus is the shell's view of how the process ended.
func exitStatus(ps *os.ProcessState, werr error) (int, error) {
	if ps == nil {
		return ExitDabba, stageErr("wait", werr)
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok {
		return ps.ExitCode(), nil
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return ws.ExitStatus(), nil
}

func resize(from, to *os.File) {
	ws, err := unix.IoctlGetWinsize(int(from.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return
	}
	unix.IoctlSetWinsize(int(to.Fd()), unix.TIOCSWINSZ, ws)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func validateRootfs(r *Rootfs) error {
	abs := func(what, p string) error {
		if p == "" || !filepath.IsAbs(p) {
			return fmt.Errorf("rootfs %s %q: want an absolute path", what, p)
		}
		return nil
	}
	switch r.Type {
	case RootfsDir:
		if err := abs("dir", r.Dir); err != nil {
			return err
		}
		if fi, err := os.Stat(r.Dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("rootfs directory %s: not a directory", r.Dir)
		}
	case RootfsOverlay:
		if len(r.Lower) == 0 {
			return errors.New("overlay rootfs without lower directories")
		}
		for _, l := range r.Lower {
			if err := abs("lower", l); err != nil {
				return err
			}
		}
		if err := abs("upper", r.Upper); err != nil {
			return err
		}
		if err := abs("work", r.Work); err != nil {
			return err
		}
	case RootfsFUSE:
		if r.Upper != "" || r.Work != "" {
			if err := abs("upper", r.Upper); err != nil {
				return err
			}
			if err := abs("work", r.Work); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("rootfs type %q: want dir, overlay or fuse", r.Type)
	}
	return nil
}
