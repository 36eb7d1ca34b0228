//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package store

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

// lockDir fails: without flock this platform cannot keep two Coordinators
// from using the same directory, so the file store refuses to open.
func lockDir(path string) (*os.File, error) {
	return nil, fmt.Errorf("lock %s: %w", path,
		errors.New("exclusive directory locking is not implemented on "+runtime.GOOS))
}

// lockDirShared fails like lockDir: a directory that cannot be locked is
// not read either.
func lockDirShared(path string) (*os.File, error) {
	return lockDir(path)
}
