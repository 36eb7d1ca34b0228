package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/api/wire"
)

// TestLegacyFallback runs every command against a Coordinator that only
// has the legacy v1 API: each call tries /api/v2 first and falls back on
// 405.
func TestLegacyFallback(t *testing.T) {
	t.Parallel()
	f := newFakeCoordinator(t, true)
	addr := f.addr()
	e := newEnv(t)
	e.mask(api.Fingerprint(f.ca.root), "<ROOT-SHA256>")
	alice := e.newUser("alice")
	asAlice := []string{"-c", alice.cert, "-k", alice.key}
	manifest := readTestdata(t, "manifest.json")

	r := e.ok("manifest", "set", "testdata/manifest.json", addr, "-i")
	e.golden("legacy_manifest_set", r.stdout)
	if string(f.body("POST", "/manifest")) != string(manifest) {
		t.Errorf("v1 manifest set sent %q, want the raw manifest", f.body("POST", "/manifest"))
	}
	if got := e.ok("status", addr).stdout; got != "3: fake is running\n" {
		t.Errorf("status = %q", got)
	}
	if got := e.ok("manifest", "get", addr, "-i").stdout; got != string(manifest) {
		t.Errorf("manifest get = %q", got)
	}
	var shown struct {
		Packages map[string]struct{ SecurityVersion int }
	}
	if err := json.Unmarshal([]byte(e.ok("manifest", "get", addr, "-i", "-u").stdout), &shown); err != nil || shown.Packages["backend"].SecurityVersion != 4 {
		t.Errorf("manifest get -u: %+v %v", shown, err)
	}
	e.golden("legacy_manifest_log", e.ok("manifest", "log", addr).stdout)

	r = e.ok(append([]string{"manifest", "update", "apply", "testdata/manifest.json", addr}, asAlice...)...)
	if r.stdout != "Update manifest set successfully.\n" || string(f.body("POST", "/update")) != string(manifest) {
		t.Errorf("v1 update apply: %q, body %q", r.stdout, f.body("POST", "/update"))
	}
	if got := e.ok("manifest", "update", "get", addr).stdout; got != string(manifest) {
		t.Errorf("update get = %q", got)
	}
	r = e.ok(append([]string{"manifest", "update", "acknowledge", "testdata/manifest.json", addr}, asAlice...)...)
	if r.stdout != "All users have acknowledged the update manifest. Update successfully applied\n" {
		t.Errorf("v1 acknowledge: %q", r.stdout)
	}
	e.ok(append([]string{"manifest", "update", "apply", "testdata/manifest.json", addr}, asAlice...)...)
	if got := e.ok(append([]string{"manifest", "update", "cancel", addr}, asAlice...)...).stdout; got != "Update successfully cancelled\n" {
		t.Errorf("v1 cancel: %q", got)
	}
	// Nothing pending exits 1, as MarbleRun's CLI does.
	if r := e.fail([]string{"no manifest update is pending", "manifest update apply"}, "manifest", "update", "get", addr); r.code != 1 || r.stdout != "" {
		t.Errorf("update get without pending update: exit %d, stdout %q", r.code, r.stdout)
	}

	r = e.ok(append([]string{"secret", "get", "apiKey", addr, "-i"}, asAlice...)...)
	e.golden("legacy_secret_get", r.stdout)
	e.write("secrets.json", []byte(`{"apiKey": {"Key": "aGVsbG8="}}`))
	e.ok(append([]string{"secret", "set", e.path("secrets.json"), addr, "-i"}, asAlice...)...)
	var sent map[string]map[string]string
	if err := json.Unmarshal(f.body("POST", "/secrets"), &sent); err != nil || sent["apiKey"]["Key"] != "aGVsbG8=" {
		t.Errorf("v1 secret set sent %q: %v", f.body("POST", "/secrets"), err)
	}

	// v2-only requests do not fall back.
	e.write("secret.bin", make([]byte, 32))
	rk := e.newRecoveryKey("owner")
	e.fail([]string{"does not support this request", "POST /api/v2/recover", "v2 API"}, "recover", e.path("secret.bin"), addr, "-i", "-k", rk.file)
	e.fail([]string{"does not support this request"}, "recover-with-signature", "public-key", addr, "-i")
	e.fail([]string{"does not support this request", "GET /api/v2/quote"}, "certificate", "root", addr, "-i", "--nonce", "abc")

	// Every v1 request was preceded by its v2 attempt.
	reqs := f.requested()
	for i, req := range reqs {
		if strings.Contains(req, "/api/v2/") {
			continue
		}
		method, path, _ := strings.Cut(req, " ")
		if i == 0 || reqs[i-1] != method+" /api/v2"+path {
			t.Errorf("request %q was not preceded by its v2 attempt (requests: %v)", req, reqs)
		}
	}
	for _, want := range []string{"GET /quote", "POST /manifest", "GET /status", "GET /manifest", "GET /update", "POST /update", "GET /update-manifest", "POST /update-manifest", "POST /update-cancel", "GET /secrets", "POST /secrets"} {
		if !slices.Contains(reqs, want) {
			t.Errorf("no fallback request %q (requests: %v)", want, reqs)
		}
	}
}

