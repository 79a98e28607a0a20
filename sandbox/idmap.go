package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
)

// IDMapping maps Size ids from ContainerID inside to HostID outside, as one
// line of /proc/PID/uid_map.
type IDMapping struct {
	ContainerID, HostID, Size int
}

// IDMaps are the uid and gid maps of a container's user namespace.
type IDMaps struct {
	UID, GID []IDMapping
	// Helpers means the maps need newuidmap and newgidmap (they cover
	// subordinate ids the caller cannot map alone).
	Helpers bool
	// Single means only the caller's own ids are mapped (to 0): setgroups is
	// denied, chown to other ids fails inside.
	Single bool
}

// ErrNoSubIDs is wrapped by errors about missing subordinate id ranges.
var ErrNoSubIDs = errors.New("sandbox: no subordinate id range")

// SubIDRange is one line of /etc/subuid or /etc/subgid for a user.
type SubIDRange struct {
	Start, Count int
}

// ParseSubIDs returns the ranges of r (the format of /etc/subuid) that belong
// to the user name or to the numeric uid.
func ParseSubIDs(r io.Reader, name string, uid int) ([]SubIDRange, error) {
	var out []SubIDRange
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 || (f[0] != name && f[0] != strconv.Itoa(uid)) {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		count, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || start < 0 || count <= 0 {
			continue
		}
		out = append(out, SubIDRange{start, count})
	}
	return out, s.Err()
}

func readSubIDs(file, name string, uid int) ([]SubIDRange, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := ParseSubIDs(f, name, uid)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	if len(r) == 0 {
		return nil, fmt.Errorf("%w for %s in %s", ErrNoSubIDs, name, file)
	}
	return r, nil
}

// rangeMaps is the map of a caller with subordinate ranges: 0 is the caller,
// 1.. are the ranges in order.
func rangeMaps(own int, ranges []SubIDRange) []IDMapping {
	m := []IDMapping{{0, own, 1}}
	next := 1
	for _, r := range ranges {
		m = append(m, IDMapping{next, r.Start, r.Count})
		next += r.Count
	}
	return m
}

// ResolveIDMaps chooses the id maps for the calling user. Real root gets the
// identity map. Others get their subordinate ranges from /etc/subuid and
// /etc/subgid through newuidmap/newgidmap; when that is impossible, or single
// is true, the single-id map, and warning says what is lost and how to fix it
// (warning is "" when single was asked for or nothing is lost).
func ResolveIDMaps(single bool) (maps *IDMaps, warning string) {
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		full := []IDMapping{{0, 0, 1<<32 - 1}}
		return &IDMaps{UID: full, GID: full}, ""
	}
	singleMaps := &IDMaps{UID: []IDMapping{{0, uid, 1}}, GID: []IDMapping{{0, gid, 1}}, Single: true}
	if single {
		return singleMaps, ""
	}
	why := func(reason string) (*IDMaps, string) {
		return singleMaps, "warning: " + reason + "; running with a single id (files of other owners show as nobody, chown and setgroups fail inside): " +
			"install the uidmap package and give the user ranges in /etc/subuid and /etc/subgid (usermod --add-subuids/--add-subgids), or pass --single-id to silence this"
	}
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	for _, h := range []string{"newuidmap", "newgidmap"} {
		p, err := exec.LookPath(h)
		if err != nil {
			return why(h + " not found")
		}
		if !privilegedHelper(p) {
			return why(p + " is neither setuid root nor has file capabilities")
		}
	}
	us, err := readSubIDs("/etc/subuid", name, uid)
	if err != nil {
		return why(fmt.Sprintf("no subordinate uid range for %s in /etc/subuid", name))
	}
	gs, err := readSubIDs("/etc/subgid", name, uid)
	if err != nil {
		return why(fmt.Sprintf("no subordinate gid range for %s in /etc/subgid", name))
	}
	return &IDMaps{UID: rangeMaps(uid, us), GID: rangeMaps(gid, gs), Helpers: true}, ""
}

// privilegedHelper reports whether p can map ids for others: setuid root, or
// file capabilities (security.capability) as some distributions ship it.
func privilegedHelper(p string) bool {
	fi, err := os.Stat(p)
	if err != nil {
		return false
	}
	if fi.Mode()&os.ModeSetuid != 0 {
		return true
	}
	return hasFileCaps(p)
}

// Size is the number of ids mapped.
func (m *IDMaps) Size() int {
	n := 0
	for _, e := range m.UID {
		n += e.Size
	}
	return n
}

// HostUID returns the host uid of container uid id, or -1.
func (m *IDMaps) HostUID(id int) int { return lookupMap(m.UID, id) }

// HostGID returns the host gid of container gid id, or -1.
func (m *IDMaps) HostGID(id int) int { return lookupMap(m.GID, id) }

func lookupMap(m []IDMapping, id int) int {
	for _, e := range m {
		if id >= e.ContainerID && id-e.ContainerID < e.Size {
			return e.HostID + id - e.ContainerID
		}
	}
	return -1
}

func mapArgs(m []IDMapping) []string {
	var a []string
	for _, e := range m {
		a = append(a, strconv.Itoa(e.ContainerID), strconv.Itoa(e.HostID), strconv.Itoa(e.Size))
	}
	return a
}

func mapText(m []IDMapping) string {
	var b strings.Builder
	for _, e := range m {
		fmt.Fprintf(&b, "%d %d %d\n", e.ContainerID, e.HostID, e.Size)
	}
	return b.String()
}

// WriteIDMaps writes the maps of the user namespace of process pid, which
// must be waiting for them.
func WriteIDMaps(pid int, m *IDMaps) error {
	if m.Helpers {
		for _, h := range []struct {
			bin string
			m   []IDMapping
		}{{"newuidmap", m.UID}, {"newgidmap", m.GID}} {
			args := append([]string{strconv.Itoa(pid)}, mapArgs(h.m)...)
			out, err := exec.Command(h.bin, args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s %s: %w: %s (check /etc/subuid and /etc/subgid, or run with --single-id)",
					h.bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			}
		}
		return nil
	}
	dir := fmt.Sprintf("/proc/%d/", pid)
	if m.Single {
		if err := os.WriteFile(dir+"setgroups", []byte("deny"), 0); err != nil {
			return fmt.Errorf("writing %ssetgroups: %w", dir, err)
		}
	}
	if err := os.WriteFile(dir+"uid_map", []byte(mapText(m.UID)), 0); err != nil {
		return fmt.Errorf("writing %suid_map: %w", dir, err)
	}
	if err := os.WriteFile(dir+"gid_map", []byte(mapText(m.GID)), 0); err != nil {
		return fmt.Errorf("writing %sgid_map: %w", dir, err)
	}
	return nil
}
