package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The descriptors the child inherits.
const (
	childConfigFD = 3
	childSockFD   = 4
)

// child is the state of the re-executed init while it sets the container up.
type child struct {
	cc   childConfig
	sock channel
	user *ExecUser
	env  []string
}

// failure is a setup error of the child, with its stage and exit status.
type failure struct {
	stage string
	code  int
	err   error
}

func (f *failure) Error() string { return f.stage + ": " + f.err.Error() }

func fail(stage string, err error) *failure { return &failure{stage, ExitDabba, err} }

// ChildMain is the container's init: the program's main calls it, with the
// OS thread locked, when argv[1] is ChildArg, and exits with its result. It
// only returns on failure (or with Config.Init, when the command ended); on
// success the command replaces it.
//
// It starts in a new user namespace before the parent has written its id
// maps, so its uid was not mapped at the execve that started it, which
// would have cost it its capabilities; the parent starts it with every
// capability in its ambient set (SysProcAttr.AmbientCaps), which survives
// that execve. It waits for the parent's release (the maps are written),
// then reads the config and sets the container up. The ambient set is
// cleared again on the thread that executes the command (boundCaps).
func ChildMain() int {
	var st unix.Stat_t
	if err := unix.Fstat(childSockFD, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		fmt.Fprintf(os.Stderr, "dabba %s: this is the container's init, started by dabba run, not by hand (no handshake on fd %d)\n", ChildArg, childSockFD)
		return ExitDabba
	}
	c := &child{sock: channel{os.NewFile(childSockFD, "handshake")}}
	if err := c.sock.expect(msgRelease); err != nil {
		if errors.Is(err, errAborted) {
			return ExitDabba
		}
		return c.report(fail("handshake", err))
	}
	unix.CloseOnExec(childConfigFD)
	unix.CloseOnExec(childSockFD)
	cf := os.NewFile(childConfigFD, "config")
	err := json.NewDecoder(cf).Decode(&c.cc)
	cf.Close()
	if err != nil {
		return c.report(fail("config", fmt.Errorf("reading the config from fd %d: %w (is this process started by dabba run?)", childConfigFD, err)))
	}
	level := slog.LevelWarn
	if c.cc.LogDebug {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.String(slog.TimeKey, a.Value.Time().Format("15:04:05.000"))
			}
			return a
		},
	})).With("proc", fmt.Sprintf("init[%d]", os.Getpid())))
	return c.report(c.run())
}

// report sends a failure to the parent and returns its exit status.
func (c *child) report(f *failure) int {
	if f == nil {
		return 0
	}
	if err := c.sock.send(message{Type: msgError, Stage: f.stage, Error: f.err.Error(), Code: f.code}, nil); err != nil {
		fmt.Fprintf(os.Stderr, "dabba init: %s\n", f.Error())
	}
	return f.code
}

// run does everything after the release, in order; it returns only on
// failure (or after the command ended, under Init).
func (c *child) run() *failure {
	cc := &c.cc
	// The map is written: become root of the namespace for good.
	if err := unix.Setresgid(0, 0, 0); err != nil {
		return fail("idmap", fmt.Errorf("setresgid 0: %w (is gid 0 mapped?)", err))
	}
	if err := unix.Setresuid(0, 0, 0); err != nil {
		return fail("idmap", fmt.Errorf("setresuid 0: %w (is uid 0 mapped?)", err))
	}
	if !cc.SingleID {
		if err := unix.Setgroups(nil); err != nil {
			return fail("idmap", fmt.Errorf("setgroups: %w", err))
		}
	}
	unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fail("cgroup", fmt.Errorf("unsharing the cgroup namespace: %w", err))
	}
	if cc.OwnNetNS {
		if err := loopbackUp(); err != nil {
			return fail("network", fmt.Errorf("bringing lo up: %w", err))
		}
	}
	if cc.Hostname != "" {
		if err := unix.Sethostname([]byte(cc.Hostname)); err != nil {
			return fail("hostname", fmt.Errorf("sethostname %q: %w", cc.Hostname, err))
		}
	}
	slog.Debug("mounting the rootfs", "stage", "init", "type", cc.Rootfs.Type)
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail("mount", fmt.Errorf("making / private: %w", err))
	}
	if err := c.mountRootfs(); err != nil {
		return fail("rootfs", err)
	}
	root := cc.Rootfs.Target
	if err := c.mountInside(root); err != nil {
		return fail("mount", err)
	}
	if cc.Rootfs.ReadOnly {
		if err := remountReadOnly(root); err != nil {
			return fail("mount", fmt.Errorf("making the root read-only: %w", err))
		}
	}
	if err := pivotRoot(root); err != nil {
		return fail("pivot_root", err)
	}

	u, err := c.lookupUser()
	if err != nil {
		return fail("user", err)
	}
	c.user = u
	c.env = append([]string{}, cc.Env...)
	if _, ok := envGet(c.env, "HOME"); !ok {
		c.env = append(c.env, "HOME="+u.Home)
	}
	if _, ok := envGet(c.env, "PATH"); !ok {
		c.env = append(c.env, "PATH="+DefaultPath)
	}
	cwd := cc.Cwd
	if cwd == "" {
		cwd = "/"
	}
	// podman creates a missing working directory, owned by the user.
	if _, err := os.Stat(cwd); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(cwd, 0o755); err != nil {
			return fail("workdir", fmt.Errorf("creating working directory %s: %w", cwd, err))
		}
		os.Chown(cwd, u.UID, u.GID)
	}
	if cc.TTY {
		if err := c.setupTTY(); err != nil {
			return fail("tty", err)
		}
	}
	if err := boundCaps(); err != nil {
		return fail("capabilities", err)
	}
	if err := c.switchUser(); err != nil {
		return fail("user", err)
	}
	if err := os.Chdir(cwd); err != nil {
		return &failure{"workdir", ExitCannotRun, fmt.Errorf("working directory %s: %w", cwd, err)}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail("no_new_privs", err)
	}
	path, f := lookCommand(cc.Args[0], c.env)
	if f != nil {
		return f
	}
	if err := closeFDsFrom(3); err != nil {
		return fail("fds", err)
	}
	slog.Debug("exec", "stage", "init", "path", path, "args", cc.Args)
	if cc.Init {
		return c.reap(path)
	}
	err = unix.Exec(path, cc.Args, c.env)
	return execFailure(cc.Args[0], err)
}

