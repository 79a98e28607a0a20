package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// ErrContainerRunning reports a container directory that cannot be removed
// because the container's lock is held: its dabba process is running.
var ErrContainerRunning = errors.New("store: container is running")

// checkContainerID accepts what podman does: a letter or digit, then up
// to 127 letters, digits, '_', '.' and '-'.
func checkContainerID(id string) error {
	if !validName(id, 1, 128, isAlnum, func(c byte) bool { return isAlnum(c) || c == '_' || c == '.' || c == '-' }) {
		return fmt.Errorf("container id %q: want letters, digits, '_', '.', '-'", id)
	}
	return nil
}

func (s *Store) containerPath(id string) string { return filepath.Join(s.root, "containers", id) }

// containerLock is the name in locks/ of a container's lock.
func containerLock(id string) string { return "container-" + id }

// ContainerDir makes root/containers/<id>/ (mode 0700) and returns it. From
// then until RemoveContainerDir, or until the process ends however it ends
// (kill -9 included: the kernel drops flock(2) locks with their process),
// the process holds the container's lock, locks/container-<id>.lock. That
// is how GC and RemoveDeadContainers tell a running container, whose
// directory they never touch, from one whose dabba died. The lock is taken
// before the directory is made, so a directory whose lock is free is dead.
func (s *Store) ContainerDir(id string) (string, error) {
	if err := checkContainerID(id); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.containers[id] != nil {
		return "", fmt.Errorf("container %s: its directory is already made by this process", id)
	}
	l, ok, err := tryLockStable(s.lockPath(containerLock(id)), true)
	if err != nil {
		return "", fmt.Errorf("container %s: %w", id, err)
	}
	if !ok {
		return "", fmt.Errorf("container %s: %w (another dabba process holds it: choose another id)", id, ErrContainerRunning)
	}
	d := s.containerPath(id)
	if err := os.Mkdir(d, 0o700); err != nil {
		l.Unlock()
		if errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("container dir %s already exists, left by a dabba that died: remove it with `dabba gc`", d)
		}
		return "", fmt.Errorf("container dir %s: %w", d, err)
	}
	if s.containers == nil {
		s.containers = map[string]*fileLock{}
	}
	s.containers[id] = l
	return d, nil
}

// RemoveContainerDir removes root/containers/<id>/ and everything in it,
// using RemoveFunc for what the user cannot remove alone, and releases the
// container's lock. A container whose lock another process holds is
// running: it is left alone and the error wraps ErrContainerRunning.
func (s *Store) RemoveContainerDir(id string) error {
	if err := checkContainerID(id); err != nil {
		return err
	}
	s.mu.Lock()
	l := s.containers[id]
	delete(s.containers, id)
	s.mu.Unlock()
	if l == nil {
		// Not made by this process: only a dead container's may go.
		var ok bool
		var err error
		l, ok, err = tryLockFile(s.lockPath(containerLock(id)), true)
		if err != nil {
			return fmt.Errorf("removing container %s: %w", id, err)
		}
		if !ok {
			return fmt.Errorf("removing container %s: %w", id, ErrContainerRunning)
		}
	}
	defer l.Unlock()
	if err := s.removeTree(s.containerPath(id)); err != nil {
		return err
	}
	// Still holding it: nobody can be using the file being unlinked.
	os.Remove(s.lockPath(containerLock(id)))
	return nil
}

// RemoveDeadContainers removes the directories of containers whose dabba
// died without removing them (kill -9, a crash, a power cut): those whose
// lock is free. Running containers are not touched, nor waited for. It
// takes no store-wide lock, so `dabba run` can call it cheaply: when no
// container is dead it costs a directory read and one flock attempt per
// running container. It returns how many it removed; a directory it could
// not remove stays for the next attempt and is named in the error.
func (s *Store) RemoveDeadContainers() (removed int, err error) {
	st := &GCStats{}
	errs := s.sweepContainers(st)
	return st.Containers, errors.Join(errs...)
}

// sweepContainers removes dead containers' directories, counting them and
// their bytes in st.
func (s *Store) sweepContainers(st *GCStats) []error {
	ents, err := os.ReadDir(filepath.Join(s.root, "containers"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return []error{err}
	}
	var errs []error
	for _, e := range ents {
		id := e.Name()
		if checkContainerID(id) != nil {
			continue // not made by ContainerDir
		}
		s.mu.Lock()
		mine := s.containers[id] != nil
		s.mu.Unlock()
		if mine {
			continue
		}
		lp := s.lockPath(containerLock(id))
		l, ok, err := tryLockFile(lp, true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok {
			continue // running
		}
		p := s.containerPath(id)
		if _, err := os.Lstat(p); err != nil {
			// Removed meanwhile by another sweep.
			os.Remove(lp)
			l.Unlock()
			continue
		}
		size := treeSize(p)
		if err := s.removeTree(p); err != nil {
			l.Unlock()
			errs = append(errs, fmt.Errorf("dead container %s: %w", id, err))
			continue
		}
		os.Remove(lp)
		l.Unlock()
		slog.Debug("removed a dead container", "stage", "gc", "container", id, "bytes", size)
		st.Containers++
		st.Bytes += size
	}
	return errs
}

// sweepContainerLocks removes the lock files of containers that have no
// directory and whose lock is free (a dabba killed between taking the lock
// and making the directory, or between removing them).
func (s *Store) sweepContainerLocks() {
	ents, err := os.ReadDir(filepath.Join(s.root, "locks"))
	if err != nil {
		return
	}
	for _, e := range ents {
		id, ok := strings.CutPrefix(e.Name(), containerLock(""))
		if !ok {
			continue
		}
		if id, ok = strings.CutSuffix(id, ".lock"); !ok || checkContainerID(id) != nil {
			continue
		}
		if _, err := os.Lstat(s.containerPath(id)); err == nil {
			continue
		}
		l, ok, err := tryLockFile(s.lockPath(containerLock(id)), true)
		if err != nil || !ok {
			continue
		}
		// A ContainerDir that opened this file but has not locked it yet
		// notices the unlink (tryLockStable) and takes a new one.
		if _, err := os.Lstat(s.containerPath(id)); err != nil {
			os.Remove(s.lockPath(containerLock(id)))
		}
		l.Unlock()
	}
}
