package main

import (
	"crypto/tls"
	"net/http"
	"os"
	"os/exec"
	"strings"
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
	// The Coordinator's certificate is its own; only reachability matters here.
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // test
	defer c.CloseIdleConnections()
	p := testsupport.StartProcess(t, cmd, 30*time.Second, func() error {
		resp, err := c.Get("https://" + clientAddr + "/api/v2/status")
		if err != nil {
			return err
		}
		return resp.Body.Close()
	})
	p.Terminate(t, 30*time.Second)
	if !strings.Contains(p.Output(), `"msg":"the Coordinator stopped"`) {
		t.Errorf("logs lack the clean stop:\n%s", p.Output())
	}
}
