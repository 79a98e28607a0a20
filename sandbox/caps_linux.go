package sandbox

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// defaultCaps is podman's default capability set (containers.conf
// default_capabilities); the bounding set is cut down to it.
var defaultCaps = []uintptr{
	unix.CAP_CHOWN,
	unix.CAP_DAC_OVERRIDE,
	unix.CAP_FOWNER,
	unix.CAP_FSETID,
	unix.CAP_KILL,
	unix.CAP_NET_BIND_SERVICE,
	unix.CAP_SETFCAP,
	unix.CAP_SETGID,
	unix.CAP_SETPCAP,
	unix.CAP_SETUID,
	unix.CAP_SYS_CHROOT,
}

// lastCap is the highest capability number the kernel knows.
func lastCap() uintptr {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			return uintptr(n)
		}
	}
	return unix.CAP_LAST_CAP
}

// allCaps is every capability the kernel knows: the ambient set a process
// started in a new user namespace needs to keep them across the execve
// that starts it, made before its uid is mapped in that namespace.
func allCaps() []uintptr {
	n := lastCap()
	cs := make([]uintptr, 0, n+1)
	for c := uintptr(0); c <= n; c++ {
		cs = append(cs, c)
	}
	return cs
}

// boundCaps drops every capability outside defaultCaps from the bounding set
// of the calling thread (which execs the command) and clears its ambient
// and inheritable sets.
func boundCaps() error {
	keep := map[uintptr]bool{}
	for _, c := range defaultCaps {
		keep[c] = true
	}
	last := lastCap() // one read of /proc, not one per capability
	for c := uintptr(0); c <= last; c++ {
		if keep[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil && err != unix.EINVAL {
			return err
		}
	}
	// Ambient capabilities are absent on old kernels: EINVAL is fine.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		return err
	}
	return clearInheritable()
}

// clearInheritable empties the calling thread's inheritable set, which
// raising the ambient set at the start filled: the inheritable set is not
// cut by the bounding set, and root's execve adds it to the new permitted
// set, as any execve of a file with inheritable file capabilities does.
func clearInheritable() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	return unix.Capset(&hdr, &data[0])
}

func hasFileCaps(p string) bool {
	sz, err := unix.Getxattr(p, "security.capability", nil)
	return err == nil && sz > 0
}
