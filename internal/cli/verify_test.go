package cli

import (
	"crypto/x509"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/attestation"
)

// TestVerification runs verifying commands against a real Coordinator
// behind a proxy that adds evidence, checked by a fake verifier.
func TestVerification(t *testing.T) {
	t.Parallel()
	c := startCoordinator(t)
	c.SetManifest(t, readTestdata(t, "manifest.json"))
	uniqueID := strings.Repeat("11", 32)
	signerEra := map[string]any{"SignerID": strings.Repeat("22", 32), "ProductID": 3, "SecurityVersion": 5}
	with := func(f func(*attestation.Claims)) attestation.Claims {
		cl := goodClaims()
		f(&cl)
		return cl
	}

	for _, tc := range []struct {
		name  string
		iss   issuer
		era   map[string]any
		flags []string
		want  []string // empty: must succeed
	}{
		{name: "unique id", iss: honest(goodClaims()), era: map[string]any{"UniqueID": uniqueID}},
		{name: "signer id", iss: honest(goodClaims()), era: signerEra},
		{name: "higher svn", iss: honest(with(func(c *attestation.Claims) { c.SecurityVersion = 6 })), era: signerEra},
		{name: "lower svn", iss: honest(with(func(c *attestation.Claims) { c.SecurityVersion = 4 })), era: signerEra,
			want: []string{"SecurityVersion: expected at least 5, found 4", "Do not trust this Coordinator"}},
		{name: "wrong product", iss: honest(with(func(c *attestation.Claims) { c.ProductID = 4 })), era: signerEra,
			want: []string{"ProductID: expected 3, found 4"}},
		{name: "wrong unique id", iss: honest(with(func(c *attestation.Claims) { c.UniqueID = bytesOf(0x12) })), era: map[string]any{"UniqueID": uniqueID},
			want: []string{"UniqueID (MRENCLAVE): expected " + uniqueID + ", found " + strings.Repeat("12", 32)}},
		{name: "wrong signer", iss: honest(with(func(c *attestation.Claims) { c.SignerID = bytesOf(0x23) })), era: signerEra,
			want: []string{"SignerID (MRSIGNER): expected 2222", "found 2323"}},
		{name: "debug refused", iss: honest(with(func(c *attestation.Claims) { c.Debug = true })), era: map[string]any{"UniqueID": uniqueID},
			want: []string{"Debug: expected a production enclave, found a debug enclave"}},
		{name: "debug accepted", iss: honest(with(func(c *attestation.Claims) { c.Debug = true })), era: map[string]any{"UniqueID": uniqueID, "Debug": true}},
		{name: "tcb out of date", iss: honest(with(func(c *attestation.Claims) { c.TCBStatus = "OutOfDate" })), era: map[string]any{"UniqueID": uniqueID},
			want: []string{"TCBStatus: expected one of [UpToDate SWHardeningNeeded], found OutOfDate"}},
		{name: "tcb accepted by flag", iss: honest(with(func(c *attestation.Claims) { c.TCBStatus = "OutOfDate" })), era: map[string]any{"UniqueID": uniqueID},
			flags: []string{"--accepted-tcb-statuses", "UpToDate,OutOfDate"}},
		{name: "tcb accepted by era config", iss: honest(with(func(c *attestation.Claims) { c.TCBStatus = "OutOfDate" })),
			era: map[string]any{"UniqueID": uniqueID, "AcceptedTCBStatuses": []string{"OutOfDate"}}},
		{name: "flag overrides era config", iss: honest(with(func(c *attestation.Claims) { c.TCBStatus = "OutOfDate" })),
			era: map[string]any{"UniqueID": uniqueID, "AcceptedTCBStatuses": []string{"OutOfDate"}}, flags: []string{"--accepted-tcb-statuses", "UpToDate"},
			want: []string{"TCBStatus: expected one of [UpToDate], found OutOfDate"}},
		{name: "unknown tcb flag", iss: honest(goodClaims()), era: map[string]any{"UniqueID": uniqueID}, flags: []string{"--accepted-tcb-statuses", "Fine"},
			want: []string{"--accepted-tcb-statuses", "unknown TCB status \"Fine\""}},
		{name: "advisory accepted", iss: honest(with(func(c *attestation.Claims) {
			c.TCBStatus, c.Advisories = "SWHardeningNeeded", []string{"INTEL-SA-00615"}
		})),
			era: map[string]any{"UniqueID": uniqueID}, flags: []string{"--accepted-advisories", "INTEL-SA-00615"}},
		{name: "advisory refused", iss: honest(with(func(c *attestation.Claims) {
			c.TCBStatus, c.Advisories = "SWHardeningNeeded", []string{"INTEL-SA-00615"}
		})),
			era: map[string]any{"UniqueID": uniqueID}, flags: []string{"--accepted-advisories", "INTEL-SA-00334"},
			want: []string{"Advisories: expected only [INTEL-SA-00334], found INTEL-SA-00615"}},
		{name: "nonce bound", iss: honest(goodClaims()), era: map[string]any{"UniqueID": uniqueID}, flags: []string{"--nonce", "fresh-123"}},
		{name: "nonce ignored", iss: nonceIgnoring(goodClaims()), era: map[string]any{"UniqueID": uniqueID}, flags: []string{"--nonce", "fresh-123"},
			want: []string{"report data is not the SHA-256 of the root certificate and the nonce"}},
		{name: "other root bound", iss: func(_ *x509.Certificate, nonce []byte) []byte {
			return fakeEvidence(goodClaims(), attestation.BindHash([]byte("another root"), nonce))
		}, era: map[string]any{"UniqueID": uniqueID}, want: []string{"report data is not the SHA-256 of the root certificate"}},
		{name: "incomplete era config", iss: honest(goodClaims()), era: map[string]any{"SignerID": strings.Repeat("22", 32)},
			want: []string{"era.json: the expected identity is incomplete", "missing: ProductID, SecurityVersion"}},
		{name: "misspelt era config", iss: honest(goodClaims()), era: map[string]any{"UniqeID": uniqueID},
			want: []string{"unknown field \"UniqeID\""}},
		{name: "insecure era config", iss: honest(goodClaims()), era: map[string]any{"UniqueID": uniqueID, "InsecureSkipVerify": true},
			want: []string{"must not turn off verification"}},
		{name: "nonce in era config", iss: honest(goodClaims()), era: map[string]any{"UniqueID": uniqueID, "Nonce": "bm9uY2U="},
			want: []string{"sets Nonce", "pass --nonce"}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			proxy := newAttestingProxy(t, c, tc.iss)
			addr := strings.TrimPrefix(proxy.URL, "https://")
			e := newEnv(t)
			e.verifier = fakeVerifier{}
			args := append([]string{"manifest", "get", addr, "--era-config", e.writeEra("era.json", tc.era)}, tc.flags...)
			if len(tc.want) > 0 {
				e.fail(tc.want, args...)
				if _, err := os.Stat(e.certFile()); !os.IsNotExist(err) {
					t.Error("a refused Coordinator was pinned")
				}
				return
			}
			r := e.ok(args...)
			if r.stdout != string(readTestdata(t, "manifest.json")) {
				t.Errorf("manifest get through the verified proxy printed %q", r.stdout)
			}
			if strings.Contains(r.stderr, "WARNING") || !strings.Contains(r.stderr, "Pinned") {
				t.Errorf("stderr: %q", r.stderr)
			}
			if !e.pinnedRoot().Equal(c.RootCertificate()) {
				t.Error("the verified root was not pinned")
			}
		})
	}
}

