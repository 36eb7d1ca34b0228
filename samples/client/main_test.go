package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/marble"
)

func TestRunErrors(t *testing.T) {
	dir := t.TempDir()
	goodKey := filepath.Join(dir, "good.key")
	shortKey := filepath.Join(dir, "short.key")
	if err := os.WriteFile(goodKey, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shortKey, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	noEnv := func(string) string { return "" }
	tests := []struct {
		args []string
		want string
	}{
		{nil, "-key-file is required"},
		{[]string{"-key-file", filepath.Join(dir, "missing")}, "reading the shared key"},
		{[]string{"-key-file", shortKey}, "at least 16"},
		{[]string{"-key-file", goodKey}, "MARBLE_PREDEFINED_ROOT_CA is not set"},
		{[]string{"-bogus"}, "flag provided but not defined"},
	}
	for _, tc := range tests {
		var out bytes.Buffer
		err := run(t.Context(), tc.args, noEnv, slog.New(slog.NewTextHandler(&out, nil)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) err = %v, want %q", tc.args, err, tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("run(%q) printed %q on failure", tc.args, out.String())
		}
	}
}

// testMesh is a one-level CA that issues marble credentials as
// environment variables.
type testMesh struct {
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
}

func newTestMesh(t *testing.T) *testMesh {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test mesh root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testMesh{ca: ca, caKey: key}
}

func (m *testMesh) env(t *testing.T, cn string) func(string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, m.ca, &key.PublicKey, m.caKey)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.ca.Raw}))
	vars := map[string]string{
		marble.EnvRootCA:            caPEM,
		marble.EnvCoordinatorRootCA: caPEM,
		marble.EnvCertificateChain:  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) + caPEM,
		marble.EnvPrivateKey:        string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})),
	}
	return func(k string) string { return vars[k] }
}

// macServer answers like the sample server, with serverKey.
func macServer(t *testing.T, creds *marble.Credentials, serverKey []byte, status int) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status != http.StatusOK {
			http.Error(w, "broken", status)
			return
		}
		m := hmac.New(sha256.New, serverKey)
		m.Write([]byte(r.URL.Query().Get("message")))
		_ = json.NewEncoder(w).Encode(macResponse{
			MAC:    hex.EncodeToString(m.Sum(nil)),
			Client: r.TLS.PeerCertificates[0].Subject.String(),
		})
	}))
	srv.TLS = creds.ServerTLSConfig()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestRunAgainstServer(t *testing.T) {
	mesh := newTestMesh(t)
	serverCreds, err := marble.LoadCredentials(mesh.env(t, "server-marble"))
	if err != nil {
		t.Fatal(err)
	}
	clientEnv := mesh.env(t, "client-marble")
	key := bytes.Repeat([]byte{7}, 32)
	keyFile := filepath.Join(t.TempDir(), "shared.key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	args := func(addr string) []string {
		return []string{"-server", addr, "-key-file", keyFile, "-message", "hi there"}
	}

	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	if err := run(t.Context(), args(macServer(t, serverCreds, key, http.StatusOK)), clientEnv, log); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`subject="CN=server-marble" issuer="CN=test mesh root"`, `"CN=client-marble"`, `HMAC-SHA256 matches`, `message="hi there"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	err = run(t.Context(), args(macServer(t, serverCreds, bytes.Repeat([]byte{8}, 32), http.StatusOK)), clientEnv, log)
	if err == nil || !strings.Contains(err.Error(), "do not share the same key") {
		t.Fatalf("different keys: err = %v", err)
	}

	err = run(t.Context(), args(macServer(t, serverCreds, key, http.StatusInternalServerError)), clientEnv, log)
	if err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("server error: err = %v", err)
	}

	// The address comes from SAMPLE_SERVER_ADDR when -server is absent.
	addr := macServer(t, serverCreds, key, http.StatusOK)
	withAddr := func(k string) string {
		if k == "SAMPLE_SERVER_ADDR" {
			return addr
		}
		return clientEnv(k)
	}
	if err := run(t.Context(), []string{"-key-file", keyFile}, withAddr, log); err != nil {
		t.Fatalf("with SAMPLE_SERVER_ADDR: %v", err)
	}
}
