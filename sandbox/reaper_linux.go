package sandbox

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// reap runs the command as a child of this process (PID 1 of the container),
// forwards the signals it receives to it, reaps every process that ends
// inside, and returns the command's status once it ended; the kernel then
// kills what is left in the pid namespace.
func (c *child) reap(path string) *failure {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, append([]os.Signal{unix.SIGCHLD}, forwarded...)...)
	attr := &syscall.ProcAttr{
		Env:   c.env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setsid: c.cc.TTY, Setctty: c.cc.TTY, Ctty: 0},
	}
	pid, err := syscall.ForkExec(path, c.cc.Args, attr)
	if err != nil {
		return execFailure(c.cc.Args[0], err)
	}
	// The command runs: the parent reads EOF on the handshake.
	c.sock.f.Close()
	for s := range sigs {
		if s != unix.SIGCHLD {
			unix.Kill(pid, s.(syscall.Signal))
			continue
		}
		for {
			var ws unix.WaitStatus
			wpid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil || wpid <= 0 {
				break
			}
			if wpid == pid {
				code := ws.ExitStatus()
				if ws.Signaled() {
					code = 128 + int(ws.Signal())
				}
				os.Exit(code)
			}
		}
	}
	return nil
}
