package fs

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountOptions say how the kernel mounts the filesystem.
type MountOptions struct {
	// Name is the mount's source in /proc/mounts, e.g. the image name;
	// "dabba-fs" when empty. The type is Type.
	Name string
	// AllowOther lets users other than the one who mounted use the
	// mount, as a container's processes need when they run under several
	// ids. Inside a user namespace the kernel allows it to the namespace's
	// users; outside, an unprivileged user needs user_allow_other in
	// /etc/fuse.conf.
	AllowOther bool
	// Suid keeps setuid and setgid bits effective; Dev lets device nodes
	// be opened (only root in the initial user namespace can have that).
	Suid, Dev bool
	// Debug logs every FUSE request and reply to stderr.
	Debug bool
}

// Type is the filesystem type of a dabba-fs mount in /proc/mounts:
// "fuse." followed by the subtype.
const Type = "fuse." + subtype

const subtype = "dabba-fs"

func (o MountOptions) fuseOptions() *fuse.MountOptions {
	name := o.Name
	if name == "" {
		name = "dabba-fs"
	}
	opts := []string{"ro", "default_permissions"}
	if !o.Suid {
		opts = append(opts, "nosuid")
	} else {
		opts = append(opts, "suid")
	}
	if !o.Dev {
		opts = append(opts, "nodev")
	} else {
		opts = append(opts, "dev")
	}
	mo := &fuse.MountOptions{
		FsName:     name,
		Name:       subtype,
		Options:    opts,
		AllowOther: o.AllowOther,
		// Try mount(2) first: it works as root and as root of a user
		// namespace; elsewhere go-fuse falls back to fusermount3.
		DirectMount: true,
		// Read-only at the mount, not only the superblock; the
		// nosuid/nodev options above still adjust these flags.
		DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
		// The image never changes: the kernel may cache symlink
		// targets, and need not drop pages when it sees an mtime.
		// Reads stay at go-fuse's default 128 KiB (the kernel asks for
		// 256 KiB with readahead): 1 MiB requests (MaxWrite) saved no
		// measurable time on the Alpine tree and cost ~3 MB of request
		// buffers, 28 bytes per entry of a 100k-entry image.
		EnableSymlinkCaching:     true,
		ExplicitDataCacheControl: true,
		Debug:                    o.Debug,
		Logger:                   log.New(fuseLog{}, "", 0),
	}
	if o.Debug {
		// The request trace, as go-fuse prints it.
		mo.Logger = log.New(os.Stderr, "dabba-fs: ", 0)
	}
	return mo
}

// fuseLog passes go-fuse's log lines to slog, as warnings, except a reply
// the kernel no longer waits for (writev fails with ENOENT: the request
// was interrupted, or the container exited with a readahead pending),
// which is routine and goes to debug.
type fuseLog struct{}

func (fuseLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "Write/Writev failed") && strings.Contains(msg, "no such file or directory") {
		slog.Debug("fuse: "+msg, "stage", "fs")
	} else {
		slog.Warn("fuse: "+msg, "stage", "fs")
	}
	return len(p), nil
}

// Server serves one mount of an FS.
type Server struct {
	srv  *fuse.Server
	dir  string // "" for a passed /dev/fuse descriptor
	once sync.Once
	err  error
}

// Mount mounts f read-only at dir and serves it in the background until
// it is unmounted (Unmount, or umount by anyone). It works as root, as root
// of a user namespace (mount(2) itself), and as an unprivileged user where
// fusermount3 is installed.
func Mount(dir string, f *FS, opts MountOptions) (*Server, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("mount point %s is not a directory", dir)
	}
	srv, err := fuse.NewServer(f, dir, opts.fuseOptions())
	if err != nil {
		return nil, fmt.Errorf("mounting the image at %s: %w (FUSE needs /dev/fuse readable and writable, and root, a user namespace, or fusermount3 from the fuse3 package)", dir, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("mounting the image at %s: %w", dir, err)
	}
	slog.Debug("mounted", "stage", "fs", "dir", dir)
	return &Server{srv: srv, dir: dir}, nil
}

// Serve serves f on dev, a /dev/fuse descriptor that another process
// opened and mounted (with the options KernelMountArgs gives), for
// example a container's init inside its own user and mount namespaces,
// which then passed the descriptor over a unix socket. It returns once
// serving has started; Wait returns when the mount goes away. Serve takes
// ownership of dev. Unmounting is the mounting side's business: the kernel
// ends the session when the mount is gone or its last user exits.
//
// The serving process should not open files of the mount with package os
// (through /proc/PID/root, say) before a raw poll(2) on one of them: Go
// registers opened files with epoll, the kernel turns that into a FUSE POLL
// request, and a process serving itself may have no thread left to answer
// (go-fuse does this "poll hack" in Mount, where it knows the mount point).
func Serve(dev *os.File, f *FS, opts MountOptions) (*Server, error) {
	if dev == nil {
		return nil, errors.New("serving a passed /dev/fuse descriptor: no descriptor")
	}
	// go-fuse takes the magic mount point /dev/fd/N to mean "N is an
	// open, already mounted /dev/fuse" (libfuse's convention). Dup it so
	// the number stays valid whatever happens to dev.
	fd, err := syscall.Dup(int(dev.Fd()))
	if err != nil {
		return nil, fmt.Errorf("serving /dev/fuse descriptor %d: %w", dev.Fd(), err)
	}
	dev.Close()
	fo := opts.fuseOptions()
	// go-fuse tries DirectMount before it looks for the magic mount
	// point, and would mount a new filesystem over /dev/fuse itself.
	fo.DirectMount = false
	srv, err := fuse.NewServer(f, fmt.Sprintf("/dev/fd/%d", fd), fo)
	if err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("serving /dev/fuse descriptor %d: %w", fd, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return nil, fmt.Errorf("serving /dev/fuse descriptor %d: %w", fd, err)
	}
	return &Server{srv: srv}, nil
}

