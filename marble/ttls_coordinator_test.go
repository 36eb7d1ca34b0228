package marble_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/marble"
	"github.com/marblemesh/marblemesh/test/coordtest"
)

// ttlsManifest gives "client" an outgoing rule to localhost:mtlsPort and
// "server" an incoming rule with client authentication on mtlsPort and one
// with the certificate secret "public" on publicPort.
func ttlsManifest(t *testing.T, mtlsPort, publicPort int) []byte {
	t.Helper()
	pkg := map[string]any{"Debug": true, "SignerID": strings.Repeat("ab", 32), "ProductID": 7, "SecurityVersion": 1}
	m := map[string]any{
		"Packages": map[string]any{"pkg": pkg},
		"Marbles": map[string]any{
			"client": map[string]any{"Package": "pkg", "TLS": []string{"to-server"}},
			"server": map[string]any{"Package": "pkg", "TLS": []string{"server"}},
		},
		"Secrets": map[string]any{
			"public": map[string]any{"Type": "cert-ecdsa", "Size": 256, "Shared": true,
				"Cert": map[string]any{"Subject": map[string]any{"CommonName": "public endpoint"}}},
		},
		"TLS": map[string]any{
			"to-server": map[string]any{"Outgoing": []any{map[string]any{"Addr": "localhost", "Port": strconv.Itoa(mtlsPort)}}},
			"server": map[string]any{"Incoming": []any{
				map[string]any{"Port": strconv.Itoa(mtlsPort)},
				map[string]any{"Port": strconv.Itoa(publicPort), "Cert": "public", "DisableClientAuth": true},
			}},
		},
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func tcpPort(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }

// serveWho answers every request with how it arrived: "tls <client
// certificate CN>", "tls" without a client certificate, or "plain".
func serveWho(t *testing.T, l net.Listener) {
	t.Helper()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.TLS == nil:
				fmt.Fprint(w, "plain")
			case len(r.TLS.PeerCertificates) > 0:
				fmt.Fprint(w, "tls "+r.TLS.PeerCertificates[0].Subject.CommonName)
			default:
				fmt.Fprint(w, "tls")
			}
		}),
		// Refused handshakes are expected here; the assertions say which.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serving on %s: %v", l.Addr(), err)
		}
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

// TestTransparentTLSBetweenMarbles activates two marbles at a real
// Coordinator whose manifest makes the client's calls to the server mTLS:
// the server listens through its rules, the client calls http:// URLs
// through its transport, and the connection is TLS with both marble
// certificates, while a port without a rule stays plain.
func TestTransparentTLSBetweenMarbles(t *testing.T) {
	coord := coordtest.Start(t)
	dir := t.TempDir()
	// The ports are taken before the manifest names them.
	mtlsL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	publicL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	coord.SetManifest(t, ttlsManifest(t, tcpPort(mtlsL), tcpPort(publicL)))

	server := activate(t, config(t, coord, "server", filepath.Join(dir, "server-uuid")))
	client := activate(t, config(t, coord, "client", filepath.Join(dir, "client-uuid")))
	serverTT, err := marble.TransparentTLSFromEnv(func(k string) string { return server.env[k] })
	if err != nil {
		t.Fatalf("server rules: %v", err)
	}
	clientTT, err := marble.TransparentTLSFromEnv(func(k string) string { return client.env[k] })
	if err != nil {
		t.Fatalf("client rules: %v", err)
	}
	if in, out := serverTT.Endpoints(); len(in) != 2 || len(out) != 0 {
		t.Fatalf("server rules: incoming %q, outgoing %q", in, out)
	}

	plainL, err := serverTT.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveWho(t, serverTT.WrapListener(mtlsL))
	serveWho(t, serverTT.WrapListener(publicL))
	serveWho(t, plainL)

	clientID, err := os.ReadFile(filepath.Join(dir, "client-uuid"))
	if err != nil {
		t.Fatal(err)
	}
	serverID, err := os.ReadFile(filepath.Join(dir, "server-uuid"))
	if err != nil {
		t.Fatal(err)
	}
	mesh := &http.Client{Transport: clientTT.HTTPTransport()}
	mtlsURL := fmt.Sprintf("http://localhost:%d/", tcpPort(mtlsL))

	// The client keeps http://; the server sees TLS and the client's
	// marble certificate.
	got, err := get(mesh, mtlsURL)
	if err != nil {
		t.Fatalf("client → server over its rule: %v", err)
	}
	if want := "tls " + string(clientID); got != want {
		t.Fatalf("server saw %q, want %q", got, want)
	}
	// https:// to the same address uses the same TLS, not a second layer.
	if got, err := get(mesh, strings.Replace(mtlsURL, "http://", "https://", 1)); err != nil || got != "tls "+string(clientID) {
		t.Fatalf("https:// over the rule: %q, %v", got, err)
	}

	// The client verified the server's marble certificate.
	conn, err := clientTT.DialContext(t.Context(), "tcp", fmt.Sprintf("localhost:%d", tcpPort(mtlsL)))
	if err != nil {
		t.Fatal(err)
	}
	tc, ok := conn.(*tls.Conn)
	if !ok {
		t.Fatalf("DialContext returned %T, want TLS", conn)
	}
	if cn := tc.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != string(serverID) {
		t.Errorf("client talked to %q, want the server marble %q", cn, serverID)
	}
	conn.Close()

	// Without the rules, the server's port refuses the client.
	if got, err := get(&http.Client{}, mtlsURL); err == nil {
		t.Errorf("a plain client got %q from the server's TLS port", got)
	}
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // tests the server's demand for a client certificate
	if got, err := get(insecure, strings.Replace(mtlsURL, "http://", "https://", 1)); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("a TLS client without certificate: %q, %v; want a refusal", got, err)
	}

	// The port with Cert presents the secret and asks no certificate.
	publicConn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort(publicL)), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // inspects the certificate below
	if err != nil {
		t.Fatalf("public port: %v", err)
	}
	if cn := publicConn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "public endpoint" {
		t.Errorf("public port presented %q, want the secret's certificate", cn)
	}
	publicConn.Close()

	// A port without a rule stays plain, for the client's transport too.
	plainURL := fmt.Sprintf("http://localhost:%d/", tcpPort(plainL))
	if got, err := get(mesh, plainURL); err != nil || got != "plain" {
		t.Errorf("client → port without rule: %q, %v; want plain", got, err)
	}
	if got, err := get(&http.Client{}, plainURL); err != nil || got != "plain" {
		t.Errorf("plain client → port without rule: %q, %v", got, err)
	}
}
