package cgroups

import (
	"bufio"
	"bytes"
	"fmt"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// Controllers dabba sets limits with.
const (
	Memory = "memory"
	Pids   = "pids"
	CPU    = "cpu"
)

// membership is one line of /proc/<pid>/cgroup: the hierarchy's controllers
// (none for the v2 line "0::/path") and the process's cgroup in it, relative
// to the cgroup namespace's root.
type membership struct {
	id          int
	controllers []string
	path        string
}

// parseProcCgroup parses /proc/<pid>/cgroup.
func parseProcCgroup(b []byte) ([]membership, error) {
	var out []membership
	s := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; s.Scan(); n++ {
		line := s.Text()
		if line == "" {
			continue
		}
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("/proc/self/cgroup line %d %q: want hierarchy-id:controllers:path", n, line)
		}
		id, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("/proc/self/cgroup line %d %q: bad hierarchy id", n, line)
		}
		p := strings.TrimSuffix(f[2], " (deleted)")
		if !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("/proc/self/cgroup line %d %q: path is not absolute", n, line)
		}
		m := membership{id: id, path: path.Clean(p)}
		if f[1] != "" {
			m.controllers = strings.Split(f[1], ",")
		}
		out = append(out, m)
	}
	return out, s.Err()
}

// cgroupMount is a cgroup or cgroup2 filesystem from /proc/self/mountinfo.
type cgroupMount struct {
	v2          bool
	root        string   // the cgroup the mount shows at its mount point
	point       string   // where it is mounted
	controllers []string // v1: from the super options; v2: none recorded here
}

// parseMountinfo returns the cgroup mounts of /proc/<pid>/mountinfo.
func parseMountinfo(b []byte) ([]cgroupMount, error) {
	var out []cgroupMount
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; s.Scan(); n++ {
		line := s.Text()
		if line == "" {
			continue
		}
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			return nil, fmt.Errorf("mountinfo line %d: no ' - ' separator", n)
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			return nil, fmt.Errorf("mountinfo line %d: too few fields", n)
		}
		var m cgroupMount
		switch qf[0] {
		case "cgroup2":
			m.v2 = true
		case "cgroup":
			for _, o := range strings.Split(qf[2], ",") {
				switch {
				case o == "rw" || o == "ro" || strings.HasPrefix(o, "release_agent=") ||
					o == "noprefix" || o == "clone_children" || o == "xattr" || o == "cpuset_v2_mode":
				default:
					// Named hierarchies (name=systemd) keep their "name=" so they
					// never match a controller.
					m.controllers = append(m.controllers, o)
				}
			}
		default:
			continue
		}
		m.root, m.point = unescapeMount(pf[3]), unescapeMount(pf[4])
		out = append(out, m)
	}
	return out, s.Err()
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// layout is where the caller's own cgroups are, per controller.
type layout struct {
	// version is 1 when the controllers dabba uses live in v1 hierarchies
	// (legacy or hybrid), 2 on the unified hierarchy.
	version int
	// own maps a controller to the directory of the caller's cgroup in the
	// hierarchy holding it. On v2 every controller maps to the same directory.
	own map[string]string
	// v2Root is the v2 mount point, "" without one.
	v2Root string
}

// detect works out the layout from /proc/self/mountinfo and /proc/self/cgroup.
// A v1 hierarchy for any of memory, pids or cpu makes the layout v1 (legacy or
// hybrid: systemd's hybrid mode leaves the unified tree without controllers);
// otherwise a cgroup2 mount makes it v2.
func detect(mountinfo, selfCgroup []byte) (*layout, error) {
	mounts, err := parseMountinfo(mountinfo)
	if err != nil {
		return nil, err
	}
	members, err := parseProcCgroup(selfCgroup)
	if err != nil {
		return nil, err
	}
	l := &layout{own: map[string]string{}}
	for _, c := range []string{Memory, Pids, CPU} {
		m, ok := findV1Mount(mounts, c)
		if !ok {
			continue
		}
		mem, ok := findMembership(members, c)
		if !ok {
			return nil, fmt.Errorf("the %s controller is mounted at %s but /proc/self/cgroup has no line for it", c, m.point)
		}
		dir, err := ownDir(m, mem.path)
		if err != nil {
			return nil, fmt.Errorf("%s controller: %w", c, err)
		}
		l.version = 1
		l.own[c] = dir
	}
	if l.version == 1 {
		return l, nil
	}
	for _, m := range mounts {
		if !m.v2 {
			continue
		}
		mem, ok := findMembership(members, "")
		if !ok {
			return nil, fmt.Errorf("cgroup2 is mounted at %s but /proc/self/cgroup has no 0::/path line", m.point)
		}
		dir, err := ownDir(m, mem.path)
		if err != nil {
			continue // another cgroup2 mount may show our cgroup
		}
		l.version, l.v2Root = 2, m.point
		for _, c := range []string{Memory, Pids, CPU} {
			l.own[c] = dir
		}
		return l, nil
	}
	return nil, fmt.Errorf("no cgroup filesystem holding memory, pids or cpu is mounted (see /proc/self/mountinfo): mount cgroup2 on /sys/fs/cgroup")
}

// findV1Mount finds a v1 hierarchy with controller c. The first mount wins;
// the same hierarchy may be mounted at several places.
func findV1Mount(mounts []cgroupMount, c string) (cgroupMount, bool) {
	for _, m := range mounts {
		if m.v2 {
			continue
		}
		for _, x := range m.controllers {
			if x == c {
				return m, true
			}
		}
	}
	return cgroupMount{}, false
}

// findMembership finds the /proc/self/cgroup line for controller c, or the
// v2 line (hierarchy 0, no controllers) when c is "".
func findMembership(members []membership, c string) (membership, bool) {
	for _, m := range members {
		if c == "" {
			if m.id == 0 && len(m.controllers) == 0 {
				return m, true
			}
			continue
		}
		for _, x := range m.controllers {
			if x == c {
				return m, true
			}
		}
	}
	return membership{}, false
}

// ownDir maps a cgroup path from /proc/self/cgroup onto the mount: the mount
// shows cgroup m.root at m.point, so p must be m.root or below it.
func ownDir(m cgroupMount, p string) (string, error) {
	root := path.Clean(m.root)
	if root == "/" {
		return filepath.Join(m.point, p), nil
	}
	if p == root {
		return m.point, nil
	}
	if rel, ok := strings.CutPrefix(p, root+"/"); ok {
		return filepath.Join(m.point, rel), nil
	}
	return "", fmt.Errorf("own cgroup %s is not visible under the mount at %s (which shows %s)", p, m.point, m.root)
}
