// Package sandbox runs a command in a rootless container: new user, mount,
// pid, uts, ipc, net and cgroup namespaces, a root filesystem it is given,
// and the process setup (mounts, pivot_root, credentials, capabilities,
// environment, terminal, signals) that podman users expect.
//
// It imports nothing of the project. The root filesystem, the network and the
// cgroup reach it through the small types it declares: a Rootfs spec the
// child acts on (a plain directory, kernel overlayfs over extracted layers,
// or a FUSE mount whose /dev/fuse descriptor the child passes back to a
// FUSEServer in the parent), a NetworkHook and a Cgroup.
//
// # The sequence
//
// The parent re-executes /proc/self/exe with the hidden subcommand "init"
// (the program's main must call ChildMain for it before anything else). The
// child inherits two descriptors: fd 3, a pipe carrying the JSON childConfig,
// and fd 4, one end of a SOCK_SEQPACKET socketpair carrying typed messages
// (messages.go), with descriptors attached by SCM_RIGHTS where needed.
//
//	parent (dabba run)                       child (dabba init, PID 1 inside)
//	------------------                       --------------------------------
//	clone(NEWUSER|NEWNS|NEWPID|NEWUTS|
//	      NEWIPC|NEWNET), Pdeathsig,
//	      every capability ambient   ──────▶ waits for "release" (its uid is
//	sends the config on fd 3                 not mapped yet: the ambient set
//	writes uid_map/gid_map                   kept its capabilities across
//	  (newuidmap/newgidmap, or single id)    the execve)
//	Cgroup.Add(child)
//	NetworkHook.Setup(child)
//	sends "release"                  ──────▶ reads the config, becomes uid 0,
//	                                         unshares the cgroup
//	                                         namespace, lo up, hostname
//	                                         mounts the rootfs:
//	                                           dir:     bind
//	                                           overlay: lowerdirs+upper+work, userxattr
//	                                           fuse:    opens /dev/fuse, mounts it,
//	FUSEServer.Serve(fd)             ◀────── "fuse-fd" + SCM_RIGHTS
//	sends "fuse-served"              ──────▶   (then overlay on top of it)
//	                                         /proc, /dev, /sys, /tmp, /run, /etc files,
//	                                         masked and read-only paths, pivot_root
//	copies the terminal              ◀────── "pty" + SCM_RIGHTS (with -t: the master
//	                                           of a pty of the container's devpts)
//	                                         user, capabilities, no_new_privs, fds
//	reads EOF: the command runs      ◀────── execve (fd 4 is close-on-exec)
//	  or "error" {stage, message, code}       or the error, on any failure
//	forwards signals, waits, returns
//	the container's exit status
//
// With Config.Init the child does not exec the command itself: it forks it,
// reaps every process that reparents to it and forwards signals, and exits
// with the command's status (reaper_linux.go).
//
// RunInUserNS and EnterUserNS run other work as root of a user namespace
// with the same maps (extracting a layer so its files land on the
// container's ids, removing trees owned by subordinate ids).
package sandbox
