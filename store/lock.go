package store

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// fileLock is a flock(2) lock on a file in locks/. The kernel drops it when
// the process dies, so a killed pull never leaves a stale lock.
type fileLock struct {
	f *os.File
}

// lockPollInterval is how often a blocked lock attempt retries; polling
// (instead of a blocking flock) lets the caller's context cancel the wait.
const lockPollInterval = 20 * time.Millisecond

// lockFile takes a shared or exclusive lock on path, creating the file,
// waiting until the lock is free or ctx is done.
func lockFile(ctx context.Context, path string, exclusive bool) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return &fileLock{f: f}, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(lockPollInterval):
		}
	}
}

// tryLockFile is lockFile without waiting: ok is false when another holder
// has it.
func tryLockFile(path string, exclusive bool) (l *fileLock, ok bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("opening lock %s: %w", path, err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("locking %s: %w", path, err)
	}
	return &fileLock{f: f}, true, nil
}

// Unlock releases the lock.
func (l *fileLock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close() // closing the last descriptor releases the flock
		l.f = nil
	}
}

// tryLockStable is tryLockFile for lock files another process may unlink
// while they are free (GC removes the locks of dead containers): after the
// flock it checks that path still names the locked file, and starts over
// when it does not, so a holder never holds a lock on an unlinked file that
// others, opening path afresh, would not see.
func tryLockStable(path string, exclusive bool) (l *fileLock, ok bool, err error) {
	for range 100 {
		l, ok, err := tryLockFile(path, exclusive)
		if err != nil || !ok {
			return nil, ok, err
		}
		var held, named unix.Stat_t
		if err := unix.Fstat(int(l.f.Fd()), &held); err != nil {
			l.Unlock()
			return nil, false, fmt.Errorf("locking %s: %w", path, err)
		}
		if err := unix.Stat(path, &named); err == nil && named.Dev == held.Dev && named.Ino == held.Ino {
			return l, true, nil
		}
		l.Unlock() // unlinked (or replaced) meanwhile: take the new one
	}
	return nil, false, fmt.Errorf("locking %s: the lock file keeps being replaced", path)
}