// KernelMountArgs returns the arguments of mount(2) with which a process
// that opened /dev/fuse as descriptor fd mounts the filesystem a Serve
// call on that descriptor will serve: the filesystem type, the flags and
// the data string. uid and gid are the mounting process's ids as its own
// user namespace sees them (0 and 0 for a container's init). The process
// must have opened /dev/fuse in the user namespace that owns its mount
// namespace: the kernel checks it.
func KernelMountArgs(fd, uid, gid int, opts MountOptions) (fstype string, flags uintptr, data string) {
	flags = syscall.MS_RDONLY
	if !opts.Suid {
		flags |= syscall.MS_NOSUID
	}
	if !opts.Dev {
		flags |= syscall.MS_NODEV
	}
	d := []string{
		fmt.Sprintf("fd=%d", fd),
		"rootmode=40000",
		fmt.Sprintf("user_id=%d", uid),
		fmt.Sprintf("group_id=%d", gid),
		"default_permissions",
	}
	if opts.AllowOther {
		d = append(d, "allow_other")
	}
	return Type, flags, strings.Join(d, ",")
}

// Dir returns the mount point ("" when serving a passed descriptor).
func (s *Server) Dir() string { return s.dir }

// Wait returns when the kernel ends the session: after an unmount, or an
// abort through /sys/fs/fuse/connections.
func (s *Server) Wait() { s.srv.Wait() }

// Unmount unmounts the filesystem and waits for serving to end. If the
// mount is busy it is detached (lazy unmount): it disappears from the
// namespace at once, the kernel ends the session when its last user goes,
// and Unmount returns without waiting for that. It is an error for a passed descriptor (see Serve).
func (s *Server) Unmount() error {
	if s.dir == "" {
		return errors.New("unmounting: the mount belongs to the process that passed its /dev/fuse descriptor")
	}
	s.once.Do(func() {
		if err := s.srv.Unmount(); err != nil {
			slog.Debug("unmount failed, detaching", "stage", "fs", "dir", s.dir, "err", err)
			if err2 := detach(s.dir); err2 != nil {
				s.err = fmt.Errorf("unmounting %s: %w; lazy unmount: %w", s.dir, err, err2)
			}
			// The session ends when the last user lets go; do not wait.
			return
		}
		s.srv.Wait()
	})
	return s.err
}

// detach unmounts dir lazily: umount2(MNT_DETACH) where we may, else
// fusermount3 -uz.
func detach(dir string) error {
	err := syscall.Unmount(dir, syscall.MNT_DETACH)
	if err == nil || !errors.Is(err, syscall.EPERM) {
		return err
	}
	for _, bin := range []string{"fusermount3", "fusermount"} {
		if p, lerr := exec.LookPath(bin); lerr == nil {
			out, cerr := exec.Command(p, "-u", "-z", dir).CombinedOutput()
			if cerr != nil {
				return fmt.Errorf("%s -u -z %s: %w: %s", bin, dir, cerr, strings.TrimSpace(string(out)))
			}
			return nil
		}
	}
	return err
}

// DeviceServer serves an FS on /dev/fuse descriptors passed by another
// process. Its Serve method has the shape of sandbox.FUSEServer, so
// cmd/dabba can hand it to the sandbox as is.
type DeviceServer struct {
	FS      *FS
	Options MountOptions
	// StopTimeout bounds how long stop waits for the kernel to end the
	// session; 0 means 10 seconds.
	StopTimeout time.Duration
}

// Serve serves d.FS on dev (see the package function Serve). stop waits
// until the kernel ends the session, which it does when the mount is gone
// (the container's mount namespace died) and returns an error, without
// hanging, if that does not happen within StopTimeout.
func (d *DeviceServer) Serve(ctx context.Context, dev *os.File) (stop func() error, err error) {
	srv, err := Serve(dev, d.FS, d.Options)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	timeout := d.StopTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return func() error {
		select {
		case <-done:
		case <-time.After(timeout):
			return fmt.Errorf("dabba-fs: the FUSE session is still open %v after the container ended (is the mount still referenced elsewhere?)", timeout)
		}
		if n, first := d.FS.Errors(); n > 0 {
			return fmt.Errorf("dabba-fs: %d read errors while serving the container; the first: %w", n, first)
		}
		return nil
	}, nil
}
