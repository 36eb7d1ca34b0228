package main

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

// The test binary runs main itself when this variable is set.
const runMainEnv = "COORDINATOR_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer safe for the writer goroutine of exec.Cmd
// and the test reading it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestSIGTERM starts the Coordinator as a process, waits until its client
// API answers, sends SIGTERM and expects a clean exit with code 0.
func TestSIGTERM(t *testing.T) {
	clientAddr := testsupport.FreeAddr(t)
	cmd := exec.Command(os.Args[0])
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), runMainEnv+"=1",
		"OE_SIMULATION=1",
		"EDG_COORDINATOR_SEAL_DIR="+t.TempDir(),
		"EDG_COORDINATOR_CLIENT_ADDR="+clientAddr,
		"EDG_COORDINATOR_MESH_ADDR="+testsupport.FreeAddr(t),
	)
	var out syncBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	reaped := false
	t.Cleanup(func() {
		if !reaped {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	// The Coordinator's certificate is its own; only reachability matters here.
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // test
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Get("https://" + clientAddr + "/api/v2/status")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving: %v\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		reaped = true
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit after SIGTERM\n%s", out.String())
	}
	if !strings.Contains(out.String(), `"msg":"the Coordinator stopped"`) {
		t.Errorf("logs lack the clean stop:\n%s", out.String())
	}
}
