//go:build !unix

package kubebin

import (
	"errors"
	"os"
)

// tryLock fails: the control-plane binaries are built and run on Unix only.
func tryLock(*os.File) (bool, error) {
	return false, errors.New("building the Kubernetes test binaries needs a Unix system")
}

func unlock(*os.File) {}
