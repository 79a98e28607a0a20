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

// boundCaps drops every capability outside defaultCaps from the bounding set
// of the calling thread (which execs the command) and clears the ambient set.
func boundCaps() error {
	keep := map[uintptr]bool{}
	for _, c := range defaultCaps {
		keep[c] = true
	}
	for c := uintptr(0); c <= lastCap(); c++ {
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
	return nil
}

func hasFileCaps(p string) bool {
	sz, err := unix.Getxattr(p, "security.capability", nil)
	return err == nil && sz > 0
}
