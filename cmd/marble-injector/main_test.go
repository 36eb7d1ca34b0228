package main

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

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
// SIGTERM and expects a clean exit.
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
	p.Terminate(t, 20*time.Second)
	for _, want := range []string{`"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(p.Output(), want) {
			t.Errorf("logs lack %s:\n%s", want, p.Output())
		}
	}
}
