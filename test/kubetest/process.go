package kubetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// logFile is a file that a process writes its output to.
type logFile struct {
	*os.File
	path string
}

// newLogFile creates path and closes it when t ends, after the processes
// writing to it have been stopped.
func newLogFile(t testing.TB, path string) *logFile {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return &logFile{File: f, path: path}
}

// tail returns the last n lines of the log.
func (l *logFile) tail(n int) string {
	data, err := os.ReadFile(l.path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// showLogs logs the end of each log, for a test that failed.
func showLogs(t testing.TB, logs ...*logFile) {
	t.Helper()
	for _, l := range logs {
		t.Logf("kubetest: last %d lines of %s:\n%s", logTail, l.path, l.tail(logTail))
	}
}

// process is a control-plane process started by Start.
type process struct {
	name     string
	cmd      *exec.Cmd
	log      *logFile
	done     chan struct{} // closed when the process has exited
	err      error         // how it exited, set before done is closed
	stopping atomic.Bool   // set when the test stops it
}

// startProcess starts path with args, its output going to logPath, and stops
// it when t ends, reporting an exit that the test did not ask for.
//
// On Linux the process is killed if the test binary dies without running its
// cleanups (a -timeout panic, a signal). That parent-death signal is tied to
// the thread that started the process, so that thread stays locked to the
// goroutine that waits for the process.
func startProcess(t testing.TB, path, logPath string, args ...string) *process {
	t.Helper()
	p := &process{
		name: filepath.Base(path),
		log:  newLogFile(t, logPath),
		done: make(chan struct{}),
	}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout = p.log.File
	p.cmd.Stderr = p.log.File
	p.cmd.SysProcAttr = sysProcAttr()
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("kubetest: starting %s: %v", p.name, err)
	}
	t.Cleanup(func() {
		if err := p.exited(); err != nil {
			t.Errorf("kubetest: %v", err)
			showLogs(t, p.log)
			return
		}
		if err := p.stop(); err != nil {
			t.Errorf("kubetest: %v", err)
		}
	})
	return p
}

// exited returns an error when the process has exited without being asked
// to.
func (p *process) exited() error {
	select {
	case <-p.done:
		if p.stopping.Load() {
			return nil
		}
		return fmt.Errorf("%s exited unexpectedly: %w (log %s)", p.name, p.err, p.log.path)
	default:
		return nil
	}
}

// stop sends SIGTERM, then SIGKILL after stopTimeout, and waits for the
// exit.
func (p *process) stop() error {
	p.stopping.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", p.name, err)
	}
	<-p.done
	return fmt.Errorf("%s did not stop within %s of SIGTERM and was killed", p.name, stopTimeout)
}
