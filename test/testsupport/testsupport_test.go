package testsupport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary plays a server when this variable names an address to
// listen on: it stops on SIGTERM with the exit code in exitCodeEnv.
const (
	listenEnv   = "TESTSUPPORT_TEST_LISTEN"
	exitCodeEnv = "TESTSUPPORT_TEST_EXIT_CODE"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(listenEnv); addr != "" {
		os.Exit(serveUntilSIGTERM(addr))
	}
	os.Exit(m.Run())
}

func serveUntilSIGTERM(addr string) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("listening")
	<-sigs
	_ = lis.Close()
	fmt.Println("stopped")
	code := 0
	_, _ = fmt.Sscan(os.Getenv(exitCodeEnv), &code)
	return code
}

// helperProcess returns a command running the test binary as a server on
// addr that exits with code after SIGTERM.
func helperProcess(addr string, code int) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), listenEnv+"="+addr, fmt.Sprintf("%s=%d", exitCodeEnv, code))
	return cmd
}

func dial(addr string) func() error {
	return func() error {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			_ = conn.Close()
		}
		return err
	}
}

// fatalRecorder records the message of Fatalf instead of failing the test.
// Run the code under test in its own goroutine: Fatalf ends it.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fatalRecorder) run(fn func(testing.TB)) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msg
}

func TestProcessTerminate(t *testing.T) {
	addr := FreeAddr(t)
	p := StartProcess(t, helperProcess(addr, 0), 10*time.Second, dial(addr))
	if p.Exited() || !strings.Contains(p.Output(), "listening") {
		t.Fatalf("exited %v, output %q", p.Exited(), p.Output())
	}
	p.Terminate(t, 10*time.Second)
	if !p.Exited() || !strings.Contains(p.Output(), "stopped") {
		t.Fatalf("exited %v, output %q", p.Exited(), p.Output())
	}
	if err := dial(addr)(); err == nil {
		t.Fatal("still listening")
	}
}

func TestProcessFailures(t *testing.T) {
	t.Run("exit code", func(t *testing.T) {
		addr := FreeAddr(t)
		p := StartProcess(t, helperProcess(addr, 3), 10*time.Second, dial(addr))
		msg := (&fatalRecorder{TB: t}).run(func(tb testing.TB) { p.Terminate(tb, 10*time.Second) })
		if !strings.Contains(msg, "exit status 3") || !strings.Contains(msg, "stopped") {
			t.Fatalf("message %q", msg)
		}
	})
	t.Run("exit before ready", func(t *testing.T) {
		// Listening on a port that is taken fails at once.
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		never := func() error { return errors.New("not yet") }
		msg := (&fatalRecorder{TB: t}).run(func(tb testing.TB) {
			StartProcess(tb, helperProcess(lis.Addr().String(), 0), 10*time.Second, never)
		})
		if !strings.Contains(msg, "exited (exit status 1) before it was ready: not yet") {
			t.Fatalf("message %q", msg)
		}
	})
	t.Run("not ready in time", func(t *testing.T) {
		// The process still runs; the cleanup StartProcess registered
		// kills it.
		never := func() error { return errors.New("not yet") }
		msg := (&fatalRecorder{TB: t}).run(func(tb testing.TB) {
			StartProcess(tb, helperProcess(FreeAddr(t), 0), 100*time.Millisecond, never)
		})
		if !strings.Contains(msg, "not ready within 100ms: not yet") {
			t.Fatalf("message %q", msg)
		}
	})
	t.Run("no exit in time", func(t *testing.T) {
		addr := FreeAddr(t)
		p := StartProcess(t, helperProcess(addr, 0), 10*time.Second, dial(addr))
		msg := (&fatalRecorder{TB: t}).run(func(tb testing.TB) { p.WaitExit(tb, 50*time.Millisecond) })
		if !strings.Contains(msg, "did not exit within 50ms") {
			t.Fatalf("message %q", msg)
		}
	})
}

func TestGoBuild(t *testing.T) {
	dir := GoBuild(t, "github.com/marblemesh/marblemesh/cmd/coordinator")
	out, err := exec.Command(filepath.Join(dir, "coordinator"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "coordinator ") {
		t.Fatalf("built binary: %q, %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "marble-injector")); err == nil {
		t.Fatal("built a package that was not asked for")
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				fmt.Fprint(&b, "x")
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Fatalf("%d bytes, want 800", got)
	}
}

func TestFreeAddrsDistinct(t *testing.T) {
	addrs := FreeAddrs(t, 16)
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("%s handed out twice in %v", a, addrs)
		}
		seen[a] = true
	}
}

func TestReserveAddrsHoldsPorts(t *testing.T) {
	addrs, release := ReserveAddrs(t, 2)
	for _, a := range addrs {
		if ln, err := net.Listen("tcp", a); err == nil {
			_ = ln.Close()
			t.Fatalf("%s could be bound while reserved", a)
		}
	}
	release()
	release() // idempotent
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s still held after release: %v", a, err)
		}
		_ = ln.Close()
	}
}

func TestDuplicateKeys(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr string
	}{
		{`{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}`, ""},
		{`{"msg":"ready","simulation":true,"simulation":true}`, `key "simulation" appears twice in $`},
		{`{"a":{"x":1,"y":[1,{"z":1,"z":2}]}}`, `key "z" appears twice in $.a.y[1]`},
		{`{"a":1`, "EOF"},
		{`{"a":1} {}`, "data after"},
	} {
		err := DuplicateKeys([]byte(tc.in))
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("DuplicateKeys(%s) = %v, want %q", tc.in, err, tc.wantErr)
		}
	}
}
