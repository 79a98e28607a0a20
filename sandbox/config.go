package sandbox

import (
	"context"
	"io"
	"os"
)

// RootfsType names how the child builds the container's root filesystem.
type RootfsType string

// The kinds of root filesystem.
const (
	// RootfsDir bind-mounts a directory that already holds the tree.
	RootfsDir RootfsType = "dir"
	// RootfsOverlay mounts kernel overlayfs over extracted layer directories
	// with a per-container upper and work directory (userxattr in a user
	// namespace).
	RootfsOverlay RootfsType = "overlay"
	// RootfsFUSE mounts a FUSE filesystem inside the container's namespaces and
	// hands its /dev/fuse descriptor to Config.FUSE in the parent; with Upper
	// and Work set, kernel overlayfs goes on top of it.
	RootfsFUSE RootfsType = "fuse"
)

// Rootfs describes the root filesystem for the child to mount. All paths are
// absolute paths on the host.
type Rootfs struct {
	Type RootfsType `json:"type"`
	// Dir is the tree of RootfsDir.
	Dir string `json:"dir,omitempty"`
	// Lower are the layer directories of RootfsOverlay, bottom first.
	Lower []string `json:"lower,omitempty"`
	// Upper and Work are the writable directories of RootfsOverlay and
	// RootfsFUSE, on the same filesystem.
	Upper string `json:"upper,omitempty"`
	Work  string `json:"work,omitempty"`
	// Target is an empty directory where the child mounts the rootfs (in its
	// own mount namespace; the host never sees the mount). Run makes one in
	// the container's runtime directory when empty.
	Target string `json:"target,omitempty"`
	// FUSEName is the filesystem name of RootfsFUSE (shown in mountinfo as
	// fuse.NAME); FUSEOptions are extra mount options, comma separated.
	FUSEName    string `json:"fuseName,omitempty"`
	FUSEOptions string `json:"fuseOptions,omitempty"`
	// ReadOnly makes the root read-only (after the mount points inside are
	// made; /tmp, /run and /dev stay writable), as podman's --read-only.
	ReadOnly bool `json:"readOnly,omitempty"`
}

// NetworkMode is the container's network.
type NetworkMode string

// The network modes, with podman's names.
const (
	// NetworkNone gives the container its own network namespace with only lo.
	NetworkNone NetworkMode = "none"
	// NetworkHost shares the caller's network namespace.
	NetworkHost NetworkMode = "host"
	// NetworkPrivate gives the container its own namespace and calls
	// Config.Network to connect it (slirp4netns).
	NetworkPrivate NetworkMode = "private"
)

// NetworkHook connects the container's network namespace. Setup is called in
// the parent once the child's namespaces exist and its id maps are written,
// before the child is released; teardown runs after the container exited.
type NetworkHook interface {
	Setup(ctx context.Context, childPID int) (teardown func() error, err error)
}

// Cgroup is where the parent puts the child before releasing it
// (sandbox/cgroups.Cgroup implements it).
type Cgroup interface {
	Add(pid int) error
}

// FUSEServer serves the FUSE connection of a RootfsFUSE: dev is the
// /dev/fuse descriptor the child opened and mounted (mount option fd=N) inside
// its namespaces; Serve owns it from then on (go-fuse serves such a
// descriptor given the mount point "/dev/fd/N"). Serve returns once the
// server runs; the child goes on (and the kernel's first request, INIT,
// reaches the server) after that. stop ends the server after the container
// exited (the mount went with its mount namespace) and must not hang.
type FUSEServer interface {
	Serve(ctx context.Context, dev *os.File) (stop func() error, err error)
}

// Config is a container to run. Fields tagged json travel to the child.
type Config struct {
	// ID names the container (runtime directory, log lines).
	ID string `json:"id"`
	// Rootfs is the root filesystem.
	Rootfs Rootfs `json:"rootfs"`
	// Args is the command and its arguments (see ResolveArgs). Args[0]
	// without a slash is looked up in the PATH of Env.
	Args []string `json:"args"`
	// Env is the command's environment (see BaseEnv). HOME is added from the
	// user's passwd entry when absent.
	Env []string `json:"env"`
	// Cwd is the working directory inside ("" means /); podman creates it
	// when missing.
	Cwd string `json:"cwd,omitempty"`
	// User is "", a name, a uid, or user:group (names or ids), resolved in the
	// image's /etc/passwd and /etc/group.
	User string `json:"user,omitempty"`
	// Hostname of the container (UTS namespace).
	Hostname string `json:"hostname"`
	// Hosts and ResolvConf are the contents of /etc/hosts and
	// /etc/resolv.conf; empty means DefaultHosts(Hostname) and
	// HostResolvConf().
	Hosts      string `json:"-"`
	ResolvConf string `json:"-"`
	// TTY gives the command a pseudo-terminal of the container's own devpts
	// as controlling terminal; the parent copies it to Stdin/Stdout.
	TTY bool `json:"tty,omitempty"`
	// Init runs the command under a minimal init that reaps zombies and
	// forwards signals, instead of as PID 1.
	Init bool `json:"init,omitempty"`
	// Network is the network mode; "" is NetworkNone.
	Network NetworkMode `json:"network"`

	// IDMaps maps the container's ids; nil means ResolveIDMaps(false).
	IDMaps *IDMaps `json:"-"`
	// NetworkHook connects a NetworkPrivate namespace.
	NetworkHook NetworkHook `json:"-"`
	// Cgroup, when set, receives the child before it is released.
	Cgroup Cgroup `json:"-"`
	// FUSE serves a RootfsFUSE.
	FUSE FUSEServer `json:"-"`

	// Stdin, Stdout and Stderr are the container's standard streams. Stdin nil
	// means /dev/null. Without TTY, *os.File values are passed straight
	// through.
	Stdin          io.Reader `json:"-"`
	Stdout, Stderr io.Writer `json:"-"`
	// ForwardSignals forwards INT, TERM, HUP, QUIT, USR1, USR2 and WINCH received by
	// this process to the container while Run runs.
	ForwardSignals bool `json:"-"`
	// RuntimeDir holds the per-container files (/etc/hosts, ...); "" means
	// RuntimeDir().
	RuntimeDir string `json:"-"`
	// Exe is the binary re-executed as the child; "" means /proc/self/exe.
	// Its main must dispatch ChildArg to ChildMain.
	Exe string `json:"-"`
	// LogDebug makes the child log its stages at debug level on Stderr.
	LogDebug bool `json:"debug,omitempty"`
}

// childConfig is what travels to the child over fd 3.
type childConfig struct {
	Config
	// TermRows and TermCols are the initial window size with TTY.
	TermRows uint16 `json:"termRows,omitempty"`
	TermCols uint16 `json:"termCols,omitempty"`
	// Files maps a path inside (/etc/hosts, ...) to the host file to bind.
	Files map[string]string `json:"files"`
	// SingleID is set when only one id is mapped (no setgroups, gid 5 for
	// devpts unmapped).
	SingleID bool `json:"singleID,omitempty"`
	// OwnNetNS is set when the child has its own network namespace.
	OwnNetNS bool `json:"ownNetNS"`
	// FUSEMount is where a RootfsFUSE is mounted (the lower of the overlay
	// when Rootfs.Upper is set, else the root itself).
	FUSEMount string `json:"fuseMount,omitempty"`
}