// lookupUser resolves Config.User in the image's /etc/passwd and /etc/group.
func (c *child) lookupUser() (*ExecUser, error) {
	pw, _ := os.Open("/etc/passwd")
	gr, _ := os.Open("/etc/group")
	defer func() {
		if pw != nil {
			pw.Close()
		}
		if gr != nil {
			gr.Close()
		}
	}()
	// A nil *os.File would be a non-nil io.Reader that fails.
	var pr, gru interface{ Read([]byte) (int, error) }
	if pw != nil {
		pr = pw
	}
	if gr != nil {
		gru = gr
	}
	return LookupUser(c.cc.User, pr, gru)
}

func (c *child) switchUser() error {
	u := c.user
	if !c.cc.SingleID {
		if err := unix.Setgroups(u.Groups); err != nil {
			return fmt.Errorf("setgroups %v: %w", u.Groups, err)
		}
	} else if len(u.Groups) > 0 {
		slog.Debug("supplementary groups not set: single-id map", "stage", "init", "groups", u.Groups)
	}
	if err := unix.Setresgid(u.GID, u.GID, u.GID); err != nil {
		return fmt.Errorf("gid %d: %w (is it inside the container's id map?)", u.GID, err)
	}
	if err := unix.Setresuid(u.UID, u.UID, u.UID); err != nil {
		return fmt.Errorf("uid %d: %w (is it inside the container's id map?)", u.UID, err)
	}
	// A credential change clears the parent-death signal.
	unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0)
	return nil
}

// lookCommand finds the command in the container's PATH, mapping failures to
// podman's statuses.
func lookCommand(name string, env []string) (string, *failure) {
	if strings.Contains(name, "/") {
		fi, err := os.Stat(name)
		if err != nil {
			return "", execFailure(name, err)
		}
		if fi.IsDir() {
			return "", &failure{"exec", ExitCannotRun, fmt.Errorf("%s: is a directory", name)}
		}
		return name, nil
	}
	p, _ := envGet(env, "PATH")
	for _, dir := range filepath.SplitList(p) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		cand := filepath.Join(dir, name)
		fi, err := os.Stat(cand)
		if err != nil || fi.IsDir() {
			continue
		}
		if unix.Access(cand, unix.X_OK) == nil {
			return cand, nil
		}
	}
	return "", &failure{"exec", ExitNotFound, fmt.Errorf("%s: executable file not found in $PATH", name)}
}

// execFailure maps an exec error to podman's statuses: 127 when the file
// does not exist, 126 when it cannot be run.
func execFailure(name string, err error) *failure {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno == unix.ENOENT {
		return &failure{"exec", ExitNotFound, fmt.Errorf("%s: no such file or directory", name)}
	}
	return &failure{"exec", ExitCannotRun, fmt.Errorf("%s: %w", name, err)}
}

// closeFDsFrom marks every descriptor >= from close-on-exec (the handshake
// socket already is: the parent reads EOF once exec succeeds).
func closeFDsFrom(from int) error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("listing /proc/self/fd: %w", err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < from {
			continue
		}
		unix.CloseOnExec(fd)
	}
	return nil
}

// loopbackUp sets IFF_UP on lo of the current network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// pivotRoot makes root the root of the mount namespace and detaches the old
// one (pivot_root(".", ".") stacks the old root on the new; unmounting "."
// then removes it without needing a directory for it).
func pivotRoot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("chdir %s: %w", root, err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %s: %w", root, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detaching the old root: %w", err)
	}
	return unix.Chdir("/")
}
