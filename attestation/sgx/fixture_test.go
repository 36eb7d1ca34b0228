package sgx_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

// fixturePath returns the recorded-fixture folder beside the module root
// and whether it exists.
func fixturePath() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
	fx := filepath.Join(dir, "..", "shared", "attestation-fixtures", "phala")
	_, err = os.Stat(fx)
	return fx, err == nil
}

// fixtureDir returns the recorded-fixture folder or skips the test when it
// is absent.
func fixtureDir(t testing.TB) string {
	t.Helper()
	fx, ok := fixturePath()
	if !ok {
		t.Skipf("recorded attestation fixtures not found at %q (expected ../shared/attestation-fixtures/phala beside the module root); skipping", fx)
	}
	return fx
}

type phalaFixture struct {
	quote      []byte
	collateral *sgx.Collateral
}

func loadPhala(t testing.TB) phalaFixture {
	t.Helper()
	dir := fixtureDir(t)
	q, err := os.ReadFile(filepath.Join(dir, "sgx_quote"))
	if err != nil {
		t.Fatal(err)
	}
	cj, err := os.ReadFile(filepath.Join(dir, "sgx_quote_collateral.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := sgx.ParseCollateralJSON(cj)
	if err != nil {
		t.Fatal(err)
	}
	return phalaFixture{quote: q, collateral: c}
}

// The documented verification time and the QE Identity nextUpdate of the
// recorded SGX quote.
const (
	phalaTimeUnix   = 1751328000 // 2025-07-01T00:00:00Z
	phalaExpiryUnix = 1752919278 // 2025-07-19T10:01:18Z
)

func newFixtureVerifier(t testing.TB, c *sgx.Collateral, now time.Time) *sgx.Verifier {
	t.Helper()
	v, err := sgx.NewVerifier(sgx.StaticProvider{C: c}, sgx.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestPhalaQuoteParses(t *testing.T) {
	fx := loadPhala(t)
	q, err := sgx.ParseQuote(fx.quote)
	if err != nil {
		t.Fatal(err)
	}
	if q.Header.Version != 3 || len(q.QEAuthData) != 32 || q.CertDataType != sgx.CertDataPCKChain || len(q.CertData) != 3548 {
		t.Fatalf("unexpected layout: version %d, auth %d, cert type %d size %d", q.Header.Version, len(q.QEAuthData), q.CertDataType, len(q.CertData))
	}
	if len(q.Signed) != 432 {
		t.Fatalf("signed part: expected 432 bytes, found %d", len(q.Signed))
	}
}

func TestPhalaQuoteVerifies(t *testing.T) {
	fx := loadPhala(t)
	v := newFixtureVerifier(t, fx.collateral, time.Unix(phalaTimeUnix, 0))
	for name, ev := range map[string][]byte{"raw": fx.quote, "oe header": sgxtest.WithOEHeader(fx.quote)} {
		t.Run(name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), ev)
			if err != nil {
				t.Fatal(err)
			}
			if c.TCBStatus != attestation.TCBConfigurationAndSWHardeningNeeded {
				t.Errorf("TCB status: expected %s, found %s", attestation.TCBConfigurationAndSWHardeningNeeded, c.TCBStatus)
			}
			if want := []string{"INTEL-SA-00289", "INTEL-SA-00615"}; !slices.Equal(sortedCopy(c.Advisories), want) {
				t.Errorf("advisories: expected %v, found %v", want, c.Advisories)
			}
			if h := hex.EncodeToString(c.UniqueID); !strings.HasPrefix(h, "33d8736d") || !strings.HasSuffix(h, "2fbb") {
				t.Errorf("MRENCLAVE: found %s", h)
			}
			if h := hex.EncodeToString(c.SignerID); !strings.HasPrefix(h, "815f42f1") || !strings.HasSuffix(h, "e0e6") {
				t.Errorf("MRSIGNER: found %s", h)
			}
			if c.ProductID != 0 || c.SecurityVersion != 0 || c.Debug {
				t.Errorf("ProductID %d, SecurityVersion %d, Debug %v: expected 0, 0, false", c.ProductID, c.SecurityVersion, c.Debug)
			}
			var rd [64]byte
			copy(rd[:], "Hello, world!")
			if c.ReportData != rd {
				t.Errorf("report data: found %q", c.ReportData[:])
			}
		})
	}
	// The last second of the collateral window still verifies; the
	// rejections test the second after it.
	if _, err := newFixtureVerifier(t, fx.collateral, time.Unix(phalaExpiryUnix, 0)).Verify(context.Background(), fx.quote); err != nil {
		t.Errorf("at the collateral's last valid second: %v", err)
	}
	res, err := v.VerifyQuote(context.Background(), mustParse(t, fx.quote), time.Unix(phalaTimeUnix, 0))
	if err != nil {
		t.Fatal(err)
	}
	if res.QEStatus != attestation.TCBUpToDate || res.TCBEvaluationDataNumber != 17 || hex.EncodeToString(res.PCK.FMSPC) != "00a067110000" {
		t.Errorf("QE status %s, eval number %d, FMSPC %x", res.QEStatus, res.TCBEvaluationDataNumber, res.PCK.FMSPC)
	}
}

func mustParse(t testing.TB, b []byte) *sgx.Quote {
	t.Helper()
	q, err := sgx.ParseQuote(b)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func TestPhalaQuoteRejections(t *testing.T) {
	fx := loadPhala(t)
	flip := func(off int) []byte {
		b := slices.Clone(fx.quote)
		b[off] ^= 0x01
		return b
	}
	certStart := 1020 + 32
	tests := map[string]struct {
		quote   []byte
		now     time.Time
		wantErr error
		msg     string
	}{
		"one second after collateral expiry": {fx.quote, time.Unix(phalaExpiryUnix, 0).Add(time.Second), sgx.ErrExpired, "QE Identity issueDate..nextUpdate: expected not after 2025-07-19T10:01:18Z"},
		"before collateral issue":            {fx.quote, time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), sgx.ErrExpired, "expected not before"},
		"report body bit":                    {flip(sgx.HeaderSize + 64), time.Unix(phalaTimeUnix, 0), sgx.ErrSignature, "ISV quote"},
		"report data bit":                    {flip(368), time.Unix(phalaTimeUnix, 0), sgx.ErrSignature, "ISV quote"},
		"header bit":                         {flip(28), time.Unix(phalaTimeUnix, 0), sgx.ErrSignature, "ISV quote"},
		"signature bit":                      {flip(436 + 5), time.Unix(phalaTimeUnix, 0), sgx.ErrSignature, "ISV quote"},
		"attestation key bit":                {flip(500 + 10), time.Unix(phalaTimeUnix, 0), sgx.ErrBinding, "SHA-256(attestation key"},
		"QE report bit":                      {flip(564 + 64), time.Unix(phalaTimeUnix, 0), sgx.ErrSignature, "QE report"},
		"QE report signature bit":            {flip(948 + 3), time.Unix(phalaTimeUnix, 0), sgx.ErrSignature, "QE report"},
		"QE auth data bit":                   {flip(1014), time.Unix(phalaTimeUnix, 0), sgx.ErrBinding, "QE report data[0:32]"},
		"certification chain bit":            {flip(certStart + 300), time.Unix(phalaTimeUnix, 0), sgx.ErrCertificate, "PCK chain"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			v := newFixtureVerifier(t, fx.collateral, tc.now)
			_, err := v.Verify(context.Background(), tc.quote)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("expected %v containing %q, found %v", tc.wantErr, tc.msg, err)
			}
		})
	}
}

