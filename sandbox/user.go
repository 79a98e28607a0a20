package sandbox

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ExecUser is who the command runs as, resolved from a user spec.
type ExecUser struct {
	UID, GID int
	// Groups are the supplementary groups: those of /etc/group that list the
	// user by name.
	Groups []int
	// Home is the passwd entry's home, "/" without one.
	Home string
}

type passwdEntry struct {
	name     string
	uid, gid int
	home     string
}

type groupEntry struct {
	name    string
	gid     int
	members []string
}

func parsePasswd(r io.Reader) []passwdEntry {
	var out []passwdEntry
	if r == nil {
		return nil
	}
	s := bufio.NewScanner(r)
	for s.Scan() {
		f := strings.Split(s.Text(), ":")
		if len(f) < 6 || strings.HasPrefix(f[0], "#") {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, passwdEntry{f[0], uid, gid, f[5]})
	}
	return out
}

func parseGroup(r io.Reader) []groupEntry {
	var out []groupEntry
	if r == nil {
		return nil
	}
	s := bufio.NewScanner(r)
	for s.Scan() {
		f := strings.Split(s.Text(), ":")
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		gid, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		var members []string
		if len(f) > 3 && f[3] != "" {
			members = strings.Split(f[3], ",")
		}
		out = append(out, groupEntry{f[0], gid, members})
	}
	return out
}

// LookupUser resolves spec ("", name, uid, name:group, uid:gid, ...) against
// the image's /etc/passwd and /etc/group contents (either may be nil), with
// the rules of podman (runc's user lookup): a numeric uid missing from
// passwd is used as is with gid 0 and home "/", a name must exist.
func LookupUser(spec string, passwd, group io.Reader) (*ExecUser, error) {
	users := parsePasswd(passwd)
	groups := parseGroup(group)
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if hasGroup && groupPart == "" {
		return nil, fmt.Errorf("user %q: empty group after ':'", spec)
	}
	u := &ExecUser{Home: "/"}
	name := ""
	if userPart == "" {
		userPart = "0"
	}
	if id, err := strconv.Atoi(userPart); err == nil {
		if id < 0 {
			return nil, fmt.Errorf("user %q: negative uid", spec)
		}
		u.UID = id
		for _, e := range users {
			if e.uid == id {
				u.GID, u.Home, name = e.gid, e.home, e.name
				break
			}
		}
	} else {
		found := false
		for _, e := range users {
			if e.name == userPart {
				u.UID, u.GID, u.Home, name = e.uid, e.gid, e.home, e.name
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("user %q: no such user in the image's /etc/passwd: give a uid, or add the user to the image", userPart)
		}
	}
	if u.Home == "" {
		u.Home = "/"
	}
	if hasGroup {
		if id, err := strconv.Atoi(groupPart); err == nil {
			if id < 0 {
				return nil, fmt.Errorf("user %q: negative gid", spec)
			}
			u.GID = id
		} else {
			found := false
			for _, g := range groups {
				if g.name == groupPart {
					u.GID, found = g.gid, true
					break
				}
			}
			if !found {
				return nil, fmt.Errorf("group %q: no such group in the image's /etc/group: give a gid, or add the group to the image", groupPart)
			}
		}
	}
	if name != "" {
		seen := map[int]bool{u.GID: true}
		for _, g := range groups {
			for _, m := range g.members {
				if m == name && !seen[g.gid] {
					seen[g.gid] = true
					u.Groups = append(u.Groups, g.gid)
				}
			}
		}
	}
	return u, nil
}
