//go:build unix

package kubebin

import (
	"errors"
	"os"
	"syscall"
)

// tryLock takes an exclusive flock on f without blocking and reports whether
// it got it. flock locks belong to the open file, so two opens of the lock
// file exclude each other within one process too.
func tryLock(f *os.File) (bool, error) {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		default:
			return false, err
		}
	}
}

func unlock(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) // closing f releases the lock too
}