func TestPhalaForeignRoot(t *testing.T) {
	fx := loadPhala(t)
	p := newPKI(t)
	v, err := sgx.NewVerifier(sgx.StaticProvider{C: fx.collateral}, sgx.Options{Root: p.Root, Now: func() time.Time { return time.Unix(phalaTimeUnix, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), fx.quote)
	if !errors.Is(err, sgx.ErrCertificate) || !strings.Contains(err.Error(), "PCK chain root SHA-256: expected") {
		t.Fatalf("expected root mismatch, found %v", err)
	}
}

func TestPhalaCollateralTampered(t *testing.T) {
	fx := loadPhala(t)
	tests := map[string]struct {
		mod  func(c *sgx.Collateral)
		want error
		msg  string
	}{
		"TCB Info byte": {func(c *sgx.Collateral) {
			c.TCBInfo = bytes.Replace(c.TCBInfo, []byte(`"tcbEvaluationDataNumber":17`), []byte(`"tcbEvaluationDataNumber":18`), 1)
		}, sgx.ErrSignature, "TCB Info"},
		"QE Identity byte": {func(c *sgx.Collateral) {
			c.QEIdentity = bytes.Replace(c.QEIdentity, []byte(`"isvsvn":8`), []byte(`"isvsvn":7`), 1)
		}, sgx.ErrSignature, "QE Identity"},
		"PCK CRL byte":      {func(c *sgx.Collateral) { c.PCKCRL[len(c.PCKCRL)-3] ^= 1 }, sgx.ErrSignature, "PCK CRL"},
		"Root CRL byte":     {func(c *sgx.Collateral) { c.RootCACRL[len(c.RootCACRL)-3] ^= 1 }, sgx.ErrSignature, "Root CA CRL"},
		"TCB chain swapped": {func(c *sgx.Collateral) { c.TCBInfoIssuerChain = c.PCKCRLIssuerChain }, sgx.ErrCertificate, `TCB Info signer: expected a non-CA "TCB Signing" certificate, found "Intel SGX PCK Processor CA" (CA true)`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := *fx.collateral
			c.TCBInfo, c.QEIdentity = slices.Clone(c.TCBInfo), slices.Clone(c.QEIdentity)
			c.PCKCRL, c.RootCACRL = slices.Clone(c.PCKCRL), slices.Clone(c.RootCACRL)
			tc.mod(&c)
			v := newFixtureVerifier(t, &c, time.Unix(phalaTimeUnix, 0))
			_, err := v.Verify(context.Background(), fx.quote)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("expected %v containing %q, found %v", tc.want, tc.msg, err)
			}
		})
	}
}

