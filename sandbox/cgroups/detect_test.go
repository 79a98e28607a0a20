package cgroups

import (
	"maps"
	"strings"
	"testing"
)

// Samples of /proc/self/mountinfo and /proc/self/cgroup, as the kernel
// writes them on the machines they are named after.
const (
	// A sandbox VM: v1 controllers each on its own hierarchy, a cgroup2 tree
	// without controllers, the process in a memory cgroup below the root.
	mountinfoSplitV1 = `23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	cgroupSplitV1 = `9:name=systemd:/
8:pids:/
4:memory:/process_api/605b3db2d32f10dd51c1cb75f58cc427
1:cpu:/
0::/
`
	// systemd's hybrid mode (Ubuntu 20.04): cpu and cpuacct co-mounted.
	mountinfoHybrid = `25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
`
	cgroupHybrid = `12:pids:/user.slice/user-1000.slice/session-2.scope
4:memory:/user.slice/user-1000.slice/session-2.scope
3:cpu,cpuacct:/user.slice
1:name=systemd:/user.slice/user-1000.slice/session-2.scope
0::/user.slice/user-1000.slice/session-2.scope
`
	// The unified hierarchy (Debian 12, Fedora): a user's terminal.
	mountinfoV2 = `22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	cgroupV2 = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1.scope\n"
)

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo, cgroup string
		version                 int
		own                     map[string]string
	}{
		{"split v1", mountinfoSplitV1, cgroupSplitV1, 1, map[string]string{
			Memory: "/sys/fs/cgroup/memory/process_api/605b3db2d32f10dd51c1cb75f58cc427",
			Pids:   "/sys/fs/cgroup/pids",
			CPU:    "/sys/fs/cgroup/cpu",
		}},
		{"hybrid", mountinfoHybrid, cgroupHybrid, 1, map[string]string{
			Memory: "/sys/fs/cgroup/memory/user.slice/user-1000.slice/session-2.scope",
			Pids:   "/sys/fs/cgroup/pids/user.slice/user-1000.slice/session-2.scope",
			CPU:    "/sys/fs/cgroup/cpu,cpuacct/user.slice",
		}},
		{"v2", mountinfoV2, cgroupV2, 2, map[string]string{
			Memory: "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1.scope",
			Pids:   "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1.scope",
			CPU:    "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-1.scope",
		}},
		{"v2 at the root of a cgroup namespace", mountinfoV2, "0::/\n", 2, map[string]string{
			Memory: "/sys/fs/cgroup", Pids: "/sys/fs/cgroup", CPU: "/sys/fs/cgroup",
		}},
		{
			// A container's view without a cgroup namespace: the mount shows
			// the container's cgroup at the mount point.
			"v1 mount of a subtree",
			"40 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n",
			"4:memory:/docker/abc/inner\n0::/\n",
			1, map[string]string{Memory: "/sys/fs/cgroup/memory/inner"},
		},
		{
			"escaped mount point",
			`40 31 0:32 / /tmp/my\040cgroups rw - cgroup2 cgroup2 rw` + "\n",
			"0::/a b\n",
			2, map[string]string{Memory: "/tmp/my cgroups/a b", Pids: "/tmp/my cgroups/a b", CPU: "/tmp/my cgroups/a b"},
		},
		{
			// Only a named v1 hierarchy: it carries no controller, so v2 rules.
			"named v1 hierarchy beside v2",
			"27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n" + mountinfoV2,
			"1:name=systemd:/x\n0::/y\n",
			2, map[string]string{Memory: "/sys/fs/cgroup/y", Pids: "/sys/fs/cgroup/y", CPU: "/sys/fs/cgroup/y"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := detect([]byte(tc.mountinfo), []byte(tc.cgroup))
			if err != nil {
				t.Fatal(err)
			}
			if l.version != tc.version || !maps.Equal(l.own, tc.own) {
				t.Errorf("detect = v%d %v\nwant v%d %v", l.version, l.own, tc.version, tc.own)
			}
		})
	}
}

func TestDetectErrors(t *testing.T) {
	for _, tc := range []struct{ name, mountinfo, cgroup, want string }{
		{"no cgroup mounts", "23 1 0:21 / /sys rw - sysfs sysfs rw\n", "0::/\n", "no cgroup filesystem"},
		{"controller without a line", mountinfoHybrid, "0::/\n", "no line for it"},
		{"v2 without a line", mountinfoV2, "4:memory:/\n", "0::/path"},
		{"malformed cgroup line", mountinfoV2, "garbage\n", "want hierarchy-id:controllers:path"},
		{"bad hierarchy id", mountinfoV2, "x::/\n", "bad hierarchy id"},
		{"relative path", mountinfoV2, "0::rel\n", "not absolute"},
		{"malformed mountinfo", "1 2 3\n", "0::/\n", "separator"},
		{"short mountinfo", "1 2 - cgroup2\n", "0::/\n", "too few fields"},
		{"own cgroup outside the mount", "40 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
			"4:memory:/other\n", "not visible under the mount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := detect([]byte(tc.mountinfo), []byte(tc.cgroup))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("detect error %v, want one saying %q", err, tc.want)
			}
		})
	}
}
