package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotDelegated is what errors from New wrap when the caller's cgroup
// cannot hold the container's cgroup: not writable by the caller, or the
// controller not given to it. Test with errors.Is; errors.As with a
// *NotDelegatedError gives the details.
var ErrNotDelegated = errors.New("cgroups: not delegated")

// NotDelegatedError says why the caller's cgroup cannot hold a container's
// cgroup with a limit, and how to fix it.
type NotDelegatedError struct {
	// Version is the cgroup version in use: 1 (legacy or hybrid) or 2.
	Version int
	// Controller is the controller that cannot be used: memory, pids or cpu.
	Controller string
	// Dir is the caller's own cgroup directory for that controller.
	Dir string
	// Reason says what is wrong, Fix how to put it right.
	Reason, Fix string
}

func (e *NotDelegatedError) Error() string {
	return fmt.Sprintf("cannot limit %s in cgroup v%d: %s; %s; or run without resource limits (no --memory, --pids-limit or --cpus)",
		e.Controller, e.Version, e.Reason, e.Fix)
}

// Unwrap makes errors.Is(err, ErrNotDelegated) true.
func (e *NotDelegatedError) Unwrap() error { return ErrNotDelegated }

// Ignorable reports whether err, from New, is one the CLI should print as a
// warning and then run the container without limits, as podman does:
// cgroup v1 without delegation (podman: "Resource limits are not supported
// and ignored on cgroups V1 rootless systems"). On cgroup v2 podman's
// runtimes fail instead, and so should dabba.
func Ignorable(err error) bool {
	var nd *NotDelegatedError
	return errors.As(err, &nd) && nd.Version == 1
}

// Cgroup is a container's cgroup: one directory on cgroup v2, one per
// controller on v1, each named dabba-<name> below the caller's own cgroup.
type Cgroup struct {
	name    string
	version int
	dirs    map[string]string // controller -> directory
	created []string          // directories New made, in order
}

// New makes the cgroup dabba-<name> below the caller's own cgroup (read
// from /proc/self/cgroup) and writes the limits into it. With limits that
// are all zero it makes nothing and returns a Cgroup whose Add and Remove do
// nothing, whether or not cgroups are delegated. Errors about delegation
// wrap ErrNotDelegated and say how to delegate.
func New(name string, l Limits) (*Cgroup, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	if l.IsZero() {
		return &Cgroup{name: name}, nil
	}
	lay, err := detectSelf()
	if err != nil {
		return nil, err
	}
	return create(lay, name, l)
}

// Own reports the cgroup version in use (1 for legacy or hybrid, 2 for
// unified) and the directory of the caller's own cgroup for each of the
// controllers memory, pids and cpu that is mounted.
func Own() (version int, dirs map[string]string, err error) {
	lay, err := detectSelf()
	if err != nil {
		return 0, nil, err
	}
	return lay.version, maps.Clone(lay.own), nil
}

func detectSelf() (*layout, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("finding cgroup mounts: %w", err)
	}
	pc, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("finding own cgroup: %w", err)
	}
	lay, err := detect(mi, pc)
	if err != nil {
		return nil, fmt.Errorf("finding own cgroup: %w", err)
	}
	slog.Debug("cgroup layout", "stage", "cgroup", "version", lay.version, "own", lay.own)
	return lay, nil
}

// checkName accepts names that make one plain directory name.
func checkName(name string) error {
	if name == "" || len(name) > 200 || name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("cgroup name %q: want 1 to 200 letters, digits, '.', '_' or '-', not starting with '.' or '-'", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("cgroup name %q: character %q not allowed: want letters, digits, '.', '_' or '-'", name, r)
		}
	}
	return nil
}

// DirName is the directory name of the container's cgroup.
func DirName(name string) string { return "dabba-" + name }

