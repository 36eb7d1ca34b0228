package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/internal/version"
	"github.com/marblemesh/marblemesh/test/testpki"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// The test binary runs main itself when this variable is set.
const runMainEnv = "MARBLE_INJECTOR_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestSIGTERM starts the program as a process, waits until it serves, sends
// SIGTERM and expects a clean exit. Its log lines have no key twice, say
// that it got the signal with readable durations, and log a client's failed
// TLS handshake at Info.
func TestSIGTERM(t *testing.T) {
	ca, certFile, keyFile := testpki.ServingFiles(t)
	addr := testsupport.FreeAddr(t)

	cmd := exec.Command(os.Args[0], "-addr="+addr, "-tlsCertFile="+certFile, "-tlsKeyFile="+keyFile, "-shutdownDelay=100ms")
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	defer c.CloseIdleConnections()
	p := testsupport.StartProcess(t, cmd, 20*time.Second, func() error {
		resp, err := c.Get("https://" + addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz answered %s", resp.Status)
		}
		return nil
	})
	// A client that speaks plain HTTP to the HTTPS port.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(conn)
	_ = conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Output(), `"msg":"TLS handshake failed"`) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	p.Terminate(t, 20*time.Second)
	for _, want := range []string{`"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(p.Output(), want) {
			t.Errorf("logs lack %s:\n%s", want, p.Output())
		}
	}
	handshake := false
	for _, rec := range testsupport.JSONLogLines(t, p.Output()) {
		switch rec["msg"] {
		case "shutting down":
			if rec["reason"] != "received SIGTERM" || rec["delay"] != "100ms" || rec["timeout"] != "15s" {
				t.Errorf("shutdown line %v", rec)
			}
		case "marble injector serving":
			if v := version.Get(); rec["version"] != v.Version || rec["commit"] != v.Commit {
				t.Errorf("serving line %v does not name the build %v", rec, v)
			}
		case "TLS handshake failed":
			handshake = true
			if rec["level"] != "INFO" || rec["cause"] != "client refused or failed TLS" {
				t.Errorf("handshake failure logged as %v", rec)
			}
		}
		if rec["level"] == "ERROR" || rec["level"] == "WARN" {
			t.Errorf("unexpected %s line: %v", rec["level"], rec)
		}
	}
	if !handshake {
		t.Errorf("the plain-HTTP client's failure is not logged:\n%s", p.Output())
	}
}