// writeEra writes an era config and returns its path.
func (e *env) writeEra(name string, cfg map[string]any) string {
	e.t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.write(name, raw)
}

// TestFakeV2 runs the governance commands against a v2 Coordinator whose
// quote is verified with a fake verifier, without --insecure.
func TestFakeV2(t *testing.T) {
	t.Parallel()
	f := newFakeCoordinator(t, false)
	f.issue = honest(goodClaims())
	addr := f.addr()
	e := newEnv(t)
	e.verifier = fakeVerifier{}
	e.mask(api.Fingerprint(f.ca.root), "<ROOT-SHA256>")
	era := e.writeEra("era.json", map[string]any{"UniqueID": strings.Repeat("11", 32)})
	alice := e.newUser("alice")
	v := []string{"--era-config", era}
	asAlice := append([]string{"-c", alice.cert, "-k", alice.key}, v...)

	r := e.ok(append([]string{"manifest", "set", "testdata/manifest.json", addr, "--format", "json"}, v...)...)
	var set struct {
		ManifestSignature string            `json:"manifestSignature"`
		RecoverySecrets   map[string][]byte `json:"recoverySecrets"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &set); err != nil || set.ManifestSignature != api.ManifestFingerprint(readTestdata(t, "manifest.json")) ||
		string(set.RecoverySecrets["owner"]) != "encrypted" {
		t.Fatalf("manifest set --format json: %+v %v", set, err)
	}
	if strings.Contains(r.stderr, "WARNING") {
		t.Errorf("a verified command warned: %q", r.stderr)
	}
	var sent struct {
		Manifest []byte `json:"manifest"`
	}
	if err := json.Unmarshal(f.body("POST", "/api/v2/manifest"), &sent); err != nil || string(sent.Manifest) != string(readTestdata(t, "manifest.json")) {
		t.Errorf("v2 manifest set sent %q", f.body("POST", "/api/v2/manifest"))
	}

	r = e.ok(append([]string{"secret", "get", "apiKey", addr}, asAlice...)...)
	e.golden("secret_get", r.stdout)
	e.write("secrets.json", []byte(`{"apiKey": {"Key": "aGVsbG8="}}`))
	e.ok(append([]string{"secret", "set", e.path("secrets.json"), addr}, asAlice...)...)
	var secrets struct {
		Secrets map[string]map[string]string `json:"secrets"`
	}
	if err := json.Unmarshal(f.body("POST", "/api/v2/secrets"), &secrets); err != nil || secrets.Secrets["apiKey"]["Key"] != "aGVsbG8=" {
		t.Errorf("v2 secret set sent %q: %v", f.body("POST", "/api/v2/secrets"), err)
	}

	asAliceNoEra := []string{"-c", alice.cert, "-k", alice.key}
	r = e.ok(append([]string{"manifest", "update", "apply", "testdata/manifest.yaml", addr}, asAliceNoEra...)...)
	if r.stdout != "The update is pending: 1 more acknowledgement(s) needed, from: bob.\n" {
		t.Errorf("update apply: %q", r.stdout)
	}
	var upd struct {
		Manifest []byte `json:"manifest"`
	}
	if err := json.Unmarshal(f.body("POST", "/api/v2/update"), &upd); err != nil || string(upd.Manifest) != string(yamlManifest(t)) {
		t.Errorf("update apply sent %q, want the JSON conversion", f.body("POST", "/api/v2/update"))
	}
	e.golden("update_get_missing", e.ok("manifest", "update", "get", addr, "--missing").stdout)
	r = e.ok(append([]string{"manifest", "update", "acknowledge", "testdata/manifest.yaml", addr}, asAliceNoEra...)...)
	e.golden("update_acknowledge", r.stdout)
	e.fail([]string{"no manifest update is pending", "HTTP 404", "manifest update apply"}, append([]string{"manifest", "update", "acknowledge", "testdata/manifest.yaml", addr}, asAliceNoEra...)...)
	var none struct {
		Pending bool `json:"pending"`
	}
	if err := json.Unmarshal([]byte(e.fail([]string{"no manifest update is pending"}, "manifest", "update", "get", addr, "--format", "json").stdout), &none); err != nil || none.Pending {
		t.Errorf("update get --format json without pending update: %+v %v", none, err)
	}

	// Recovery completes after two uploads.
	rk := e.newRecoveryKey("owner")
	e.write("secret.bin", make([]byte, 32))
	r = e.ok(append([]string{"recover", e.path("secret.bin"), addr, "-k", rk.file}, v...)...)
	if r.stdout != "Secret successfully uploaded: 1 more secret(s) needed to recover the Coordinator.\n" {
		t.Errorf("first recover: %q", r.stdout)
	}
	var body struct {
		Secret    []byte `json:"recoverySecret"`
		Signature []byte `json:"recoverySecretSignature"`
	}
	if err := json.Unmarshal(f.body("POST", "/api/v2/recover"), &body); err != nil || len(body.Secret) != 32 || len(body.Signature) != 256 {
		t.Errorf("recover sent %q", f.body("POST", "/api/v2/recover"))
	}
	r = e.ok(append([]string{"recover", e.path("secret.bin"), addr, "-k", rk.file, "--format", "json"}, v...)...)
	if r.stdout != "{\n  \"remaining\": 0,\n  \"message\": \"Recovery successful.\"\n}\n" {
		t.Errorf("second recover: %q", r.stdout)
	}
	pub := e.ok(append([]string{"recover-with-signature", "public-key", addr}, v...)...).stdout
	if b, _ := pem.Decode([]byte(pub)); b == nil || b.Type != "PUBLIC KEY" {
		t.Errorf("public-key printed %q", pub)
	}
	e.fail([]string{"neither a plain recovery secret", "2048-bit key"}, "recover", e.write("odd.bin", make([]byte, 40)), addr, "-k", rk.file, "--era-config", era)
	e.fail([]string{"not a PEM private key"}, "recover", e.path("secret.bin"), addr, "-k", e.path("secrets.json"), "--era-config", era)
	e.fail([]string{`required flag(s) "key" not set`}, "recover", e.path("secret.bin"), addr)
}

// TestIntermediateRefresh checks that a verifying command replaces the
// pinned intermediate when the Coordinator's root signed a new one.
func TestIntermediateRefresh(t *testing.T) {
	t.Parallel()
	f := newFakeCoordinator(t, false)
	e := newEnv(t)
	e.ok("certificate", "chain", f.addr(), "-i", "-o", e.path("chain.crt"))
	if !pinnedIntermediate(t, e).Equal(f.ca.intermediate) {
		t.Fatal("the intermediate was not pinned")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "new intermediate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca.root, &key.PublicKey, f.ca.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	newInter, _ := x509.ParseCertificate(der)
	f.mu.Lock()
	f.ca.intermediate = newInter
	f.mu.Unlock()
	e.ok("certificate", "intermediate", f.addr(), "-i", "-o", e.path("inter.crt"))
	if !pinnedIntermediate(t, e).Equal(newInter) || !e.pinnedRoot().Equal(f.ca.root) {
		t.Fatal("the pinned intermediate was not refreshed")
	}
	if string(e.read(e.path("inter.crt"))) != certPEM(newInter) {
		t.Error("certificate intermediate wrote the old intermediate")
	}
}

// TestUnverifiableQuote checks the refusals when a quote cannot be
// verified.
func TestUnverifiableQuote(t *testing.T) {
	t.Parallel()
	f := newFakeCoordinator(t, false)
	f.issue = honest(goodClaims())
	e := newEnv(t)
	era := e.writeEra("era.json", map[string]any{"UniqueID": strings.Repeat("11", 32)})
	// No verifier in this build: the quote cannot be checked.
	r := e.fail([]string{"no SGX quote verifier is available", "--insecure"}, "certificate", "root", f.addr(), "--era-config", era, "-o", e.path("r.crt"))
	e.golden("no_verifier", r.stderr)
	r = e.ok("certificate", "root", f.addr(), "-i", "-o", e.path("r.crt"), "--save-sgx-quote", e.path("quote"))
	if !strings.Contains(r.stderr, "NOT verified") || string(e.read(e.path("quote"))) != string(honest(goodClaims())(f.ca.root, nil)) {
		t.Errorf("--insecure with a quote: %q", r.stderr)
	}
	// A changed quote in the answer fails verification.
	e.verifier = fakeVerifier{}
	f.issue = func(*x509.Certificate, []byte) []byte { return []byte("garbage") }
	e.fail([]string{"the quote is invalid: not a fake quote", "Do not trust this Coordinator"}, "certificate", "root", f.addr(), "--era-config", era, "-o", e.path("r.crt"))
}

// TestStatusReplicas: status prints every replica of a distributed
// Coordinator, one line each, unreachable ones included, and its JSON
// carries the list.
func TestStatusReplicas(t *testing.T) {
	t.Parallel()
	f := newFakeCoordinator(t, false)
	f.replicas = []wire.ReplicaStatus{
		{Name: "coordinator-0", Ready: true, Generation: 12, StoreBackend: "k8s-secret"},
		{Name: "coordinator-1", Degraded: true, Reason: "no round trip to the store has succeeded for 4s", Generation: 11, StoreBackend: "k8s-secret"},
		{Name: "coordinator-2", Reason: "unreachable: key API peer 10.0.0.9:5433: context deadline exceeded"},
	}
	addr := f.addr()
	e := newEnv(t)
	r := e.ok("status", addr, "--insecure")
	e.golden("status_replicas", r.stdout)
	var st struct {
		Replicas []wire.ReplicaStatus `json:"replicas"`
	}
	if err := json.Unmarshal([]byte(e.ok("status", addr, "--insecure", "--format", "json").stdout), &st); err != nil || !slices.Equal(st.Replicas, f.replicas) {
		t.Fatalf("status --format json: replicas %+v, want %+v (%v)", st.Replicas, f.replicas, err)
	}
}
