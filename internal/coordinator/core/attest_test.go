package core

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/internal/manifest"
)

// fakeIssuer returns the report data as evidence.
type fakeIssuer struct{}

func (fakeIssuer) Issue(_ context.Context, rd [attestation.ReportDataSize]byte) ([]byte, error) {
	return rd[:], nil
}
func (fakeIssuer) Insecure() bool { return false }

// fakeVerifier decodes evidence that is JSON-encoded claims.
type fakeVerifier struct{}

func (fakeVerifier) Verify(_ context.Context, ev []byte) (*attestation.Claims, error) {
	var c attestation.Claims
	if err := json.Unmarshal(ev, &c); err != nil {
		return nil, errors.New("quote signature invalid")
	}
	return &c, nil
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestNewRefusesInsecureOutsideSimulation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"simulation issuer", Config{Issuer: attestation.SimulationIssuer{}, Verifier: fakeVerifier{}, Store: store.NewMemory()}, "insecure"},
		{"no verifier", Config{Issuer: fakeIssuer{}, Store: store.NewMemory()}, "verifier"},
		{"no issuer", Config{Simulation: true, Store: store.NewMemory()}, "issuer"},
		{"no store", Config{Simulation: true, Issuer: attestation.SimulationIssuer{}}, "store"},
		{"TEE named simulation", Config{Issuer: fakeIssuer{}, Verifier: fakeVerifier{}, Store: store.NewMemory(), TEE: TEESimulation}, "named simulation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error about %q", err, tc.want)
			}
		})
	}
}

