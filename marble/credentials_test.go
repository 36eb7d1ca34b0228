package marble

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestLoadCredentials(t *testing.T) {
	pki := newTestPKI(t, "mesh")
	env := pki.marbleEnv(t, "7e1a2c4e-3f0a-4b8e-9d2c-1f5e6a7b8c9d")
	creds, err := LoadCredentials(mapGetenv(env))
	if err != nil {
		t.Fatal(err)
	}
	if !creds.Root.Equal(pki.marbleRoot) || !creds.CoordinatorRoot.Equal(pki.root) {
		t.Fatal("roots not loaded")
	}
	if len(creds.Certificate.Certificate) != 2 || creds.Certificate.Leaf.Subject.CommonName != "7e1a2c4e-3f0a-4b8e-9d2c-1f5e6a7b8c9d" {
		t.Fatalf("chain = %d certificates, leaf %v", len(creds.Certificate.Certificate), creds.Certificate.Leaf.Subject)
	}
}

func TestLoadCredentialsErrors(t *testing.T) {
	pki := newTestPKI(t, "mesh")
	other := newTestPKI(t, "other")
	good := pki.marbleEnv(t, "leaf")
	foreign := other.marbleEnv(t, "leaf")

	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for key, val := range good {
			m[key] = val
		}
		m[k] = v
		return m
	}
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no root", with(EnvRootCA, ""), EnvRootCA + " is not set"},
		{"no chain", with(EnvCertificateChain, ""), EnvCertificateChain + " is not set"},
		{"no key", with(EnvPrivateKey, " "), EnvPrivateKey + " is not set"},
		{"no coordinator root", with(EnvCoordinatorRootCA, ""), EnvCoordinatorRootCA + " is not set"},
		{"root not PEM", with(EnvRootCA, "garbage"), EnvRootCA + " does not hold a PEM certificate"},
		{"root is a key", with(EnvRootCA, good[EnvPrivateKey]), EnvRootCA + " does not hold a PEM certificate"},
		{"chain garbage", with(EnvCertificateChain, "garbage"), EnvCertificateChain},
		{"key of another marble", with(EnvPrivateKey, foreign[EnvPrivateKey]), EnvPrivateKey},
		{"root of another mesh", with(EnvRootCA, foreign[EnvRootCA]), "does not chain to " + EnvRootCA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCredentials(mapGetenv(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// serveMTLS runs an HTTPS server with cfg on loopback; it answers with the
// common name of the client certificate. Handshake failures are sent on
// the returned channel.
func serveMTLS(t *testing.T, cfg *tls.Config) (string, <-chan error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handshakeErrs := make(chan error, 16)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, r.TLS.PeerCertificates[0].Subject.CommonName)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	tlsLis := tls.NewListener(lis, cfg)
	wrapped := &handshakeListener{Listener: tlsLis, errs: handshakeErrs}
	go func() { _ = srv.Serve(wrapped) }()
	t.Cleanup(func() { _ = srv.Close() })
	return lis.Addr().String(), handshakeErrs
}

// handshakeListener completes the TLS handshake on accept so that the
// test sees server-side handshake errors.
type handshakeListener struct {
	net.Listener
	errs chan error
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := c.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			select {
			case l.errs <- err:
			default:
			}
			_ = c.Close()
			continue
		}
		_ = tc.SetDeadline(time.Time{})
		return c, nil
	}
}

func get(cfg *tls.Config, addr string) (string, error) {
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func loadCreds(t *testing.T, pki *testPKI, cn string) *Credentials {
	t.Helper()
	c, err := LoadCredentials(mapGetenv(pki.marbleEnv(t, cn)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMutualTLS(t *testing.T) {
	pki := newTestPKI(t, "mesh")
	server := loadCreds(t, pki, "server-marble")
	client := loadCreds(t, pki, "client-marble")
	addr, _ := serveMTLS(t, server.ServerTLSConfig())

	got, err := get(client.ClientTLSConfig(), addr)
	if err != nil {
		t.Fatalf("mTLS between marbles of one mesh failed: %v", err)
	}
	if got != "client-marble" {
		t.Fatalf("server saw client %q", got)
	}
	// The same works by name: marble certificates carry localhost.
	_, port, _ := net.SplitHostPort(addr)
	if _, err := get(client.ClientTLSConfig(), "localhost:"+port); err != nil {
		t.Fatalf("by name: %v", err)
	}
}

func TestMutualTLSRefusesForeignClients(t *testing.T) {
	pki := newTestPKI(t, "mesh")
	server := loadCreds(t, pki, "server-marble")
	foreign := loadCreds(t, newTestPKI(t, "other mesh"), "intruder")
	addr, handshakeErrs := serveMTLS(t, server.ServerTLSConfig())

	// The intruder trusts the server, so only the server can refuse it.
	cfg := foreign.ClientTLSConfig()
	cfg.RootCAs = server.rootPool()
	if _, err := get(cfg, addr); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	select {
	case err := <-handshakeErrs:
		if !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("server handshake error = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server reported no handshake failure")
	}

	noCert := &tls.Config{RootCAs: server.rootPool(), MinVersion: tls.VersionTLS12}
	if _, err := get(noCert, addr); err == nil {
		t.Fatal("a client without certificate was accepted")
	}
}

func TestMutualTLSRefusesForeignServers(t *testing.T) {
	pki := newTestPKI(t, "mesh")
	client := loadCreds(t, pki, "client-marble")
	foreign := loadCreds(t, newTestPKI(t, "other mesh"), "impostor")
	addr, _ := serveMTLS(t, foreign.ServerTLSConfig())
	_, err := get(client.ClientTLSConfig(), addr)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err = %v, want a certificate verification failure", err)
	}
}
