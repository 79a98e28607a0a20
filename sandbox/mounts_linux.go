package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// maskedPaths and readonlyPaths are podman's defaults (containers/common
// pkg/config DefaultMaskedPaths and DefaultReadOnlyPaths): masked files get
// /dev/null over them, masked directories an empty read-only tmpfs.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats",
		"/sys/dev/block", "/sys/devices/virtual/powercap", "/sys/firmware",
		"/sys/fs/selinux", "/proc/interrupts",
	}
	readonlyPaths = []string{
		"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
	// hostDevices are bound from the host's /dev: a user namespace cannot
	// mknod them.
	hostDevices = []string{"null", "zero", "full", "random", "urandom", "tty"}
)

// mountRootfs mounts the root filesystem at Rootfs.Target.
func (c *child) mountRootfs() error {
	r := &c.cc.Rootfs
	switch r.Type {
	case RootfsDir:
		if err := unix.Mount(r.Dir, r.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("binding %s: %w", r.Dir, err)
		}
	case RootfsOverlay:
		return mountOverlay(r.Target, r.Lower, r.Upper, r.Work)
	case RootfsFUSE:
		if err := c.mountFUSE(); err != nil {
			return err
		}
		if r.Upper == "" {
			return unix.Mount(c.cc.FUSEMount, r.Target, "", unix.MS_BIND, "")
		}
		return mountOverlay(r.Target, []string{c.cc.FUSEMount}, r.Upper, r.Work)
	default:
		return fmt.Errorf("rootfs type %q unknown", r.Type)
	}
	return nil
}

// mountOverlay mounts kernel overlayfs. In a user namespace overlayfs keeps
// its whiteouts and opaque markers in user.overlay.* (userxattr); the layers
// were extracted that way.
func mountOverlay(target string, lower []string, upper, work string) error {
	top := make([]string, len(lower))
	for i, l := range lower {
		top[len(lower)-1-i] = l
	}
	opts := func(ls []string) string {
		return "lowerdir=" + strings.Join(ls, ":") + ",upperdir=" + upper + ",workdir=" + work + ",userxattr"
	}
	o := opts(top)
	// Mount options are one page; long layer lists go relative to their
	// common parent, as the mount is done from there.
	if len(o) >= unix.Getpagesize()-1 {
		parent := filepath.Dir(top[0])
		rel := make([]string, len(top))
		for i, l := range top {
			if filepath.Dir(l) != parent {
				return fmt.Errorf("overlay options for %d layers exceed a page and the layers share no directory", len(top))
			}
			rel[i] = filepath.Base(l)
		}
		wd, _ := os.Getwd()
		if err := os.Chdir(parent); err != nil {
			return err
		}
		defer os.Chdir(wd)
		o = opts(rel)
	}
	slog.Debug("overlay", "stage", "init", "options", o)
	if err := unix.Mount("overlay", target, "overlay", 0, o); err != nil {
		return fmt.Errorf("mounting overlay on %s (%d layers, upper %s): %w (overlayfs in a user namespace needs Linux 5.11 or later and a store on a filesystem with user xattrs, such as ext4, xfs or btrfs; the kernel log says more)", target, len(lower), upper, err)
	}
	return nil
}

// mountFUSE opens /dev/fuse, mounts it at FUSEMount and hands the descriptor
// to the parent's FUSE server; it returns once the server answers.
func (c *child) mountFUSE() error {
	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/fuse: %w (is the fuse module loaded and /dev/fuse 0666?)", err)
	}
	defer dev.Close()
	r := &c.cc.Rootfs
	// The kernel checks modes and owners itself (default_permissions): the
	// server reports them as the image has them.
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions", dev.Fd())
	if r.FUSEOptions != "" {
		opts += "," + r.FUSEOptions
	}
	if err := unix.Mount(r.FUSEName, c.cc.FUSEMount, "fuse."+r.FUSEName, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_RDONLY, opts); err != nil {
		return fmt.Errorf("mounting FUSE on %s: %w", c.cc.FUSEMount, err)
	}
	if err := c.sock.send(message{Type: msgFUSEFD}, dev); err != nil {
		return err
	}
	return c.sock.expect(msgFUSEServed)
}

