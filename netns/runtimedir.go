package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// RuntimeDir is the per-user directory for dabba's sockets, the same one
// sandbox.RuntimeDir chooses: $XDG_RUNTIME_DIR/dabba when XDG_RUNTIME_DIR is
// an absolute directory owned by the caller, else /tmp/dabba-UID (nothing
// makes /run/user/UID on machines without systemd). It is created mode 0700
// (a looser mode is tightened) and must be a real directory owned by the
// caller; anything else is an error, since another user could otherwise
// place a socket there.
func RuntimeDir() (string, error) {
	uid := os.Getuid()
	if x := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(x) && ownedDir(x, uid) {
		if d, err := ensurePrivateDir(filepath.Join(x, "dabba"), uid); err == nil {
			return d, nil
		}
	}
	return ensurePrivateDir(filepath.Join(os.TempDir(), "dabba-"+strconv.Itoa(uid)), uid)
}

// ownedDir reports whether p is a real directory owned by uid.
func ownedDir(p string, uid int) bool {
	fi, err := os.Lstat(p)
	if err != nil || !fi.IsDir() {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == uid
}

// ensurePrivateDir makes p (mode 0700) or checks the one there.
func ensurePrivateDir(p string, uid int) (string, error) {
	err := os.Mkdir(p, 0o700)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("creating runtime directory %s: %w", p, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return "", fmt.Errorf("runtime directory %s: %w", p, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return "", fmt.Errorf("runtime directory %s is not a directory: remove it, or set XDG_RUNTIME_DIR", p)
	case !ok || int(st.Uid) != uid:
		return "", fmt.Errorf("runtime directory %s is owned by uid %d, not %d: remove it, or set XDG_RUNTIME_DIR", p, st.Uid, uid)
	case fi.Mode().Perm()&0o077 != 0:
		if err := os.Chmod(p, 0o700); err != nil {
			return "", fmt.Errorf("runtime directory %s has mode %o and cannot be made private: %w", p, fi.Mode().Perm(), err)
		}
	}
	return p, nil
}
