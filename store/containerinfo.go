package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ContainerInfo is what the dabba process running a container records
// about it in containers/<id>/container.json (WriteContainerInfo), for
// `dabba ps` and `dabba inspect`. It lives as long as the container's
// directory.
type ContainerInfo struct {
	ID   string `json:"Id"`
	Name string `json:"Name,omitempty"`
	// Image is the image as the user named it (or the directory of
	// `--rootfs DIR`); ImageID its IMAGE ID (config digest hex), when known.
	Image   string `json:"Image"`
	ImageID string `json:"ImageId,omitempty"`
	// Rootfs is how the container's root is made: "fuse" (the image
	// served by dabba-fs), "overlay" (extracted layers under kernel
	// overlayfs), "dir" (a directory) or "lazy" (fuse, fetched as read).
	Rootfs string `json:"Rootfs"`
	// Command is the container's argv (entrypoint and command resolved).
	Command []string  `json:"Command"`
	Created time.Time `json:"Created"`
	// PID is the process id of the dabba process running the container.
	PID int `json:"Pid"`
}

// containerInfoFile is the name of a container's record in its directory.
const containerInfoFile = "container.json"

// nameLock is the name in locks/ of a container name's lock.
func nameLock(name string) string { return "name-" + name }

// minIDPrefix is the shortest container id prefix LookupContainer accepts,
// as podman and for image ids (isShortID): shorter ones match too much.
const minIDPrefix = 3

// kindError is an error with its own message that errors.Is also matches
// against a broader sentinel (kind), without the sentinel's text.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

var (
	// ErrNoContainer reports a container that is not running (or not
	// known). It also matches ErrNotFound.
	ErrNoContainer error = &kindError{"store: no such running container", ErrNotFound}
	// errAmbiguousContainer reports an id prefix matching several running
	// containers; it matches ErrAmbiguous.
	errAmbiguousContainer error = &kindError{"store: ambiguous container ID", ErrAmbiguous}
	// ErrNameInUse reports a container name that a running container
	// holds (ClaimName).
	ErrNameInUse = errors.New("store: container name in use")
)

// nameInUseError is ClaimName's error: it says who holds the name.
type nameInUseError struct{ name, holder string }

func (e *nameInUseError) Error() string {
	if e.holder == "" {
		return fmt.Sprintf("the name %q is already used by a running container: choose another name", e.name)
	}
	return fmt.Sprintf("the name %q is already used by running container %s: choose another name", e.name, e.holder)
}

func (e *nameInUseError) Is(target error) bool { return target == ErrNameInUse }

// WriteContainerInfo records info for `dabba ps` and `dabba inspect`,
// atomically, as containers/<info.ID>/container.json. The directory must
// have been made by this process (ContainerDir), which holds the
// container's lock.
func (s *Store) WriteContainerInfo(info ContainerInfo) error {
	if err := checkContainerID(info.ID); err != nil {
		return err
	}
	s.mu.Lock()
	mine := s.containers[info.ID] != nil
	s.mu.Unlock()
	if !mine {
		return fmt.Errorf("recording container %s: its directory was not made by this process (call ContainerDir first)", info.ID)
	}
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("recording container %s: %w", info.ID, err)
	}
	return s.writeFileAtomic(filepath.Join(s.containerPath(info.ID), containerInfoFile), append(b, '\n'))
}

