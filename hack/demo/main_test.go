package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"github.com/marblemesh/marblemesh/test/testsupport"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/test/testpki"
)

func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	w := &prefixWriter{con: &console{w: &out}, prefix: "srv"}
	for _, part := range []string{"first li", "ne\r\nsecond\nthi", "rd"} {
		if _, err := w.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	want := "  srv   | first line\n  srv   | second\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

func TestVerifyCoordinatorGivesUpWhenTheProcessExits(t *testing.T) {
	p := &process{name: "coord", done: make(chan struct{}), err: errors.New("exit status 1")}
	close(p.done)
	addr := testsupport.FreeAddr(t)
	_, err := verifyCoordinator(t.Context(), p, addr, time.Minute)
	if err == nil || !strings.Contains(err.Error(), "coord process exited") {
		t.Fatalf("err = %v", err)
	}
}

func TestWaitRefusesAnonymous(t *testing.T) {
	root, serving := testCA(t)
	serve := func(clientAuth tls.ClientAuthType) string {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "mac")
		}))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{serving}, ClientAuth: clientAuth}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "https://")
	}
	running := &process{name: "server", done: make(chan struct{})}

	refused, err := waitRefusesAnonymous(t.Context(), running, serve(tls.RequireAnyClientCert), root, time.Minute)
	if err != nil || !strings.Contains(refused, "certificate") {
		t.Errorf("mTLS server: %q, %v", refused, err)
	}
	open := serve(tls.NoClientCert)
	if _, err := waitRefusesAnonymous(t.Context(), running, open, root, time.Minute); err == nil || !strings.Contains(err.Error(), "answered a client without certificate: 200 OK") {
		t.Errorf("server without client authentication: %v", err)
	}
	otherRoot, _ := testCA(t)
	if _, err := waitRefusesAnonymous(t.Context(), running, open, otherRoot, time.Minute); !errors.Is(err, api.ErrUntrustedCertificate) {
		t.Errorf("server of another root: %v", err)
	}
	exited := &process{name: "server", done: make(chan struct{}), err: errors.New("exit status 1")}
	close(exited.done)
	addr := testsupport.FreeAddr(t)
	if _, err := waitRefusesAnonymous(t.Context(), exited, addr, root, time.Minute); err == nil || !strings.Contains(err.Error(), "server exited") {
		t.Errorf("exited server: %v", err)
	}
}

// testCA returns a CA's certificate and a serving certificate it issued.
func testCA(t *testing.T) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	ca, err := testpki.NewCA("demo test root")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(ca.PEM)
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("sample-server")
	if err != nil {
		t.Fatal(err)
	}
	serving, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return root, serving
}

func TestBaseEnv(t *testing.T) {
	t.Setenv("EDG_STARTUP_MANIFEST", "/elsewhere")
	t.Setenv("OE_SIMULATION", "0")
	t.Setenv("DEMO_TEST_KEEP", "yes")
	env := strings.Join(baseEnv(), "\n")
	if strings.Contains(env, "EDG_STARTUP_MANIFEST") || strings.Contains(env, "OE_SIMULATION") {
		t.Fatal("mesh settings inherited")
	}
	if !strings.Contains(env, "DEMO_TEST_KEEP=yes") {
		t.Fatal("other variables dropped")
	}
}

// TestMarbleEnvLogsJSON checks that the demo's marbles log in the
// Coordinator's format (the samples' test checks what that format gives).
func TestMarbleEnvLogsJSON(t *testing.T) {
	t.Setenv("EDG_LOG_FORMAT", "text")
	env := marbleEnv("sample-server", "/tmp/x", "127.0.0.1:1", "127.0.0.1:2")
	var formats []string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "EDG_LOG_FORMAT="); ok {
			formats = append(formats, v)
		}
	}
	if len(formats) != 1 || formats[0] != "json" {
		t.Fatalf("EDG_LOG_FORMAT values %q, want only json", formats)
	}
	for _, want := range []string{"EDG_MARBLE_TYPE=sample-server", "EDG_MARBLE_COORDINATOR_ADDR=127.0.0.1:1", "EDG_MARBLE_UUID_FILE=/tmp/x/uuid", "SAMPLE_SERVER_ADDR=127.0.0.1:2", "OE_SIMULATION=1"} {
		if !slices.Contains(env, want) {
			t.Errorf("marble environment lacks %s", want)
		}
	}
}