// TestVerificationDefaults covers the era config's default location and the
// quote file; it changes the working folder, so it does not run in
// parallel.
func TestVerificationDefaults(t *testing.T) {
	c := startCoordinator(t)
	proxy := newAttestingProxy(t, c, honest(goodClaims()))
	addr := strings.TrimPrefix(proxy.URL, "https://")
	e := newEnv(t)
	e.verifier = fakeVerifier{}
	t.Chdir(e.dir)

	r := e.fail([]string{"no era config", "./era-config.json", "never downloads"}, "certificate", "root", addr)
	e.golden("no_era_config", r.stderr)
	e.fail([]string{"reading the era config", "no such file or directory"}, "certificate", "root", addr, "--era-config", "missing.json")

	e.writeEra("era-config.json", map[string]any{"UniqueID": strings.Repeat("11", 32)})
	r = e.ok("certificate", "root", addr, "--save-sgx-quote", "quote.bin", "--nonce", "n1")
	if r.stdout != "Certificate (root) written to marblerunRootCA.crt.\n" {
		t.Errorf("certificate root: %q", r.stdout)
	}
	if got := string(e.read(e.path("marblerunRootCA.crt"))); got != certPEM(c.RootCertificate()) {
		t.Errorf("default output file holds %q", got)
	}
	var saved attestation.Claims
	if err := json.Unmarshal(e.read(e.path("quote.bin")), &saved); err != nil ||
		saved.ReportData != attestation.BindHash(c.RootCertificate().Raw, []byte("n1")) {
		t.Errorf("--save-sgx-quote saved %q: %v", e.read(e.path("quote.bin")), err)
	}
	if !e.pinnedRoot().Equal(c.RootCertificate()) || api.Fingerprint(e.pinnedRoot()) != api.Fingerprint(c.RootCertificate()) {
		t.Error("the verified root was not pinned")
	}
}

// TestPinRefusesVerifiedChangedRoot: without --insecure, a Coordinator that
// passes verification but presents another root than the pinned one is
// refused, and the refusal names manifest verify and changes nothing.
func TestPinRefusesVerifiedChangedRoot(t *testing.T) {
	t.Parallel()
	a, b := startCoordinator(t), startCoordinator(t)
	era := map[string]any{"UniqueID": strings.Repeat("11", 32)}
	proxyA := newAttestingProxy(t, a, honest(goodClaims()))
	proxyB := newAttestingProxy(t, b, honest(goodClaims()))
	addrA := strings.TrimPrefix(proxyA.URL, "https://")
	addrB := strings.TrimPrefix(proxyB.URL, "https://")
	e := newEnv(t)
	e.verifier = fakeVerifier{}
	eraFile := e.writeEra("era.json", era)
	e.ok("certificate", "root", addrA, "--era-config", eraFile, "-o", e.path("a.crt"))
	pinned := string(e.read(e.certFile()))
	e.fail([]string{"differs from the pinned one", "'marblerun manifest verify <manifest> " + addrB + "'"},
		"certificate", "root", addrB, "--era-config", eraFile, "-o", e.path("b.crt"))
	if string(e.read(e.certFile())) != pinned {
		t.Fatal("a refused command changed the pinned certificate")
	}
	if _, err := os.Stat(e.path("b.crt")); !os.IsNotExist(err) {
		t.Fatal("a refused certificate command wrote the certificate")
	}
}
