//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package store

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockDir opens path and takes an exclusive, non-blocking flock on it. The
// lock is tied to the open file and released when it is closed or the
// process ends, so a crash never leaves a stale lock.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	return flock(f, path, syscall.LOCK_EX)
}

// lockDirShared opens path read-only, if it exists, and takes a shared,
// non-blocking flock on it: it fails with ErrLocked while a Coordinator
// holds the directory, and creates or writes nothing. A missing lock file
// (no Coordinator ever opened the directory) returns nil.
func lockDirShared(path string) (*os.File, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	return flock(f, path, syscall.LOCK_SH)
}

// flock takes a non-blocking flock of kind (LOCK_EX or LOCK_SH) on f,
// retrying when interrupted. On failure it closes f; a lock held by
// another process is ErrLocked.
func flock(f *os.File, path string, kind int) (*os.File, error) {
	var err error
	for {
		err = syscall.Flock(int(f.Fd()), kind|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
