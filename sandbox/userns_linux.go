package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// userNSReadyFD is the pipe a RunInUserNS child waits on for its id maps.
const userNSReadyFD = 3

// RunInUserNS runs cmd in a new user and mount namespace whose ids are
// mapped by maps, as root of that namespace, and waits for it. The program
// cmd runs must call EnterUserNS first. It is how files are made or removed
// with the container's ids (layer extraction, removal of trees owned by
// subordinate ids).
func RunInUserNS(cmd *exec.Cmd, maps *IDMaps) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	defer w.Close()
	if len(cmd.ExtraFiles) > 0 {
		return errors.New("RunInUserNS: cmd.ExtraFiles must be empty")
	}
	cmd.ExtraFiles = []*os.File{r}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWUSER | unix.CLONE_NEWNS
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s in a user namespace: %w", cmd.Path, err)
	}
	r.Close()
	if err := WriteIDMaps(cmd.Process.Pid, maps); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	w.Write([]byte{1})
	w.Close()
	return cmd.Wait()
}

// userNSEnv marks the second stage of a RunInUserNS child.
const userNSEnv = "_DABBA_USERNS_MAPPED"

// EnterUserNS is the first call of a program run by RunInUserNS: it waits
// for the id maps, re-executes the program (capabilities are lost at the
// execve that started it, before its uid was mapped; execve as uid 0 of the
// namespace gives them back), and then becomes root of the namespace. It
// returns only in the re-executed program, or on failure.
func EnterUserNS() error {
	if os.Getenv(userNSEnv) != "1" {
		f := os.NewFile(userNSReadyFD, "userns-ready")
		b := make([]byte, 1)
		if _, err := io.ReadFull(f, b); err != nil {
			return fmt.Errorf("waiting for the id maps: %w (is this process started by dabba?)", err)
		}
		f.Close()
		err := unix.Exec("/proc/self/exe", os.Args, append(os.Environ(), userNSEnv+"=1"))
		return fmt.Errorf("re-executing /proc/self/exe: %w", err)
	}
	os.Unsetenv(userNSEnv)
	if err := unix.Setresgid(0, 0, 0); err != nil {
		return fmt.Errorf("setresgid 0: %w", err)
	}
	if err := unix.Setresuid(0, 0, 0); err != nil {
		return fmt.Errorf("setresuid 0: %w", err)
	}
	if s, err := os.ReadFile("/proc/self/setgroups"); err == nil && string(s) != "deny\n" {
		unix.Setgroups(nil)
	}
	return nil
}