// mountInside sets up what the container sees besides its image: /proc,
// /dev, /sys, /tmp, /run, /etc files, masked and read-only paths.
func (c *child) mountInside(root string) error {
	in := func(p string) (string, error) { return resolveIn(root, p) }
	mkdir := func(p string) (string, error) {
		hp, err := in(p)
		if err != nil {
			return "", err
		}
		if err := os.MkdirAll(hp, 0o755); err != nil {
			return "", fmt.Errorf("creating %s: %w", p, err)
		}
		return hp, nil
	}
	type mnt struct {
		path, fstype, data string
		flags              uintptr
	}
	const nsn = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	mounts := []mnt{
		{"/proc", "proc", "", nsn},
		{"/dev", "tmpfs", "mode=755,size=65536k", unix.MS_NOSUID | unix.MS_STRICTATIME},
	}
	for _, m := range mounts {
		hp, err := mkdir(m.path)
		if err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, hp, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.path, err)
		}
	}
	dev, err := in("/dev")
	if err != nil {
		return err
	}
	for _, d := range hostDevices {
		p := filepath.Join(dev, d)
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			return err
		}
		if err := unix.Mount("/dev/"+d, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding /dev/%s: %w", d, err)
		}
	}
	for _, d := range []string{"pts", "shm", "mqueue"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	// gid=5 is tty in most images; with a single-id map it is not mapped and
	// the kernel refuses it.
	ptsOpts := "newinstance,ptmxmode=0666,mode=0620"
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, ptsOpts+",gid=5"); err != nil {
		if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, ptsOpts); err != nil {
			return fmt.Errorf("mounting devpts on /dev/pts: %w", err)
		}
	}
	if err := unix.Mount("shm", filepath.Join(dev, "shm"), "tmpfs", nsn, "mode=1777,size=65536k"); err != nil {
		return fmt.Errorf("mounting tmpfs on /dev/shm: %w", err)
	}
	if err := unix.Mount("mqueue", filepath.Join(dev, "mqueue"), "mqueue", nsn, ""); err != nil {
		return fmt.Errorf("mounting mqueue on /dev/mqueue: %w", err)
	}
	for name, target := range map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "core": "/proc/kcore",
	} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}

	if err := c.mountSys(mkdir); err != nil {
		return err
	}
	for _, m := range []mnt{
		{"/tmp", "tmpfs", "mode=1777", unix.MS_NOSUID | unix.MS_NODEV},
		{"/run", "tmpfs", "mode=755", unix.MS_NOSUID | unix.MS_NODEV},
	} {
		hp, err := mkdir(m.path)
		if err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, hp, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.path, err)
		}
	}

	for inside, src := range c.cc.Files {
		hp, err := in(inside)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", filepath.Dir(inside), err)
		}
		if fi, err := os.Lstat(hp); err != nil || !fi.Mode().IsRegular() {
			os.Remove(hp)
			if err := os.WriteFile(hp, nil, 0o644); err != nil {
				return fmt.Errorf("creating %s: %w", inside, err)
			}
		}
		if err := unix.Mount(src, hp, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding %s: %w", inside, err)
		}
	}

	for _, p := range maskedPaths {
		hp, err := in(p)
		if err != nil {
			return err
		}
		fi, err := os.Stat(hp)
		if err != nil {
			continue
		}
		if fi.IsDir() {
			err = unix.Mount("tmpfs", hp, "tmpfs", unix.MS_RDONLY|nsn, "size=0")
		} else {
			err = unix.Mount("/dev/null", hp, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("masking %s: %w", p, err)
		}
	}
	for _, p := range readonlyPaths {
		hp, err := in(p)
		if err != nil {
			return err
		}
		if _, err := os.Stat(hp); err != nil {
			continue
		}
		if err := unix.Mount(hp, hp, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("binding %s read-only: %w", p, err)
		}
		if err := remountReadOnly(hp); err != nil {
			return fmt.Errorf("making %s read-only: %w", p, err)
		}
	}
	return nil
}

// mountSys mounts /sys read-only: a fresh sysfs when the container owns its
// network namespace (the kernel allows nothing else in a user namespace),
// else the host's /sys bound and every mount below it made read-only.
func (c *child) mountSys(mkdir func(string) (string, error)) error {
	hp, err := mkdir("/sys")
	if err != nil {
		return err
	}
	if c.cc.OwnNetNS {
		err := unix.Mount("sysfs", hp, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
		if err == nil {
			mountCgroup2(hp)
			return nil
		}
		slog.Debug("fresh sysfs refused, binding the host's", "stage", "init", "err", err)
	}
	if err := unix.Mount("/sys", hp, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding /sys: %w", err)
	}
	points, err := mountsBelow(hp)
	if err != nil {
		return err
	}
	for _, p := range points {
		if err := remountReadOnly(p); err != nil {
			return fmt.Errorf("making %s read-only: %w", p, err)
		}
	}
	return nil
}

// mountCgroup2 mounts the container's cgroup namespace read-only at
// /sys/fs/cgroup, as podman does, when the host uses the unified (v2)
// hierarchy; on v1 and hybrid hosts /sys/fs/cgroup stays empty.
func mountCgroup2(sys string) {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		return
	}
	p := filepath.Join(sys, "fs", "cgroup")
	if err := unix.Mount("cgroup2", p, "cgroup2", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		slog.Debug("no cgroup2 at /sys/fs/cgroup", "stage", "init", "err", err)
	}
}

// mountsBelow lists the mount points at or below dir, from mountinfo.
func mountsBelow(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := unescapeMountinfo(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	return out, nil
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// remountReadOnly makes the bind mount at p read-only, keeping the flags the
// kernel locks in a user namespace (nosuid, nodev, noexec, atime flags).
func remountReadOnly(p string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return err
	}
	keep := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME)
	return unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|keep, "")
}

// resolveIn returns the host path of p inside root, following symbolic links
// as if root were /, so a link in the image never leads a mount outside it.
// Missing components are kept as they are.
func resolveIn(root, p string) (string, error) {
	rest := strings.Split(filepath.Clean("/"+p), "/")
	cur := ""
	links := 0
	for len(rest) > 0 {
		comp := rest[0]
		rest = rest[1:]
		switch comp {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			if cur == "." || cur == "/" {
				cur = ""
			}
			continue
		}
		next := cur + "/" + comp
		fi, err := os.Lstat(root + next)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				cur = next
				continue
			}
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		links++
		if links > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(root + next)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			cur = ""
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return root + cur, nil
}