// create makes the cgroup in lay. On failure it removes what it made.
func create(lay *layout, name string, l Limits) (_ *Cgroup, err error) {
	cg := &Cgroup{name: name, version: lay.version, dirs: map[string]string{}}
	defer func() {
		if err != nil {
			if rerr := cg.Remove(); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	needed := l.controllers()
	switch lay.version {
	case 1:
		for _, c := range needed {
			own, ok := lay.own[c]
			if !ok {
				return nil, &NotDelegatedError{Version: 1, Controller: c,
					Reason: "no cgroup v1 hierarchy has the " + c + " controller mounted (see /proc/self/mountinfo)",
					Fix:    "mount it (mount -t cgroup -o " + c + " cgroup /sys/fs/cgroup/" + c + ") or boot with cgroup v2"}
			}
			if err := checkV1(c, own); err != nil {
				return nil, err
			}
		}
		for _, c := range needed {
			dir := filepath.Join(lay.own[c], DirName(name))
			// Controllers mounted together (cpu,cpuacct; or memory and pids
			// on one hierarchy) share a directory.
			if !slices.Contains(cg.created, dir) {
				if err := cg.mkdir(dir); err != nil {
					return nil, err
				}
			}
			cg.dirs[c] = dir
		}
	case 2:
		own := lay.own[Memory]
		if err := prepareV2(own, needed); err != nil {
			return nil, err
		}
		dir := filepath.Join(own, DirName(name))
		if err := cg.mkdir(dir); err != nil {
			return nil, err
		}
		for _, c := range needed {
			cg.dirs[c] = dir
		}
	default:
		return nil, fmt.Errorf("cgroup version %d not supported", lay.version)
	}
	for _, f := range l.files(lay.version) {
		p := filepath.Join(cg.dirs[f.controller], f.name)
		if f.optional {
			if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
				slog.Debug("cgroup file absent, limit without it", "stage", "cgroup", "file", p)
				continue
			}
		}
		if err := writeFile(p, f.value); err != nil {
			return nil, fmt.Errorf("setting %s limit: %w", f.controller, err)
		}
	}
	slog.Debug("cgroup ready", "stage", "cgroup", "dirs", cg.created)
	return cg, nil
}

// mkdirCgroup makes a cgroup directory; the kernel fills it with control
// files. Unit tests over a plain directory tree replace it with one that
// makes those files too.
var mkdirCgroup = func(dir string) error { return os.Mkdir(dir, 0o755) }

func (c *Cgroup) mkdir(dir string) error {
	if err := mkdirCgroup(dir); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("cgroup %s already exists: a container named %q is running, or one left it behind (remove it with rmdir %s once it holds no processes)", dir, c.name, dir)
		}
		return fmt.Errorf("creating cgroup %s: %w", dir, err)
	}
	c.created = append(c.created, dir)
	return nil
}

// checkV1 checks that the caller may make cgroups in own, the v1 directory
// of its cgroup for controller c: writable, as after `chown` delegation.
func checkV1(c, own string) error {
	if err := unix.Access(own, unix.W_OK|unix.X_OK); err != nil {
		uid := os.Getuid()
		return &NotDelegatedError{Version: 1, Controller: c, Dir: own,
			Reason: fmt.Sprintf("own cgroup %s is not writable by uid %d (%v)", own, uid, err),
			Fix: fmt.Sprintf("delegate it as root: chown %d %s %s/cgroup.procs %s/tasks (or make a child of it, chown that the same way and start dabba inside it)",
				uid, own, own, own)}
	}
	return nil
}

