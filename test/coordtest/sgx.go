package coordtest

import (
	"crypto/rand"
	"os"
	"testing"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/test/issuertest"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

// WithAttestationDir runs the Coordinator outside simulation, detecting
// Gramine in dir.
func WithAttestationDir(dir string) Option {
	return func(c *coordinator.Config) { c.Simulation, c.AttestationDir = false, dir }
}

// WithSealMode chooses the Gramine sealing key.
func WithSealMode(m coordinator.SealMode) Option {
	return func(c *coordinator.Config) { c.SealMode = m }
}

// WithIssuer produces the Coordinator's evidence with i (outside
// simulation).
func WithIssuer(i attestation.Issuer) Option {
	return func(c *coordinator.Config) { c.Issuer = i }
}

// WithVerifier checks marble evidence with v (outside simulation).
func WithVerifier(v attestation.Verifier) Option {
	return func(c *coordinator.Config) { c.Verifier = v }
}

// SGX is a synthetic SGX platform for a Coordinator outside simulation: a
// Gramine attestation folder (a quote file and both 16-byte sealing keys)
// and a synthetic DCAP PKI whose quotes Verifier accepts at sgxtest.Now.
type SGX struct {
	PKI      *sgxtest.PKI
	Verifier *sgx.Verifier
	// AttestationDir is the Gramine folder; its keys/ hold random keys.
	AttestationDir string
}

// NewSGX creates a synthetic SGX platform in a temporary folder.
func NewSGX(t testing.TB) *SGX {
	t.Helper()
	p, err := sgxtest.New()
	if err != nil {
		t.Fatal(err)
	}
	col, err := p.Collateral(nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := p.Verifier(col, sgx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &SGX{PKI: p, Verifier: v, AttestationDir: NewGramineDir(t, true)}
}

// NewGramineDir creates a Gramine attestation folder with random sealing
// keys in keys/ and, when withQuote, a quote file, as gramine-sgx with
// sgx.remote_attestation = "dcap" shows it.
func NewGramineDir(t testing.TB, withQuote bool) string {
	t.Helper()
	g := issuertest.Gramine{AttestationType: "none", Keys: true, SignerKey: make([]byte, 16), EnclaveKey: make([]byte, 16)}
	for _, key := range [][]byte{g.SignerKey, g.EnclaveKey} {
		if _, err := rand.Read(key); err != nil {
			t.Fatal(err)
		}
	}
	if withQuote {
		g.AttestationType, g.Quote = "dcap", []byte{}
	}
	return g.Create(t)
}

// WriteFile writes b to path or fails the test.
func WriteFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Issuer returns an issuer of synthetic quotes binding the requested
// report data, after parts (if not nil) adjusts them.
func (s *SGX) Issuer(parts func(*sgxtest.QuoteParts)) attestation.Issuer {
	return sgxtest.Issuer{PKI: s.PKI, Parts: parts}
}

// Option runs the Coordinator outside simulation on this platform: the TEE
// and its sealing key are detected in AttestationDir, its evidence is a
// synthetic quote with sgxtest.DefaultQuoteParts, and marble evidence is
// checked by Verifier.
func (s *SGX) Option() Option {
	return func(c *coordinator.Config) {
		WithAttestationDir(s.AttestationDir)(c)
		c.Issuer, c.Verifier = s.Issuer(nil), s.Verifier
	}
}
