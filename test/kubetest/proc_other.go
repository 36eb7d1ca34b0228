//go:build !linux

package kubetest

import (
	"syscall"
	"testing"
)

// sysProcAttr has no parent-death signal outside Linux.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}

// guardOrphans does nothing outside Linux, which alone has the /proc this
// needs: there, the processes envtest started outlive a test binary that
// dies without running its cleanups.
func guardOrphans(testing.TB, ...string) (stop func()) { return func() {} }

// killChildren does nothing outside Linux: StopAPIServer then stops the
// API server with SIGTERM.
func killChildren(...string) error { return nil }