// Containers returns the running containers (those whose dabba holds
// their lock) that recorded themselves with WriteContainerInfo, oldest
// first. It never holds a container's lock: it tries a shared lock and
// drops it at once when it gets it, the container being dead. A container
// between ContainerDir and WriteContainerInfo is not listed yet. It
// returns the containers it could read, and an error naming each record it
// could not.
func (s *Store) Containers() ([]ContainerInfo, error) {
	ents, err := os.ReadDir(filepath.Join(s.root, "containers"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing containers: %w", err)
	}
	var out []ContainerInfo
	var errs []error
	for _, e := range ents {
		id := e.Name()
		if checkContainerID(id) != nil {
			continue // not made by ContainerDir
		}
		running, err := s.containerRunning(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !running {
			continue
		}
		p := filepath.Join(s.containerPath(id), containerInfoFile)
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // starting, or just removed
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", id, err))
			continue
		}
		var info ContainerInfo
		if err := json.Unmarshal(b, &info); err != nil {
			errs = append(errs, fmt.Errorf("container %s: reading %s: %w", id, p, err))
			continue
		}
		if info.ID != id {
			errs = append(errs, fmt.Errorf("container %s: %s records id %q", id, p, info.ID))
			continue
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b ContainerInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, errors.Join(errs...)
}

// containerRunning reports whether some process holds the container's lock.
// It does not create the lock file (no lock file: dead), and a shared lock
// it gets is dropped at once: it only conflicts, for that instant, with a
// sweep of dead containers, which then leaves that one for the next sweep.
func (s *Store) containerRunning(id string) (bool, error) {
	return heldByOther(s.lockPath(containerLock(id)))
}

// heldByOther reports whether another open file description holds an
// exclusive flock(2) on path. A missing file is not held.
func heldByOther(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("opening lock %s: %w", path, err)
	}
	defer f.Close() // drops a lock taken below
	switch err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err {
	case nil:
		return false, nil
	case unix.EWOULDBLOCK:
		return true, nil
	default:
		return false, fmt.Errorf("locking %s: %w", path, err)
	}
}

// ClaimName reserves a container name for the container id until release
// is called or the process ends however it ends (the kernel drops the
// flock(2) on locks/name-<name>.lock, which records the id of its holder).
// A name a running container holds gives an error wrapping ErrNameInUse
// that names that container; a name whose holder died is free again.
func (s *Store) ClaimName(name, id string) (release func(), err error) {
	if err := checkContainerID(name); err != nil {
		return nil, fmt.Errorf("container name %q: want letters, digits, '_', '.', '-', starting with a letter or digit", name)
	}
	if err := checkContainerID(id); err != nil {
		return nil, err
	}
	path := s.lockPath(nameLock(name))
	l, ok, err := tryLockStable(path, true)
	if err != nil {
		return nil, fmt.Errorf("container name %q: %w", name, err)
	}
	if !ok {
		return nil, &nameInUseError{name: name, holder: nameHolder(path)}
	}
	if err := l.f.Truncate(0); err == nil {
		_, err = l.f.WriteAt([]byte(id+"\n"), 0)
	}
	if err != nil {
		l.Unlock()
		return nil, fmt.Errorf("container name %q: recording its holder in %s: %w", name, path, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			// Still holding it: nobody can be using the file being
			// unlinked (tryLockStable notices an unlinked file and takes
			// the new one).
			os.Remove(path)
			l.Unlock()
		})
	}, nil
}

// nameHolder reads the short id of the container holding a name's lock;
// "" when it cannot tell (the holder has locked it but not yet written
// its id, or has just released it).
func nameHolder(path string) string {
	for range 5 {
		b, err := os.ReadFile(path)
		if err != nil {
			return ""
		}
		if id := strings.TrimSpace(string(b)); checkContainerID(id) == nil {
			return shortID(id)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return ""
}

// shortID is the first 12 characters of a container id, as `dabba ps`
// shows it.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// LookupContainer finds a running container by full id, name, or unique id
// prefix of at least 3 characters (in that order, as podman). Errors wrap
// ErrNoContainer (so ErrNotFound), or ErrAmbiguous for a prefix that
// matches several containers.
func (s *Store) LookupContainer(idOrName string) (*ContainerInfo, error) {
	cs, err := s.Containers()
	if err != nil && len(cs) == 0 {
		return nil, fmt.Errorf("container %q: %w", idOrName, err)
	}
	for i := range cs {
		if cs[i].ID == idOrName {
			return &cs[i], nil
		}
	}
	for i := range cs {
		if cs[i].Name != "" && cs[i].Name == idOrName {
			return &cs[i], nil
		}
	}
	var found []int
	if len(idOrName) >= minIDPrefix {
		for i := range cs {
			if strings.HasPrefix(cs[i].ID, idOrName) {
				found = append(found, i)
			}
		}
	}
	switch len(found) {
	case 1:
		return &cs[found[0]], nil
	case 0:
		if err != nil {
			return nil, fmt.Errorf("container %q: %w (see `dabba ps`); some records could not be read: %w", idOrName, ErrNoContainer, err)
		}
		return nil, fmt.Errorf("container %q: %w (see `dabba ps`)", idOrName, ErrNoContainer)
	}
	return nil, fmt.Errorf("container id %q: %w: it matches %d running containers; give more characters", idOrName, errAmbiguousContainer, len(found))
}
