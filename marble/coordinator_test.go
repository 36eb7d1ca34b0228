package marble_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/marble"
	"github.com/marblemesh/marblemesh/test/coordtest"
)

// testManifest has a marble "backend" whose files, env and argv use the
// marble's own certificate, a per-marble key and a shared key; "limited"
// may activate once.
func testManifest(t *testing.T, fileDir string) []byte {
	t.Helper()
	pkg := map[string]any{"Debug": true, "SignerID": strings.Repeat("ab", 32), "ProductID": 7, "SecurityVersion": 1}
	m := map[string]any{
		"Packages": map[string]any{"pkg": pkg},
		"Marbles": map[string]any{
			"backend": map[string]any{
				"Package": "pkg",
				"Parameters": map[string]any{
					"Files": map[string]any{
						filepath.Join(fileDir, "tls", "cert.pem"): "{{ pem .MarbleRun.MarbleCert.Cert }}",
						filepath.Join(fileDir, "shared.key"):      "{{ raw .Secrets.shared }}",
					},
					"Env": map[string]any{
						"PRIVATE_KEY_HEX": "{{ hex .Secrets.private }}",
						"SHARED_KEY_HEX":  "{{ hex .Secrets.shared }}",
						"GREETING":        "hello",
					},
					"Argv": []string{"backend", "--serve"},
				},
			},
			"limited": map[string]any{"Package": "pkg", "MaxActivations": 1},
		},
		"Secrets": map[string]any{
			"private": map[string]any{"Type": "symmetric-key", "Size": 128},
			"shared":  map[string]any{"Type": "symmetric-key", "Size": 256, "Shared": true},
		},
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func config(t *testing.T, c *coordtest.Coordinator, marbleType, uuidFile string) marble.Config {
	return marble.Config{
		MarbleType:      marbleType,
		CoordinatorAddr: c.MeshAddr(),
		DNSNames:        []string{"localhost"},
		UUIDFile:        uuidFile,
		Issuer:          attestation.SimulationIssuer{},
		RetryTimeout:    20 * time.Second,
		RetryBackoff:    20 * time.Millisecond,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// activated is what an activation put into effect.
type activated struct {
	env   map[string]string
	argv  []string
	creds *marble.Credentials
}

func activate(t *testing.T, cfg marble.Config) activated {
	t.Helper()
	params, err := marble.Activate(t.Context(), cfg)
	if err != nil {
		t.Fatalf("activation: %v", err)
	}
	env := map[string]string{}
	argv, err := marble.Apply(params, func(k, v string) error { env[k] = v; return nil }, []string{"default"})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := marble.LoadCredentials(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("credentials from the Coordinator: %v", err)
	}
	return activated{env: env, argv: argv, creds: creds}
}

func TestCoordinatorActivation(t *testing.T) {
	coord := coordtest.Start(t)
	dir := t.TempDir()
	coord.SetManifest(t, testManifest(t, dir))
	uuidFile := filepath.Join(dir, "uuid")

	first := activate(t, config(t, coord, "backend", uuidFile))

	if !slices.Equal(first.argv, []string{"backend", "--serve"}) {
		t.Fatalf("argv = %v", first.argv)
	}
	if first.env["GREETING"] != "hello" || len(first.env["SHARED_KEY_HEX"]) != 64 || len(first.env["PRIVATE_KEY_HEX"]) != 32 {
		t.Fatalf("env not rendered: GREETING=%q, key lengths %d/%d",
			first.env["GREETING"], len(first.env["SHARED_KEY_HEX"]), len(first.env["PRIVATE_KEY_HEX"]))
	}
	for _, name := range []string{"tls/cert.pem", "shared.key"} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode = %o", name, info.Mode().Perm())
		}
	}
	shared, err := os.ReadFile(filepath.Join(dir, "shared.key"))
	if err != nil || len(shared) != 32 {
		t.Fatalf("shared key file: %d bytes, %v", len(shared), err)
	}

	id, err := os.ReadFile(uuidFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.creds.Certificate.Leaf
	if leaf.Subject.CommonName != string(id) {
		t.Fatalf("marble certificate CN = %q, want the UUID %q", leaf.Subject.CommonName, id)
	}
	if !first.creds.CoordinatorRoot.Equal(coord.RootCertificate()) {
		t.Fatal("MARBLE_PREDEFINED_COORDINATOR_ROOT_CA is not the Coordinator's root")
	}
	if !slices.Contains(leaf.DNSNames, "localhost") {
		t.Fatalf("marble certificate names %v lack localhost", leaf.DNSNames)
	}

	// The same UUID file gives the same identity: per-marble secrets
	// derived from the UUID stay the same, certificates are new.
	second := activate(t, config(t, coord, "backend", uuidFile))
	if second.env["PRIVATE_KEY_HEX"] != first.env["PRIVATE_KEY_HEX"] {
		t.Fatal("per-marble key changed although the UUID was reused")
	}
	if second.creds.Certificate.Leaf.Subject.CommonName != string(id) {
		t.Fatal("second activation used another UUID")
	}
	other := activate(t, config(t, coord, "backend", filepath.Join(dir, "other-uuid")))
	if other.env["PRIVATE_KEY_HEX"] == first.env["PRIVATE_KEY_HEX"] {
		t.Fatal("two marbles with different UUIDs got the same per-marble key")
	}
	if other.env["SHARED_KEY_HEX"] != first.env["SHARED_KEY_HEX"] {
		t.Fatal("shared key differs between marbles")
	}

	// Marbles of one Coordinator trust each other.
	roots := x509.NewCertPool()
	roots.AddCert(first.creds.Root)
	if _, err := other.creds.Certificate.Leaf.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
		t.Fatalf("marble certificates do not share a root: %v", err)
	}
}

func TestCoordinatorRejections(t *testing.T) {
	coord := coordtest.Start(t)
	dir := t.TempDir()
	coord.SetManifest(t, testManifest(t, dir))

	_, err := marble.Activate(t.Context(), config(t, coord, "nobody", filepath.Join(dir, "u1")))
	var rej *marble.RejectedError
	if !errors.As(err, &rej) || rej.Code != codes.PermissionDenied || !strings.Contains(rej.Reason, "nobody") {
		t.Fatalf("unknown marble type: err = %v", err)
	}

	if _, err := marble.Activate(t.Context(), config(t, coord, "limited", filepath.Join(dir, "u2"))); err != nil {
		t.Fatalf("first activation of a limited marble: %v", err)
	}
	_, err = marble.Activate(t.Context(), config(t, coord, "limited", filepath.Join(dir, "u3")))
	if !errors.As(err, &rej) || rej.Code != codes.ResourceExhausted || rej.Reason == "" {
		t.Fatalf("activation beyond MaxActivations: err = %v", err)
	}
}

func TestCoordinatorNotReady(t *testing.T) {
	coord := coordtest.Start(t)
	dir := t.TempDir()

	cfg := config(t, coord, "backend", filepath.Join(dir, "uuid"))
	cfg.RetryTimeout = 2 * time.Second
	_, err := marble.Activate(t.Context(), cfg)
	var un *marble.UnavailableError
	if !errors.As(err, &un) || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("without manifest: err = %v, want a not-ready error", err)
	}

	// A marble started before the manifest activates once it is set.
	cfg.RetryTimeout = 20 * time.Second
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		_, err := marble.Activate(ctx, cfg)
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	coord.SetManifest(t, testManifest(t, dir))
	if err := <-done; err != nil {
		t.Fatalf("activation after the manifest was set: %v", err)
	}
}
