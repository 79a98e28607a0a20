package sandbox

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// setupTTY makes a pty pair of the container's own devpts (so ttyname and
// /dev/pts/N agree inside), gives the slave to the command as fds 0-2 and
// controlling terminal, binds it on /dev/console, and sends the master to
// the parent. The descriptors are opened with open(2), not os.OpenFile, which
// would leave them non-blocking for a shell that does not expect it.
func (c *child) setupTTY() error {
	m, err := unix.Open("/dev/pts/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/pts/ptmx: %w", err)
	}
	master := os.NewFile(uintptr(m), "pty-master")
	defer master.Close()
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlocking the pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	if err != nil {
		return fmt.Errorf("pty number: %w", err)
	}
	path := fmt.Sprintf("/dev/pts/%d", n)
	s, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer unix.Close(s)
	if c.user.UID != 0 {
		if err := unix.Fchown(s, c.user.UID, -1); err != nil {
			return fmt.Errorf("chown %s to %d: %w", path, c.user.UID, err)
		}
	}
	if c.cc.TermRows > 0 && c.cc.TermCols > 0 {
		unix.IoctlSetWinsize(s, unix.TIOCSWINSZ, &unix.Winsize{Row: c.cc.TermRows, Col: c.cc.TermCols})
	}
	if err := os.WriteFile("/dev/console", nil, 0o600); err == nil {
		if err := unix.Mount(path, "/dev/console", "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding %s on /dev/console: %w", path, err)
		}
	}
	if err := c.sock.send(message{Type: msgPTY}, master); err != nil {
		return err
	}
	for fd := 0; fd <= 2; fd++ {
		if err := unix.Dup3(s, fd, 0); err != nil {
			return fmt.Errorf("dup %s to fd %d: %w", path, fd, err)
		}
	}
	if !c.cc.Init {
		// This process is a session leader (the parent set Setsid): the
		// slave becomes its controlling terminal, and the command's after exec.
		if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
			return fmt.Errorf("making %s the controlling terminal: %w", path, err)
		}
	}
	return nil
}
