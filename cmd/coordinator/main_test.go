package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/internal/version"
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

// The Coordinator's certificate is its own; only reachability matters here.
var insecureTLS = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test

// startCoordinator starts the Coordinator in simulation as a process and
// waits until its client API answers. It returns the process and the
// client API's address.
func startCoordinator(t *testing.T) (*testsupport.Process, string) {
	t.Helper()
	return startCoordinatorWith(t, "EDG_COORDINATOR_SEAL_DIR="+t.TempDir())
}

// startCoordinatorWith is startCoordinator with the store settings env
// (and any other variables) instead of a seal folder.
func startCoordinatorWith(t *testing.T, env ...string) (*testsupport.Process, string) {
	t.Helper()
	addrs := testsupport.FreeAddrs(t, 2)
	clientAddr := addrs[0]
	cmd := exec.Command(os.Args[0])
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), runMainEnv+"=1",
		"OE_SIMULATION=1",
		"EDG_COORDINATOR_CLIENT_ADDR="+clientAddr,
		"EDG_COORDINATOR_MESH_ADDR="+addrs[1],
	)
	cmd.Env = append(cmd.Env, env...)
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS}}
	defer c.CloseIdleConnections()
	p := testsupport.StartProcess(t, cmd, 30*time.Second, func() error {
		resp, err := c.Get("https://" + clientAddr + "/api/v2/status")
		if err != nil {
			return err
		}
		return resp.Body.Close()
	})
	return p, clientAddr
}

// TestSIGTERM starts the Coordinator as a process, waits until its client
// API answers, sends SIGTERM and expects a clean exit with code 0. Its log
// lines have no key twice, say that it got the signal, render durations
// as strings, and log clients' failed TLS handshakes below Warn.
func TestSIGTERM(t *testing.T) {
	p, clientAddr := startCoordinator(t)
	meshAddr := ""
	for _, rec := range testsupport.JSONLogLines(t, p.Output()) {
		if rec["msg"] == "Coordinator ready" {
			meshAddr, _ = rec["meshAPI"].(string)
		}
	}
	if meshAddr == "" {
		t.Fatalf("no mesh API address in the log:\n%s", p.Output())
	}
	for _, addr := range []string{clientAddr, meshAddr} {
		// A client that hangs up (logged at Debug, so not here)...
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		// ...and one that does not trust the Coordinator's certificate
		// (Info).
		if tc, err := tls.Dial("tcp", addr, &tls.Config{MinVersion: tls.VersionTLS12}); err == nil {
			_ = tc.Close()
			t.Fatal("a client trusted the Coordinator's self-signed root")
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.Output(), `"msg":"TLS handshake failed"`) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	p.Terminate(t, 30*time.Second)

	components := map[string]bool{}
	var ready, shutdown map[string]any
	for _, rec := range testsupport.JSONLogLines(t, p.Output()) {
		switch rec["msg"] {
		case "Coordinator ready":
			ready = rec
		case "shutting down":
			shutdown = rec
		case "TLS handshake failed":
			if rec["level"] != "INFO" || rec["cause"] != "client refused or failed TLS" {
				t.Errorf("handshake failure logged as %v", rec)
			}
			components[fmt.Sprint(rec["component"])] = true
		}
		if rec["level"] == "ERROR" {
			t.Errorf("unexpected error line: %v", rec)
		}
		if rec["simulation"] != true {
			t.Errorf("a line does not say that the Coordinator runs in simulation: %v", rec)
		}
	}
	if ready == nil || shutdown == nil {
		t.Fatalf("ready %v, shutting down %v in\n%s", ready, shutdown, p.Output())
	}
	if v := version.Get(); ready["version"] != v.Version || ready["commit"] != v.Commit {
		t.Errorf("ready line %v does not name the build %v", ready, v)
	}
	if shutdown["reason"] != "received SIGTERM" || shutdown["grace"] != "10s" {
		t.Errorf("shutdown line %v", shutdown)
	}
	if !components["http"] || !components["mesh"] || len(components) != 2 {
		t.Errorf("handshake failures logged by %v, want http and mesh\n%s", components, p.Output())
	}
	if !strings.Contains(p.Output(), `"msg":"the Coordinator stopped"`) {
		t.Errorf("logs lack the clean stop:\n%s", p.Output())
	}
	// The file store stays the default.
	if !strings.Contains(p.Output(), `"msg":"Coordinator ready"`) || !strings.Contains(p.Output(), `"store":"file","sealDir":`) {
		t.Errorf("logs do not say that the file store keeps the state:\n%s", p.Output())
	}
}

// TestSIGTERMDrainsRequestInFlight sends SIGTERM while the Coordinator's
// handler is reading the body of a manifest that the client sends slowly:
// the Coordinator must refuse new connections, yet read the rest of the
// body, set the manifest, answer in full and only then exit with code 0,
// all within its grace period (10 s; the request needs far less).
func TestSIGTERMDrainsRequestInFlight(t *testing.T) {
	p, clientAddr := startCoordinator(t)

	manifest := `{"Packages": {"app": {"UniqueID": "6b2822ac2585040d4b9397675d54977a71ef292ab5b3c0a6acceca26074ae585"}}, "Marbles": {"app": {"Package": "app"}}}`
	body, err := json.Marshal(wire.ManifestRequest{Manifest: []byte(manifest)})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", clientAddr, insecureTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// The headers ask for "100 Continue", which the server sends when the
	// handler starts to read the body: from then on the request is in
	// flight. Half of the body follows.
	head := fmt.Sprintf("POST /api/v2/manifest HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", clientAddr, len(body))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	answers := bufio.NewReader(conn)
	cont, err := http.ReadResponse(answers, nil)
	if err == nil {
		cont.Body.Close() // an interim answer has no body
	}
	if err != nil || cont.StatusCode != http.StatusContinue {
		t.Fatalf("waiting for 100 Continue: %v %v\n%s", cont, err, p.Output())
	}
	half := len(body) / 2
	if _, err := conn.Write(body[:half]); err != nil {
		t.Fatal(err)
	}

	p.Signal(t, syscall.SIGTERM)
	// The listener closes at once; the request keeps the process alive.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", clientAddr, time.Second)
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if err == nil {
			_ = c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("new connections are not refused after SIGTERM (last dial: %v)\n%s", err, p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.Exited() {
		t.Fatalf("the Coordinator exited with a request in flight\n%s", p.Output())
	}

	if _, err := conn.Write(body[half:]); err != nil {
		t.Fatalf("sending the rest of the body after SIGTERM: %v\n%s", err, p.Output())
	}
	resp, err := http.ReadResponse(answers, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v\n%s", err, p.Output())
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the answer's body: %v\n%s", err, p.Output())
	}
	var set wire.Success[wire.RecoverySecrets]
	if resp.StatusCode != http.StatusOK || json.Unmarshal(answer, &set) != nil || set.Status != wire.StatusSuccess {
		t.Fatalf("answer %s: %s\n%s", resp.Status, answer, p.Output())
	}

	p.WaitExit(t, 15*time.Second)
	if !strings.Contains(p.Output(), `"msg":"the Coordinator stopped"`) {
		t.Errorf("logs lack the clean stop:\n%s", p.Output())
	}
}