func TestTDXQuoteParses(t *testing.T) {
	dir := fixtureDir(t)
	type layout struct{ end, version, body, signed int }
	for name, want := range map[string]layout{
		"tdx_quote":          {end: 4936, version: 4, body: sgx.TDReport10Size, signed: 632},
		"tdx_quote_outdated": {end: 5006, version: 5, body: sgx.TDReport15Size, signed: 702},
	} {
		end := want.end
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		// tdx_quote carries 70 zero bytes of buffer padding, which the
		// strict parser reports precisely.
		if end < len(b) {
			if _, err := sgx.ParseQuote(b); !errors.Is(err, sgx.ErrTrailing) || !strings.Contains(err.Error(), "70 bytes after signature data at offset 4936") {
				t.Fatalf("%s: expected ErrTrailing for 70 padding bytes, found %v", name, err)
			}
		}
		q, err := sgx.ParseQuote(b[:end])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if q.Header.TEEType != sgx.TEETypeTDX || q.Report != nil || int(q.Header.Version) != want.version || len(q.Body) != want.body || len(q.Signed) != want.signed {
			t.Fatalf("%s: version %d, TEE type %#x, body %d, signed %d: expected %+v", name, q.Header.Version, q.Header.TEEType, len(q.Body), len(q.Signed), want)
		}
		v := newFixtureVerifier(t, &sgx.Collateral{}, time.Unix(phalaTimeUnix, 0))
		if _, err := v.VerifyQuote(context.Background(), q, time.Unix(phalaTimeUnix, 0)); !errors.Is(err, sgx.ErrUnsupported) {
			t.Fatalf("%s: expected ErrUnsupported for TDX, found %v", name, err)
		}
	}
}
