package hatest

import "syscall"

// sysProcAttr kills a Coordinator when the thread that started it exits,
// so that none outlives a test binary that dies without its cleanups.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
