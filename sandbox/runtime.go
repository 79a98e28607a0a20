package sandbox

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// RuntimeDir is the per-user directory for transient files (the container's
// /etc/hosts, its rootfs mount point): $XDG_RUNTIME_DIR/dabba when
// XDG_RUNTIME_DIR is set and usable, else /tmp/dabba-UID. The directory is
// created 0700 and must belong to the caller, so another user cannot plant
// files there.
func RuntimeDir() (string, error) {
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" && filepath.IsAbs(x) {
		if fi, err := os.Stat(x); err == nil && fi.IsDir() && ownedByMe(fi) {
			d := filepath.Join(x, "dabba")
			if err := ensurePrivateDir(d); err == nil {
				return d, nil
			}
		}
	}
	d := filepath.Join(os.TempDir(), fmt.Sprintf("dabba-%d", os.Getuid()))
	if err := ensurePrivateDir(d); err != nil {
		return "", err
	}
	return d, nil
}

func ownedByMe(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}

func ensurePrivateDir(d string) error {
	if err := os.Mkdir(d, 0o700); err != nil && !os.IsExist(err) {
		return fmt.Errorf("runtime directory %s: %w", d, err)
	}
	fi, err := os.Lstat(d)
	if err != nil {
		return fmt.Errorf("runtime directory %s: %w", d, err)
	}
	if !fi.IsDir() || !ownedByMe(fi) {
		return fmt.Errorf("runtime directory %s is not a directory owned by uid %d: remove it, or set XDG_RUNTIME_DIR to a private directory", d, os.Getuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("runtime directory %s: %w", d, err)
		}
	}
	return nil
}

// lockContainerDir takes the lock of a container's runtime directory, held
// while its container runs (the descriptor is close-on-exec: only this
// process holds it, and the kernel drops it when the process dies).
func lockContainerDir(cdir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(cdir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// sweepContainerDirs removes the runtime directories of containers whose
// dabba died without cleaning up (SIGKILL): their lock is free. A
// directory whose lock file is missing or new may be starting (the lock is
// taken just after the file is made); it is left alone.
func sweepContainerDirs(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		cdir := filepath.Join(dir, e.Name())
		lp := filepath.Join(cdir, "lock")
		if fi, err := os.Stat(lp); err != nil || time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		f, err := os.OpenFile(lp, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.RemoveAll(cdir)
		}
		f.Close()
	}
}

// DefaultHosts is the /etc/hosts of a container named hostname.
func DefaultHosts(hostname string) string {
	s := "127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if hostname != "" {
		s += "127.0.1.1\t" + hostname + "\n"
	}
	return s
}

// SlirpResolvConf is /etc/resolv.conf behind slirp4netns, whose built-in DNS
// forwarder answers at 10.0.2.3.
const SlirpResolvConf = "nameserver 10.0.2.3\n"

// HostResolvConf is the host's /etc/resolv.conf without loopback nameservers
// (a resolver on the host's 127.0.0.x is not reachable from another network
// namespace); search and options lines are kept.
func HostResolvConf() string {
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return ""
	}
	defer f.Close()
	return filterResolvConf(bufio.NewScanner(f))
}

func filterResolvConf(s *bufio.Scanner) string {
	var b strings.Builder
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) < 2 {
				continue
			}
			ip := net.ParseIP(strings.Split(f[1], "%")[0])
			if ip == nil || ip.IsLoopback() {
				continue
			}
		case "search", "domain", "options":
		default:
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}