func TestQuoteBindsRootAndNonce(t *testing.T) {
	c, err := New(Config{Issuer: fakeIssuer{}, Verifier: fakeVerifier{}, Store: store.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	if _, msg := c.Status(); strings.Contains(msg, "SIMULATION") || !strings.HasSuffix(msg, " TEE: unknown. Seal mode: ProductKey.") {
		t.Fatalf("a Coordinator with a real issuer and no TEE name: status %q", msg)
	}
	root, _ := c.RootCertificate()
	_, q, err := c.Quote(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := attestation.BindHash(root.Raw); string(q) != string(want[:]) {
		t.Fatal("cached quote does not bind the root certificate")
	}
	_, q, err = c.Quote(context.Background(), []byte("nonce"))
	if err != nil {
		t.Fatal(err)
	}
	if want := attestation.BindHash(root.Raw, []byte("nonce")); string(q) != string(want[:]) {
		t.Fatal("nonce quote does not bind root ‖ nonce")
	}

	sim := newSimCore(t, store.NewMemory())
	chain, q, err := sim.Quote(context.Background(), []byte("n"))
	if err != nil || len(q) != 0 || !strings.Contains(string(chain), "CERTIFICATE") {
		t.Fatalf("simulation quote = %q, %v", q, err)
	}
}

func TestActivationVerifiesEvidence(t *testing.T) {
	c, err := New(Config{Issuer: fakeIssuer{}, Verifier: fakeVerifier{}, Store: store.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetManifest(context.Background(), testManifest(t)); err != nil {
		t.Fatal(err)
	}
	id := newMarbleID(t)
	other := newMarbleID(t)
	backendOK := attestation.Claims{UniqueID: mustHex("6b2822ac2585040d4b9397675d54977a71ef292ab5b3c0a6acceca26074ae585"), TCBStatus: "UpToDate", ReportData: attestation.BindHash(id.cert.Raw)}
	frontendOK := attestation.Claims{SignerID: mustHex("43361affedeb75affee9baec7e054a5e14883213e5a121b67d74a0e12e9d2b7a"), ProductID: 43, SecurityVersion: 3, TCBStatus: "SWHardeningNeeded", ReportData: attestation.BindHash(id.cert.Raw)}
	with := func(base attestation.Claims, f func(*attestation.Claims)) []byte {
		f(&base)
		raw, _ := json.Marshal(base)
		return raw
	}
	tests := []struct {
		name  string
		typ   string
		quote []byte
		want  string // empty: accepted
	}{
		{"backend accepted", "backend", with(backendOK, func(*attestation.Claims) {}), ""},
		{"frontend accepted with SWHardeningNeeded", "frontend", with(frontendOK, func(*attestation.Claims) {}), ""},
		{"frontend newer SVN accepted", "frontend", with(frontendOK, func(c *attestation.Claims) { c.SecurityVersion = 9 }), ""},
		{"empty evidence", "backend", nil, "invalid evidence"},
		{"garbage evidence", "backend", []byte("xx"), "invalid evidence"},
		{"binds another certificate", "backend", with(backendOK, func(c *attestation.Claims) { c.ReportData = attestation.BindHash(other.cert.Raw) }), "does not bind"},
		{"wrong UniqueID", "backend", with(backendOK, func(c *attestation.Claims) { c.UniqueID = make([]byte, 32) }), "UniqueID (MRENCLAVE): expected 6b2822ac"},
		{"debug enclave", "backend", with(backendOK, func(c *attestation.Claims) { c.Debug = true }), "Debug: expected a production enclave"},
		{"wrong SignerID", "frontend", with(frontendOK, func(c *attestation.Claims) { c.SignerID = make([]byte, 32) }), "SignerID"},
		{"wrong ProductID", "frontend", with(frontendOK, func(c *attestation.Claims) { c.ProductID = 44 }), "ProductID: expected 43, found 44"},
		{"old SVN", "frontend", with(frontendOK, func(c *attestation.Claims) { c.SecurityVersion = 2 }), "SecurityVersion: expected at least 3, found 2"},
		{"out-of-date TCB", "backend", with(backendOK, func(c *attestation.Claims) { c.TCBStatus = "OutOfDate" }), "TCBStatus: expected one of"},
		{"wrong package for type", "frontend", with(backendOK, func(*attestation.Claims) {}), "package \"frontend\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := activate(c, id, tc.typ, uuid1, tc.quote)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if KindOf(err) != KindPermissionDenied || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want permission denied with %q", err, tc.want)
			}
		})
	}
}

func TestCheckPackageAdvisories(t *testing.T) {
	pkg := testPackage()
	pkg.AcceptedTCBStatuses = []string{"swhardeningneeded"}
	pkg.AcceptedAdvisories = []string{"INTEL-SA-00334"}
	claims := &attestation.Claims{TCBStatus: "SWHardeningNeeded", Advisories: []string{"INTEL-SA-00334"}}
	if err := checkPackage(pkg, claims); err != nil {
		t.Fatalf("accepted advisory rejected: %v", err)
	}
	claims.Advisories = append(claims.Advisories, "INTEL-SA-00615")
	if err := checkPackage(pkg, claims); err == nil || !strings.Contains(err.Error(), "INTEL-SA-00615") {
		t.Fatalf("unaccepted advisory: %v", err)
	}
	claims.TCBStatus = "UpToDate"
	claims.Advisories = nil
	if err := checkPackage(pkg, claims); err == nil {
		t.Fatal("status outside an explicit list accepted")
	}
}

func testPackage() manifest.Package { return manifest.Package{} }

func TestTEENameReported(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantTEE string
		wantMsg string
	}{
		{"gramine", Config{Issuer: fakeIssuer{}, Verifier: fakeVerifier{}, TEE: "gramine-sgx"}, "gramine-sgx", " TEE: gramine-sgx."},
		{"simulation ignores the name", Config{Simulation: true, Issuer: attestation.SimulationIssuer{}, TEE: "gramine-sgx"}, TEESimulation, "SIMULATION MODE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			tc.cfg.Store, tc.cfg.Metrics, tc.cfg.RecoveryKeyBits = store.NewMemory(), NewMetrics(reg), 2048
			c, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c.TEE() != tc.wantTEE {
				t.Fatalf("TEE %q, want %q", c.TEE(), tc.wantTEE)
			}
			if _, msg := c.Status(); !strings.Contains(msg, tc.wantMsg) {
				t.Fatalf("status %q lacks %q", msg, tc.wantMsg)
			}
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			var labels []string
			for _, mf := range mfs {
				if mf.GetName() != "coordinator_tee_info" {
					continue
				}
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						labels = append(labels, fmt.Sprintf("%s=%s:%v", l.GetName(), l.GetValue(), m.GetGauge().GetValue()))
					}
				}
			}
			if want := []string{"tee=" + tc.wantTEE + ":1"}; !slices.Equal(labels, want) {
				t.Fatalf("coordinator_tee_info %v, want %v", labels, want)
			}
		})
	}
}
