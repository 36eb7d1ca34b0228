package samples_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/marble"
	"github.com/marblemesh/marblemesh/test/coordtest"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

func sampleManifest(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func marbleEnv(marbleType, meshAddr, dir, serverAddr string) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"OE_SIMULATION=1",
		"EDG_MARBLE_TYPE=" + marbleType,
		"EDG_MARBLE_COORDINATOR_ADDR=" + meshAddr,
		"EDG_MARBLE_UUID_FILE=" + filepath.Join(dir, "uuid"),
		"SAMPLE_SERVER_ADDR=" + serverAddr,
		// The format of the Coordinator's log, as in the demo.
		"EDG_LOG_FORMAT=json",
	}
}

// checkJSONLog fails t unless every line of out is a JSON log line without
// a key twice, at Info or above.
func checkJSONLog(t *testing.T, name, out string) {
	t.Helper()
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, "{") {
			t.Errorf("%s: a line not in the JSON log format: %q", name, l)
			continue
		}
		lines++
	}
	if recs := testsupport.JSONLogLines(t, out); len(recs) != lines || lines == 0 {
		t.Errorf("%s: %d JSON log lines of %d:\n%s", name, len(recs), lines, out)
	}
}

// startServer runs the sample server marble and waits until it listens.
func startServer(t *testing.T, bin, meshAddr string) (addr string, out *testsupport.SyncBuffer) {
	t.Helper()
	addr = testsupport.FreeAddr(t)
	dir := t.TempDir()
	out = &testsupport.SyncBuffer{}
	cmd := exec.Command(filepath.Join(bin, "server"), "-listen", addr)
	cmd.Dir = dir
	cmd.Env = marbleEnv("sample-server", meshAddr, dir, addr)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "serving HTTPS") {
		select {
		case <-exited:
			t.Fatalf("sample server exited:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sample server did not start:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr, out
}

// runClient runs the sample client under premain.
func runClient(t *testing.T, bin, meshAddr, serverAddr string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "premain"), "--", filepath.Join(bin, "client"))
	cmd.Dir = dir
	cmd.Env = marbleEnv("sample-client", meshAddr, dir, serverAddr)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSamples runs both samples against a real Coordinator, and marbles
// of a second Coordinator with the same manifest against them.
func TestSamples(t *testing.T) {
	bin := testsupport.GoBuild(t,
		"github.com/marblemesh/marblemesh/cmd/premain",
		"github.com/marblemesh/marblemesh/samples/server",
		"github.com/marblemesh/marblemesh/samples/client")
	coord := coordtest.Start(t)
	coord.SetManifest(t, sampleManifest(t))
	other := coordtest.Start(t)
	other.SetManifest(t, sampleManifest(t))
	serverAddr, serverOut := startServer(t, bin, coord.MeshAddr())

	t.Run("talk mTLS", func(t *testing.T) {
		out, err := runClient(t, bin, coord.MeshAddr(), serverAddr)
		if err != nil {
			t.Fatalf("sample client failed: %v\n%s\nserver:\n%s", err, out, serverOut)
		}
		if !strings.Contains(out, `HMAC-SHA256 matches`) || !strings.Contains(out, `"message":"hello from the mesh"`) {
			t.Fatalf("client output lacks the check (was Argv applied?):\n%s", out)
		}
		if !strings.Contains(out, `"issuer":"CN=`) || !strings.Contains(serverOut.String(), "mTLS request from client certificate") {
			t.Fatalf("peer certificates not reported:\nclient:\n%s\nserver:\n%s", out, serverOut)
		}
		// premain's, marble.PreMain's and the samples' own lines.
		checkJSONLog(t, "client", out)
		for _, want := range []string{`"msg":"activated"`, `"msg":"executing program"`} {
			if !strings.Contains(out, want) {
				t.Errorf("client output lacks %s:\n%s", want, out)
			}
		}
		if !strings.Contains(serverOut.String(), `"msg":"activated"`) {
			t.Errorf("server output lacks its activation:\n%s", serverOut)
		}
	})

	t.Run("client of another Coordinator fails", func(t *testing.T) {
		out, err := runClient(t, bin, other.MeshAddr(), serverAddr)
		if err == nil {
			t.Fatalf("a marble of another Coordinator talked to the server:\n%s", out)
		}
		if !strings.Contains(out, "certificate") {
			t.Fatalf("the client's failure does not name the certificate:\n%s", out)
		}
	})

	// The foreign client trusts the server's root here, so only the
	// server can refuse it.
	t.Run("server refuses a certificate of another Coordinator", func(t *testing.T) {
		foreign := activateInProcess(t, other.MeshAddr())
		mesh := activateInProcess(t, coord.MeshAddr())

		cfg := foreign.ClientTLSConfig()
		cfg.RootCAs = x509.NewCertPool()
		cfg.RootCAs.AddCert(mesh.Root)
		if _, err := get(cfg, serverAddr); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v, want the server to refuse the certificate", err)
		}
		if _, err := get(mesh.ClientTLSConfig(), serverAddr); err != nil {
			t.Fatalf("a marble of the same mesh was refused: %v\nserver:\n%s", err, serverOut)
		}
	})

	// The server's own lines, its HTTP server's refusals included.
	checkJSONLog(t, "server", serverOut.String())
	if !strings.Contains(serverOut.String(), "TLS handshake error") {
		t.Errorf("the server did not log the refused clients:\n%s", serverOut)
	}
}

// get requests a MAC from the sample server.
func get(cfg *tls.Config, addr string) (string, error) {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addr + "/mac?message=x")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s: %s", resp.Status, body)
	}
	return string(body), nil
}

// activateInProcess activates a sample-client marble with the marble
// package and returns its credentials.
func activateInProcess(t *testing.T, meshAddr string) *marble.Credentials {
	t.Helper()
	params, err := marble.Activate(t.Context(), marble.Config{
		MarbleType:      "sample-client",
		CoordinatorAddr: meshAddr,
		DNSNames:        []string{"localhost"},
		UUIDFile:        filepath.Join(t.TempDir(), "uuid"),
		Issuer:          attestation.SimulationIssuer{},
		RetryTimeout:    5 * time.Second,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for k, v := range params.GetEnv() {
		env[k] = string(v)
	}
	creds, err := marble.LoadCredentials(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return creds
}
