package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// cleanStale removes what an earlier run of the harness left when it was
// killed without a chance to clean up (kill -9, a crash): its network
// namespace and veth (named dabba-bench-PID, dbbPIDh), its tmpfs (WORK/
// tmpfs-PID) and the processes its runs left (podman's pause process, known
// by the runtime directory on that tmpfs), each only when no process PID is
// alive any more.
func cleanStale(work string, uid int) {
	alive := func(pid int) bool {
		err := syscall.Kill(pid, 0)
		return err == nil || err == syscall.EPERM
	}
	nss, _ := filepath.Glob("/run/netns/dabba-bench-*")
	for _, p := range nss {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(p), "dabba-bench-"))
		if err != nil || alive(pid) {
			continue
		}
		veth := fmt.Sprintf("dbb%dh", pid%10000000)
		if _, err := os.Stat("/sys/class/net/" + veth); err == nil {
			exec.Command("ip", "link", "del", veth).Run()
		}
		if out, err := exec.Command("ip", "netns", "del", filepath.Base(p)).CombinedOutput(); err != nil {
			slog.Warn("removing a stale network namespace", "netns", filepath.Base(p), "err", strings.TrimSpace(string(out)))
			continue
		}
		slog.Info("removed the network namespace of an earlier run", "netns", filepath.Base(p))
	}
	dirs, _ := filepath.Glob(filepath.Join(work, "tmpfs-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "tmpfs-"))
		if err != nil || alive(pid) {
			continue
		}
		killByRuntimeDir(uid, filepath.Join(d, "xdg-runtime"))
		syscall.Unmount(d, syscall.MNT_DETACH)
		if err := os.RemoveAll(d); err != nil {
			slog.Warn("removing a stale tmpfs directory", "dir", d, "err", err)
			continue
		}
		slog.Info("removed the tmpfs of an earlier run", "dir", d)
	}
}
