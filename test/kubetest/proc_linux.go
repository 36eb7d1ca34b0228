package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
)

// sysProcAttr kills the process when the thread that started it exits.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// watchdogScript waits for end of file on its standard input, then sends
// SIGTERM to the process ids given as arguments.
const watchdogScript = `read -r _; kill -TERM "$@" 2>/dev/null`

// guardOrphans protects against the processes that envtest started for this
// test outliving the test binary: envtest gives them no parent-death signal,
// so a test binary that dies without running its cleanups (a -timeout panic,
// SIGKILL) would leave them running. It finds the children of this process
// that have one of args on their command line and starts a watchdog shell
// whose standard input is a pipe that only this process writes to; when this
// process dies the pipe closes and the watchdog terminates them. The returned
// func stops the watchdog; call it once the processes have been stopped.
func guardOrphans(t testing.TB, args ...string) (stop func()) {
	t.Helper()
	pids, err := childrenWith(args)
	if err != nil {
		t.Fatalf("kubetest: listing the control-plane processes: %v", err)
	}
	if len(pids) != len(args) {
		t.Fatalf("kubetest: found %d control-plane processes (%v), want %d", len(pids), pids, len(args))
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", watchdogScript, "kubetest-watchdog"}, pids...)...)
	cmd.Stdin = r
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		t.Fatalf("kubetest: starting the watchdog: %v", err)
	}
	return func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // killed: the error says so
		w.Close()
	}
}

// childrenWith returns the ids of the child processes of this process that
// have one of args as an argument.
func childrenWith(args []string) ([]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// The fields after the parenthesised command name: state, ppid, …
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := bytes.Fields(stat[i+1:])
		if len(fields) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(string(fields[1])); err != nil || ppid != self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range bytes.Split(cmdline, []byte{0}) {
			if slices.Contains(args, string(arg)) {
				pids = append(pids, e.Name())
				break
			}
		}
	}
	return pids, nil
}

// killChildren sends SIGKILL to the child processes of this process that
// have one of args as an argument.
func killChildren(args ...string) error {
	pids, err := childrenWith(args)
	if err != nil {
		return err
	}
	for _, p := range pids {
		pid, err := strconv.Atoi(p)
		if err != nil {
			return err
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("killing process %d: %w", pid, err)
		}
	}
	return nil
}
