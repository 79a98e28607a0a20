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
	// Its uid is not mapped yet at its execve: the ambient set keeps its
	// capabilities across it (EnterUserNS).
	cmd.SysProcAttr.AmbientCaps = allCaps()
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

// EnterUserNS is the first call of a program run by RunInUserNS: it waits
// for the id maps and becomes root of the namespace. The program started
// with every capability ambient (RunInUserNS), which kept them across the
// execve made before its uid was mapped (as root of the namespace it has
// them all anyway).
func EnterUserNS() error {
	f := os.NewFile(userNSReadyFD, "userns-ready")
	b := make([]byte, 1)
	if _, err := io.ReadFull(f, b); err != nil {
		return fmt.Errorf("waiting for the id maps: %w (is this process started by dabba?)", err)
	}
	f.Close()
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
