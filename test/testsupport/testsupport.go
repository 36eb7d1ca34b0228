// Package testsupport holds small helpers shared by tests that run the
// project's commands as processes.
package testsupport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"testing"
	"time"
)

// GoBuild compiles the given packages (import paths of main packages) with
// cgo disabled into a temporary folder and returns the folder; each binary
// is named after the last element of its import path. The test is skipped
// when no go tool is on PATH (go test puts GOROOT/bin there).
func GoBuild(t testing.TB, pkgs ...string) string {
	t.Helper()
	return goBuild(t, nil, pkgs)
}

// GoBuildWithVCS is GoBuild with -buildvcs=auto, whatever GOFLAGS says: the
// go command records the version control state (vcs.revision,
// vcs.modified) and derives the main module's version from it, as a plain
// go build in a checkout does by default.
func GoBuildWithVCS(t testing.TB, pkgs ...string) string {
	t.Helper()
	return goBuild(t, []string{"-buildvcs=auto"}, pkgs)
}

func goBuild(t testing.TB, flags, pkgs []string) string {
	t.Helper()
	tool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	dir := t.TempDir()
	args := append([]string{"build"}, flags...)
	args = append(args, "-o", dir+string(filepath.Separator))
	cmd := exec.Command(tool, append(args, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", pkgs, err, out)
	}
	return dir
}

// RecordedBuildInfo returns the build information that the go command
// recorded in the binary bin, as go version -m reads it.
func RecordedBuildInfo(t testing.TB, bin string) *debug.BuildInfo {
	t.Helper()
	out, err := exec.Command("go", "version", "-m", "-json", bin).Output()
	if err != nil {
		t.Fatalf("go version -m %s: %v", bin, err)
	}
	var bi debug.BuildInfo
	if err := json.Unmarshal(out, &bi); err != nil {
		t.Fatalf("go version -m -json %s: %v", bin, err)
	}
	return &bi
}

// SyncBuffer collects output written by other goroutines or processes and
// can be read while they write.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreeAddr returns a loopback address on which nothing listens now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return FreeAddrs(t, 1)[0]
}

// FreeAddrs returns n distinct loopback addresses on which nothing listens
// now. All n ports are held at once while they are picked, so that the
// kernel cannot hand out one port twice, which separate FreeAddr calls
// allow.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs, release := ReserveAddrs(t, n)
	release()
	return addrs
}

// ReserveAddrs is FreeAddrs with the ports still held until release is
// called: a test that binds more ports of its own (a proxy in front of
// the processes it starts, say) does so before release, so that none of
// them lands on a reserved port. release is idempotent and also runs
// when t ends.
func ReserveAddrs(t testing.TB, n int) (addrs []string, release func()) {
	t.Helper()
	addrs, release, err := HoldAddrs(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	return addrs, release
}

// PickAddrs is FreeAddrs for a program rather than a test.
func PickAddrs(n int) ([]string, error) {
	addrs, release, err := HoldAddrs(n)
	if err != nil {
		return nil, err
	}
	release()
	return addrs, nil
}

// HoldAddrs is ReserveAddrs for a program rather than a test: the caller
// must call release.
func HoldAddrs(n int) (addrs []string, release func(), err error) {
	lns := make([]net.Listener, 0, n)
	var once sync.Once
	release = func() {
		once.Do(func() {
			for _, ln := range lns {
				_ = ln.Close()
			}
		})
	}
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("finding a free loopback port: %w", err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, release, nil
}

// Process is a program a test runs as a child process, with its standard
// output and error collected; see StartProcess.
type Process struct {
	name   string
	cmd    *exec.Cmd
	out    SyncBuffer
	exited chan struct{}
	err    error // cmd.Wait's result, set before exited is closed
}

// StartProcess starts cmd, collecting its standard output and error (see
// Output), and calls ready every 20 ms until it returns nil. The test fails
// when the process exits first or ready still fails after timeout. The
// process is killed at the end of the test unless it has exited.
func StartProcess(t testing.TB, cmd *exec.Cmd, timeout time.Duration, ready func() error) *Process {
	t.Helper()
	p := &Process{name: filepath.Base(cmd.Path), cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return p
		}
		if p.Exited() {
			t.Fatalf("%s exited (%v) before it was ready: %v\n%s", p.name, p.err, err, p.Output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v: %v\n%s", p.name, timeout, err, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Output returns what the process has written so far.
func (p *Process) Output() string { return p.out.String() }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("sending %v to %s: %v", sig, p.name, err)
	}
}

// WaitExit waits up to timeout for the process to exit and fails the test
// unless it exited with code 0.
func (p *Process) WaitExit(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v\n%s", p.name, timeout, p.Output())
	}
	if p.err != nil {
		t.Fatalf("%s: %v\n%s", p.name, p.err, p.Output())
	}
}

// Terminate sends SIGTERM and expects a clean exit (code 0) within timeout.
func (p *Process) Terminate(t testing.TB, timeout time.Duration) {
	t.Helper()
	p.Signal(t, syscall.SIGTERM)
	p.WaitExit(t, timeout)
}