// prepareV2 checks that own, the caller's v2 cgroup, is delegated and that
// the controllers are enabled for its children, enabling them if needed.
//
// The kernel's no-internal-process rule applies: a cgroup other than the
// root may enable a domain controller (memory) for its children only while
// it holds no processes, and own always holds the caller. Threaded
// controllers (pids, cpu) may be enabled anyway. dabba never moves the
// caller, or anything else, out of own to get around that.
func prepareV2(own string, needed []string) error {
	uid := os.Getuid()
	for _, f := range []string{own, filepath.Join(own, "cgroup.procs")} {
		if err := unix.Access(f, unix.W_OK); err != nil {
			return &NotDelegatedError{Version: 2, Controller: strings.Join(needed, ", "), Dir: own,
				Reason: fmt.Sprintf("own cgroup %s is not delegated: %s is not writable by uid %d (%v)", own, f, uid, err),
				Fix:    "start dabba in a cgroup systemd delegates to you (systemd-run --user --scope -p Delegate=yes dabba run ...), or as root chown " + strconv.Itoa(uid) + " " + own + " and its cgroup.procs and cgroup.subtree_control"}
		}
	}
	avail, err := readWords(filepath.Join(own, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("reading delegated controllers: %w", err)
	}
	for _, c := range needed {
		if !avail[c] {
			return &NotDelegatedError{Version: 2, Controller: c, Dir: own,
				Reason: fmt.Sprintf("the %s controller is not available in own cgroup %s (cgroup.controllers lists %q)", c, own, joinWords(avail)),
				Fix:    "have systemd delegate it: as root write \"[Service]\\nDelegate=cpu cpuset io memory pids\" to /etc/systemd/system/user@.service.d/delegate.conf, run systemctl daemon-reload and log in again"}
		}
	}
	enabledPath := filepath.Join(own, "cgroup.subtree_control")
	enabled, err := readWords(enabledPath)
	if err != nil {
		return fmt.Errorf("reading enabled controllers: %w", err)
	}
	var missing []string
	for _, c := range needed {
		if !enabled[c] {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	// One controller per write: a refused domain controller must not stop
	// the threaded ones, and the error names the one refused.
	for _, c := range missing {
		err := writeFile(enabledPath, "+"+c)
		switch {
		case err == nil:
			slog.Debug("cgroup controller enabled", "stage", "cgroup", "controller", c, "in", own)
		case errors.Is(err, unix.EBUSY):
			return &NotDelegatedError{Version: 2, Controller: c, Dir: own,
				Reason: fmt.Sprintf("the kernel enables the %s controller for children only of a cgroup that holds no processes, and own cgroup %s holds dabba itself (dabba moves no process but the container's)", c, own),
				Fix:    "let systemd apply the limit to a scope around dabba instead (systemd-run --user --scope -p MemoryMax=512M dabba run ...)"}
		case errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
			return &NotDelegatedError{Version: 2, Controller: c, Dir: own,
				Reason: fmt.Sprintf("%s is not writable by uid %d (%v)", enabledPath, uid, err),
				Fix:    "start dabba in a cgroup systemd delegates to you (systemd-run --user --scope -p Delegate=yes dabba run ...), or as root chown " + strconv.Itoa(uid) + " " + enabledPath}
		default:
			return fmt.Errorf("enabling the %s controller: %w", c, err)
		}
	}
	return nil
}

// Add moves process pid into the cgroup (every directory of it on v1).
func (c *Cgroup) Add(pid int) error {
	for _, dir := range c.created {
		if err := writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("adding process %d to cgroup: %w", pid, err)
		}
		slog.Debug("process in cgroup", "stage", "cgroup", "pid", pid, "dir", dir)
	}
	return nil
}

// Dir is the directory holding controller's files ("memory", "pids",
// "cpu"), or "" when the cgroup does not limit it.
func (c *Cgroup) Dir(controller string) string { return c.dirs[controller] }

// Version is 1 or 2, the cgroup version the cgroup was made with (0 when it
// limits nothing).
func (c *Cgroup) Version() int { return c.version }

// removeWait bounds how long Remove waits for the kernel to let go of a
// cgroup whose last process just exited; removeGrace how long it waits
// while processes are still listed in it.
const (
	removeWait  = 2 * time.Second
	removeGrace = 250 * time.Millisecond
)

// Remove removes the cgroup's directories (and any empty cgroups the
// container made inside them). It kills nothing: when processes remain it
// returns an error naming the cgroup and them. Removing twice is harmless.
func (c *Cgroup) Remove() error {
	var errs []error
	var kept []string
	for i := len(c.created) - 1; i >= 0; i-- {
		dir := c.created[i]
		if err := removeTree(dir); err != nil {
			errs = append(errs, err)
			kept = append([]string{dir}, kept...)
			continue
		}
		slog.Debug("cgroup removed", "stage", "cgroup", "dir", dir)
	}
	c.created = kept
	return errors.Join(errs...)
}

// removeTree removes dir and the cgroups below it, deepest first, retrying
// briefly while the kernel releases tasks that just exited.
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing cgroup %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	start := time.Now()
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		pids := procs(dir)
		// Processes still listed after a short grace are alive: give up
		// soon. An empty cgroup that is still busy is the kernel releasing
		// tasks that just exited: wait longer.
		late := time.Since(start) > removeWait || len(pids) > 0 && time.Since(start) > removeGrace
		if !errors.Is(err, unix.EBUSY) || late {
			if len(pids) > 0 {
				return fmt.Errorf("cgroup %s still holds processes %s: dabba kills only what it started; stop them, then rmdir %s",
					dir, strings.Join(pids, ", "), dir)
			}
			return fmt.Errorf("removing cgroup %s: %w", dir, err)
		}
		time.Sleep(wait)
	}
}

// procs lists the processes in the cgroup at dir.
func procs(dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// writeFile writes a control file, which must exist: a cgroup never gains
// files by writing.
func writeFile(p, value string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, p, err)
	}
	return nil
}

func readWords(p string) (map[string]bool, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, w := range strings.Fields(string(b)) {
		m[w] = true
	}
	return m, nil
}

func joinWords(m map[string]bool) string {
	var ws []string
	for _, w := range []string{"cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"} {
		if m[w] {
			ws = append(ws, w)
		}
	}
	return strings.Join(ws, " ")
}
