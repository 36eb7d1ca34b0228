package cli

import (
	"encoding/json"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/marblemesh/marblemesh/api"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// yamlManifest is testdata/manifest.yaml as the CLI uploads it.
func yamlManifest(t *testing.T) []byte {
	t.Helper()
	raw, err := yaml.YAMLToJSONStrict(readTestdata(t, "manifest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestCoordinatorManifestFlow drives the manifest, status and certificate
// commands against a real Coordinator in simulation (hence --insecure).
func TestCoordinatorManifestFlow(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t)
	addr := c.ClientAddr()
	e := newEnv(t)
	e.mask(api.Fingerprint(c.RootCertificate()), "<ROOT-SHA256>")

	// Nothing is pinned yet and simulation proves nothing.
	e.fail([]string{"no Coordinator certificate is pinned", "marblerun certificate root " + addr}, "status", addr)
	r := e.fail([]string{"simulation mode", "--insecure"}, "manifest", "set", "testdata/manifest.yaml", addr)
	e.golden("manifest_set_simulation_refused", r.stderr)
	if _, err := os.Stat(e.certFile()); !os.IsNotExist(err) {
		t.Fatalf("a refused command pinned a certificate: %v", err)
	}

	// Set the YAML manifest: it is converted to JSON before upload.
	r = e.ok("manifest", "set", "testdata/manifest.yaml", addr, "-i")
	e.golden("manifest_set", r.stdout)
	e.golden("manifest_set_stderr", r.stderr)
	if !e.pinnedRoot().Equal(c.RootCertificate()) {
		t.Fatal("manifest set did not pin the Coordinator's root")
	}
	raw, _, ok := c.Core().ManifestInfo()
	if !ok || string(raw) != string(yamlManifest(t)) {
		t.Fatalf("the Coordinator got %q, want the JSON conversion of the YAML", raw)
	}

	// status uses the pinned certificate: no warning, no attestation.
	r = e.ok("status", addr)
	e.golden("status", r.stdout)
	if r.stderr != "" {
		t.Errorf("status wrote to stderr: %q", r.stderr)
	}
	var st struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal([]byte(e.ok("status", addr, "--format", "json").stdout), &st); err != nil || st.Code != 3 {
		t.Fatalf("status --format json: %+v %v", st, err)
	}

	// manifest get prints the manifest byte for byte.
	if got := e.ok("manifest", "get", addr, "-i").stdout; got != string(yamlManifest(t)) {
		t.Errorf("manifest get = %q", got)
	}
	var signed struct {
		ManifestSignature string
		Manifest          json.RawMessage
	}
	if err := json.Unmarshal([]byte(e.ok("manifest", "get", addr, "-i", "--signature").stdout), &signed); err != nil ||
		signed.ManifestSignature != api.ManifestFingerprint(yamlManifest(t)) || !json.Valid(signed.Manifest) {
		t.Fatalf("manifest get --signature: %+v %v", signed, err)
	}
	out := e.path("got.json")
	e.ok("manifest", "get", addr, "-i", "-o", out)
	e.ok("manifest", "verify", out, addr, "-i")
	r = e.ok("manifest", "get", addr, "-i", "--keep-cert")
	if !strings.Contains(r.stderr, "deprecated") {
		t.Errorf("--keep-cert is not reported as deprecated: %q", r.stderr)
	}

	// manifest verify: file, YAML, hex signature; a different manifest fails.
	if got := e.ok("manifest", "verify", "testdata/manifest.yaml", addr, "-i").stdout; got != "OK\n" {
		t.Errorf("manifest verify = %q", got)
	}
	e.ok("manifest", "verify", api.ManifestFingerprint(yamlManifest(t)), addr, "-i")
	e.fail([]string{"runs manifest " + api.ManifestFingerprint(yamlManifest(t)) + ", not " + api.ManifestFingerprint(readTestdata(t, "manifest.json")), "Nothing was pinned"},
		"manifest", "verify", "testdata/manifest.json", addr, "-i")
	e.fail([]string{"no such file or directory"}, "manifest", "verify", e.path("nope.json"), addr, "-i")

	// manifest log.
	e.golden("manifest_log", e.ok("manifest", "log", addr).stdout)
	var log struct {
		UpdateLog []map[string]any `json:"updateLog"`
	}
	if err := json.Unmarshal([]byte(e.ok("manifest", "log", addr, "--format", "json").stdout), &log); err != nil ||
		len(log.UpdateLog) != 1 || log.UpdateLog[0]["update"] != "Initial manifest set" {
		t.Fatalf("manifest log --format json: %+v %v", log, err)
	}
	logFile := e.path("log.jsonl")
	e.ok("manifest", "log", addr, "-o", logFile)
	if lines := strings.Split(strings.TrimSpace(string(e.read(logFile))), "\n"); len(lines) != 1 || !json.Valid([]byte(lines[0])) {
		t.Errorf("manifest log -o wrote %q", lines)
	}

	// Certificates.
	chain, _, err := c.Core().Quote(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	wantRoot, wantInter, err := api.ParseCertificateChain(chain)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ cmd, want string }{
		{"root", certPEM(wantRoot)},
		{"intermediate", certPEM(wantInter)},
		{"chain", certPEM(wantInter) + certPEM(wantRoot)},
	} {
		file := e.path(tc.cmd + ".crt")
		r := e.ok("certificate", tc.cmd, addr, "-i", "-o", file)
		if got := string(e.read(file)); got != tc.want {
			t.Errorf("certificate %s wrote %q", tc.cmd, got)
		}
		e.golden("certificate_"+tc.cmd, r.stdout)
	}
	var certOut struct {
		File         string   `json:"file"`
		Fingerprints []string `json:"fingerprints"`
	}
	if err := json.Unmarshal([]byte(e.ok("certificate", "root", addr, "-i", "-o", e.path("r.crt"), "--format", "json").stdout), &certOut); err != nil ||
		certOut.Fingerprints[0] != api.Fingerprint(wantRoot) {
		t.Fatalf("certificate root --format json: %+v %v", certOut, err)
	}

	// --save-sgx-quote writes the (empty, simulation) quote.
	quoteFile := e.path("quote.bin")
	r = e.ok("certificate", "root", addr, "-i", "-o", e.path("r2.crt"), "--save-sgx-quote", quoteFile)
	if q := e.read(quoteFile); len(q) != 0 || !strings.Contains(r.stderr, "is empty") {
		t.Errorf("--save-sgx-quote: %d bytes, stderr %q", len(q), r.stderr)
	}

	// A second manifest set is refused by the Coordinator, with a hint.
	e.fail([]string{"a manifest is already set", "marblerun status " + addr}, "manifest", "set", "testdata/manifest.json", addr, "-i")
}

// TestPinning checks that the first verification pins the Coordinator,
// that a Coordinator with another root is refused, and that manifest
// verify (or set) re-pins.
func TestPinning(t *testing.T) {
	t.Parallel()
	a, b := startCoordinator(t), startCoordinator(t)
	e := newEnv(t)
	e.mask(a.ClientAddr(), "<ADDR-A>")
	e.mask(b.ClientAddr(), "<ADDR-B>")
	e.mask(api.Fingerprint(a.RootCertificate()), "<ROOT-A>")
	e.mask(api.Fingerprint(b.RootCertificate()), "<ROOT-B>")

	r := e.ok("certificate", "root", a.ClientAddr(), "-i", "-o", e.path("a.crt"))
	if !strings.Contains(r.stderr, "Pinned the Coordinator's root certificate") || !e.pinnedRoot().Equal(a.RootCertificate()) {
		t.Fatalf("first use did not pin A: %q", r.stderr)
	}
	pinned := string(e.read(e.certFile()))

	// B has another root. --insecure skips the pin, as in MarbleRun: the
	// commands talk to B, say that the root differs, and leave the pin as
	// it is. (Without --insecure a verified changed root is refused:
	// TestPinRefusesVerifiedChangedRoot.)
	r = e.ok("certificate", "root", b.ClientAddr(), "-i", "-o", e.path("b.crt"))
	if !strings.Contains(r.stderr, "--insecure: the Coordinator presents root SHA-256 "+api.Fingerprint(b.RootCertificate())) || !strings.Contains(r.stderr, "leaving the pin unchanged") {
		t.Errorf("certificate root -i of another Coordinator: %q", r.stderr)
	}
	e.fail([]string{"has no manifest yet"}, "manifest", "log", b.ClientAddr(), "-i") // past the pin: B answers
	// Commands that use the pinned certificate fail the TLS handshake.
	r = e.fail([]string{"does not chain to the trusted root", "marblerun manifest verify <manifest> " + b.ClientAddr()}, "status", b.ClientAddr())
	e.golden("pin_status_refused", r.stderr)
	if string(e.read(e.certFile())) != pinned {
		t.Fatal("a command with --insecure or a refused command changed the pinned certificate")
	}
	// Re-verifying B with its manifest re-pins.
	b.SetManifest(t, readTestdata(t, "manifest.json"))
	e.fail([]string{"runs manifest"}, "manifest", "verify", "testdata/manifest.yaml", b.ClientAddr(), "-i")
	if string(e.read(e.certFile())) != pinned {
		t.Fatal("a failed manifest verify changed the pin")
	}
	r = e.ok("manifest", "verify", "testdata/manifest.json", b.ClientAddr(), "-i")
	e.golden("pin_reverified_stderr", r.stderr)
	if !e.pinnedRoot().Equal(b.RootCertificate()) {
		t.Fatal("manifest verify did not re-pin B")
	}
	e.ok("status", b.ClientAddr())
	e.ok("certificate", "root", b.ClientAddr(), "-i", "-o", e.path("b.crt"))
	e.fail([]string{"does not chain to the trusted root"}, "status", a.ClientAddr())

	// Setting the manifest of a fresh Coordinator pins it too.
	c := startCoordinator(t)
	e.mask(c.ClientAddr(), "<ADDR-C>")
	e.mask(api.Fingerprint(c.RootCertificate()), "<ROOT-C>")
	r = e.ok("manifest", "set", "testdata/manifest.json", c.ClientAddr(), "-i")
	if !strings.Contains(r.stderr, "Replaced the pinned root certificate") || !e.pinnedRoot().Equal(c.RootCertificate()) {
		t.Fatalf("manifest set on a fresh Coordinator did not re-pin: %q", r.stderr)
	}

	// --coordinator-cert selects another pin file.
	other := e.path("other/pin.pem")
	e.ok("certificate", "root", a.ClientAddr(), "-i", "-o", e.path("a2.crt"), "--coordinator-cert", other)
	e.ok("status", a.ClientAddr(), "--coordinator-cert", other)
	e.fail([]string{"does not chain"}, "status", a.ClientAddr())

	// --insecure without a pin: cache commands trust what they get, loudly.
	fresh := newEnv(t)
	r = fresh.ok("status", a.ClientAddr(), "-i")
	if !strings.Contains(r.stderr, "WARNING") || !strings.HasPrefix(r.stdout, "2: ") {
		t.Errorf("status -i without pin: %+v", r)
	}
	if _, err := os.Stat(fresh.certFile()); !os.IsNotExist(err) {
		t.Error("status -i pinned a certificate")
	}
	fresh.write("config/marblerun/coordinator-cert.pem", []byte("garbage"))
	fresh.fail([]string{"no PEM certificate found", "Delete it"}, "status", a.ClientAddr())
}

func TestAddressErrors(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t)
	e := newEnv(t)
	e.fail([]string{"invalid Coordinator address \"localhost\"", "HOST:PORT"}, "certificate", "root", "localhost", "-i")
	e.fail([]string{"invalid Coordinator address", "the client API is HTTPS"}, "status", "http://localhost:4433", "-i")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	e.fail([]string{"connection refused", "Nothing accepts connections at " + closed}, "certificate", "root", closed, "-i")

	plain := httptest.NewServer(nil)
	defer plain.Close()
	plainAddr := strings.TrimPrefix(plain.URL, "http://")
	e.fail([]string{"does not speak TLS"}, "manifest", "get", plainAddr, "-i")

	e.fail([]string{"TLS handshake with " + c.MeshAddr() + " failed", "not the mesh port"}, "certificate", "root", c.MeshAddr(), "-i")
	e.fail([]string{"takes 1 argument(s): <IP:PORT>; got 0"}, "status")
	e.fail([]string{"takes 2 argument(s)"}, "manifest", "set", "testdata/manifest.json")
}

func TestManifestSetChecksLocally(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t)
	e := newEnv(t)
	bad := e.write("bad.json", []byte(`{"Marbles": {"m": {"Package": "missing"}}}`))
	e.fail([]string{"is not a valid manifest", "missing"}, "manifest", "set", bad, c.ClientAddr(), "-i")
	e.fail([]string{"neither JSON nor valid YAML"}, "manifest", "set", e.write("bad.yaml", []byte("a: [")), c.ClientAddr(), "-i")
	e.fail([]string{"reading the manifest"}, "manifest", "set", e.path("none.json"), c.ClientAddr(), "-i")
	if _, _, ok := c.Core().ManifestInfo(); ok {
		t.Fatal("an invalid manifest reached the Coordinator")
	}
	if _, err := os.Stat(e.certFile()); !os.IsNotExist(err) {
		t.Fatal("a failed manifest set pinned a certificate")
	}
}
