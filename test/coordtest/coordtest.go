// Package coordtest runs a real Coordinator in-process for tests: simulation
// mode by default (NewSGX runs it outside simulation on a synthetic SGX
// platform), a sealed store in a temporary folder, and loopback listeners.
package coordtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
)

// Option changes how a test Coordinator starts.
type Option func(*coordinator.Config)

// WithSealDir uses dir as the seal folder, so a test can restart a
// Coordinator on the same state.
func WithSealDir(dir string) Option {
	return func(c *coordinator.Config) { c.SealDir = dir }
}

// WithKubeStore keeps the state in Secrets named after stateName in
// namespace ns, reached through the kubeconfig file kubeconfig (the
// distributed mode's k8s-secret store), instead of a seal folder. A
// Coordinator started again with the same settings finds the same state.
// Its key API listens on a loopback port (Server.KeyAPIAddr) and finds
// peers in the EndpointSlices of Service keyapi.DefaultServiceName in ns.
func WithKubeStore(kubeconfig, ns, stateName string) Option {
	return func(c *coordinator.Config) {
		c.SealDir = ""
		c.Store = coordinator.StoreK8sSecret
		c.Kubeconfig, c.KubeNamespace, c.KubeStateName = kubeconfig, ns, stateName
		c.KeyAPIAddr = "127.0.0.1:0"
	}
}

// WithReplicaName names the Coordinator in status (default
// "test-coordinator").
func WithReplicaName(name string) Option {
	return func(c *coordinator.Config) { c.ReplicaName = name }
}

// WithPrometheus serves metrics on a loopback port.
func WithPrometheus() Option {
	return func(c *coordinator.Config) { c.PrometheusAddr = "127.0.0.1:0" }
}

// WithStartupManifest sets a manifest file at boot.
func WithStartupManifest(path string) Option {
	return func(c *coordinator.Config) { c.StartupManifest = path }
}

// Coordinator is a running test Coordinator.
type Coordinator struct {
	Server *coordinator.Server
	Config coordinator.Config
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// Start starts a Coordinator and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Coordinator {
	t.Helper()
	c, err := TryStart(t, opts...)
	if err != nil {
		t.Fatalf("starting Coordinator: %v", err)
	}
	return c
}

// TryStart is Start returning the start-up error instead of failing.
func TryStart(t testing.TB, opts ...Option) (*Coordinator, error) {
	t.Helper()
	cfg := coordinator.Config{
		MeshAddr:          "127.0.0.1:0",
		ClientAddr:        "127.0.0.1:0",
		DNSNames:          []string{"localhost"},
		SealDir:           t.TempDir(),
		Simulation:        true,
		HTTPErrorLogLevel: "error",
		RecoveryKeyBits:   2048,
		ReplicaName:       "test-coordinator",
	}
	for _, o := range opts {
		o(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := coordinator.New(cfg, logger)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Coordinator{Server: srv, Config: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping Coordinator: %v", err)
		}
	})
	return c, nil
}

// Stop stops the Coordinator and waits until its store is closed. It may
// be called more than once.
func (c *Coordinator) Stop() error {
	var err error
	c.once.Do(func() {
		c.cancel()
		select {
		case err = <-c.done:
		case <-time.After(30 * time.Second):
			err = fmt.Errorf("the Coordinator did not stop within 30 s")
		}
	})
	return err
}

// MeshAddr is the mesh API address.
func (c *Coordinator) MeshAddr() string { return c.Server.MeshAddr() }

// ClientAddr is the client API address.
func (c *Coordinator) ClientAddr() string { return c.Server.ClientAddr() }

// Core is the Coordinator's core.
func (c *Coordinator) Core() *core.Core { return c.Server.Core() }

// RootCertificate is the Coordinator's root CA certificate.
func (c *Coordinator) RootCertificate() *x509.Certificate {
	cert, _ := c.Server.Core().RootCertificate()
	return cert
}

// Client returns an HTTPS client that trusts the Coordinator's root,
// presenting clientCerts if given.
func (c *Coordinator) Client(clientCerts ...tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(c.RootCertificate())
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, ServerName: "localhost", Certificates: clientCerts,
		}},
	}
}

// URL returns the client API URL of path (e.g. "/api/v2/status").
func (c *Coordinator) URL(path string) string { return "https://" + c.ClientAddr() + path }

// SetManifest sets a manifest through the v2 client API and returns the
// encrypted recovery secrets.
func (c *Coordinator) SetManifest(t testing.TB, manifest []byte) map[string][]byte {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"manifest": base64.StdEncoding.EncodeToString(manifest)})
	resp, err := c.Client().Post(c.URL("/api/v2/manifest"), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("setting manifest: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("setting manifest: %s: %s", resp.Status, raw)
	}
	var out struct {
		Data struct {
			RecoverySecrets map[string][]byte
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("setting manifest: decoding response %q: %v", raw, err)
	}
	return out.Data.RecoverySecrets
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
