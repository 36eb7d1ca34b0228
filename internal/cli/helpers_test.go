package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/test/coordtest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// env runs the CLI in a temporary folder whose config folder holds the
// pinned certificate.
type env struct {
	t        *testing.T
	dir      string
	testdata string
	verifier api.Verifier
	masks    []mask
}

type mask struct{ old, new string }

func newEnv(t *testing.T) *env {
	t.Helper()
	testdata, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: t.TempDir(), testdata: testdata}
	e.mask(e.dir, "$TMP")
	return e
}

// sub returns the env for a subtest.
func (e *env) sub(t *testing.T) *env {
	c := *e
	c.t = t
	c.masks = append([]mask(nil), e.masks...)
	return &c
}

// certFile is where the CLI pins the Coordinator's certificates by default.
func (e *env) certFile() string {
	return filepath.Join(e.dir, "config", "marblerun", "coordinator-cert.pem")
}

// path returns the absolute path of name in the temporary folder.
func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// write creates a file in the temporary folder and returns its path.
func (e *env) write(name string, data []byte) string {
	e.t.Helper()
	p := e.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// read returns a file's content, failing the test if it is missing.
func (e *env) read(path string) []byte {
	e.t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatal(err)
	}
	return data
}

// mask replaces old by new in golden comparisons.
func (e *env) mask(old, replacement string) { e.masks = append(e.masks, mask{old, replacement}) }

type result struct {
	stdout, stderr string
	code           int
}

// run executes the CLI with args.
func (e *env) run(args ...string) result {
	e.t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := Execute(ctx, args, Options{
		Stdin:     strings.NewReader(""),
		Stdout:    &stdout,
		Stderr:    &stderr,
		Verifier:  e.verifier,
		ConfigDir: func() (string, error) { return filepath.Join(e.dir, "config"), nil },
	})
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// ok runs the CLI and fails the test unless it succeeds.
func (e *env) ok(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("marblerun %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// fail runs the CLI, expects it to fail and checks that stderr contains
// every string in want.
func (e *env) fail(want []string, args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code == 0 {
		e.t.Fatalf("marblerun %s: succeeded, want failure\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "Error: ") {
		e.t.Errorf("marblerun %s: stderr has no \"Error: \" line:\n%s", strings.Join(args, " "), r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			e.t.Errorf("marblerun %s: stderr lacks %q:\n%s", strings.Join(args, " "), w, r.stderr)
		}
	}
	return r
}

var (
	timeRE = regexp.MustCompile(`"time":"[^"]*"`)
	portRE = regexp.MustCompile(`127\.0\.0\.1:\d+`)
)

// golden compares got, masked, with testdata/<name>.golden.
func (e *env) golden(name, got string) {
	e.t.Helper()
	for _, m := range e.masks {
		got = strings.ReplaceAll(got, m.old, m.new)
	}
	got = timeRE.ReplaceAllString(got, `"time":"<TIME>"`)
	got = portRE.ReplaceAllString(got, "127.0.0.1:<PORT>")
	path := filepath.Join(e.testdata, name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			e.t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		e.t.Fatalf("%v (run go test with -update to create it)", err)
	}
	if got != string(want) {
		e.t.Errorf("output differs from %s (run go test with -update to accept):\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

// testCA is a Coordinator-like CA: a self-signed root and an intermediate
// it signed.
type testCA struct {
	root, intermediate *x509.Certificate
	rootKey            *ecdsa.PrivateKey
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test Coordinator"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	itmpl := *tmpl
	itmpl.SerialNumber = big.NewInt(2)
	itmpl.Subject = pkix.Name{CommonName: "Test Coordinator - Intermediate CA"}
	ider, err := x509.CreateCertificate(rand.Reader, &itmpl, root, &interKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(ider)
	return &testCA{root: root, intermediate: inter, rootKey: rootKey}
}

// chainPEM is the intermediate followed by the root, as the quote
// endpoint sends them.
func (ca *testCA) chainPEM() string {
	return certPEM(ca.intermediate) + certPEM(ca.root)
}

func certPEM(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// pinnedRoot returns the root certificate pinned in the env's cert file.
func (e *env) pinnedRoot() *x509.Certificate {
	e.t.Helper()
	root, _, err := api.ParseCertificateChain(e.read(e.certFile()))
	if err != nil {
		e.t.Fatal(err)
	}
	return root
}

// startCoordinator starts a Coordinator and waits until its mesh API
// serves: a Coordinator stopped before its gRPC server started serving
// reports an error when the test ends.
func startCoordinator(t *testing.T, opts ...coordtest.Option) *coordtest.Coordinator {
	t.Helper()
	c := coordtest.Start(t, opts...)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", c.MeshAddr(),
		&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // only probes that the server accepts
	if err == nil {
		conn.Close()
	}
	return c
}
