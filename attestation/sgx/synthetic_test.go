package sgx_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

func TestSyntheticVerifies(t *testing.T) {
	p := newPKI(t)
	v := p.verifier(t, p.collateral(t, nil), sgx.Options{})
	res, err := v.VerifyQuote(context.Background(), mustParse(t, p.quote(t, nil)), time.Unix(pkiNowUnix, 0))
	if err != nil {
		t.Fatal(err)
	}
	qp := sgxtest.DefaultQuoteParts()
	c := res.Claims
	if !bytes.Equal(c.UniqueID, qp.MREnclave[:]) || !bytes.Equal(c.SignerID, qp.MRSigner[:]) || c.ProductID != 7 || c.SecurityVersion != 3 || c.Debug || c.ReportData != qp.ReportData {
		t.Fatalf("claims do not reflect the quote: %+v", c)
	}
	if c.TCBStatus != attestation.TCBSWHardeningNeeded || !slices.Equal(c.Advisories, []string{"INTEL-SA-00615"}) || res.QEStatus != attestation.TCBUpToDate {
		t.Fatalf("status %s advisories %v QE %s: expected SWHardeningNeeded [INTEL-SA-00615] UpToDate", c.TCBStatus, c.Advisories, res.QEStatus)
	}
}

func TestSyntheticEachTCBStatus(t *testing.T) {
	p := newPKI(t)
	q := p.quote(t, nil)
	for _, status := range []string{attestation.TCBUpToDate, attestation.TCBSWHardeningNeeded, attestation.TCBConfigurationNeeded, attestation.TCBConfigurationAndSWHardeningNeeded, attestation.TCBOutOfDate, attestation.TCBOutOfDateConfigurationNeeded, attestation.TCBRevoked} {
		t.Run(status, func(t *testing.T) {
			col := p.collateral(t, func(cp *sgxtest.CollateralParts) {
				cp.TCBInfo.TCBLevels = []sgx.TCBLevel{sgxtest.TCBLevel(6, 10, attestation.TCBUpToDate), sgxtest.TCBLevel(5, 10, status, "SA-"+status)}
			})
			c, err := p.verifier(t, col, sgx.Options{}).Verify(context.Background(), q)
			if status == attestation.TCBRevoked {
				if !errors.Is(err, sgx.ErrTCB) || !strings.Contains(err.Error(), "expected not Revoked, found Revoked") {
					t.Fatalf("expected revoked TCB rejection, found %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.TCBStatus != status || !slices.Equal(c.Advisories, []string{"SA-" + status}) {
				t.Fatalf("expected %s [SA-%s], found %s %v", status, status, c.TCBStatus, c.Advisories)
			}
		})
	}
}

func TestSyntheticStatusCombination(t *testing.T) {
	p := newPKI(t)
	p.setLeaf(t, func() sgxtest.PCKExt { e := sgxtest.DefaultPCKExt(); e.Comps[3] = 6; return e }())
	// Component 4 at 6 does not make the platform UpToDate: every
	// component must reach the level.
	col := p.collateral(t, nil)
	v := p.verifier(t, col, sgx.Options{})
	c, err := v.Verify(context.Background(), p.quote(t, nil))
	if err != nil || c.TCBStatus != attestation.TCBSWHardeningNeeded {
		t.Fatalf("expected SWHardeningNeeded, found %v, %v", c, err)
	}

	allSix := sgxtest.DefaultPCKExt()
	for i := range allSix.Comps {
		allSix.Comps[i] = 6
	}
	p.setLeaf(t, allSix)
	col = p.collateral(t, nil)
	v = p.verifier(t, col, sgx.Options{})
	c, err = v.Verify(context.Background(), p.quote(t, nil))
	if err != nil || c.TCBStatus != attestation.TCBUpToDate || len(c.Advisories) != 0 {
		t.Fatalf("expected UpToDate without advisories, found %v, %v", c, err)
	}
	// An out-of-date QE makes an up-to-date platform OutOfDate and adds
	// its advisories.
	c, err = v.Verify(context.Background(), p.quote(t, func(q *sgxtest.QuoteParts) { q.QESVN = 7 }))
	if err != nil || c.TCBStatus != attestation.TCBOutOfDate || !slices.Equal(c.Advisories, []string{"INTEL-SA-00615"}) {
		t.Fatalf("expected OutOfDate [INTEL-SA-00615], found %v, %v", c, err)
	}
	// The PCE SVN of the certificate counts, not the header's.
	lowPCE := allSix
	lowPCE.PCESVN = 9
	p.setLeaf(t, lowPCE)
	_, err = p.verifier(t, p.collateral(t, nil), sgx.Options{}).Verify(context.Background(), p.quote(t, nil))
	if !errors.Is(err, sgx.ErrTCB) || !strings.Contains(err.Error(), "TCB level not supported") {
		t.Fatalf("expected unsupported TCB level for PCESVN 9, found %v", err)
	}
}

// TestSyntheticQERevoked checks that a revoked QE makes the combined
// status Revoked, which the verifier rejects, whatever the platform's.
func TestSyntheticQERevoked(t *testing.T) {
	p := newPKI(t)
	col := p.collateral(t, func(c *sgxtest.CollateralParts) {
		c.QEID.TCBLevels = []sgx.QETCBLevel{sgxtest.QELevel(8, attestation.TCBUpToDate), sgxtest.QELevel(6, attestation.TCBRevoked, "INTEL-SA-00001")}
	})
	v := p.verifier(t, col, sgx.Options{})
	if _, err := v.Verify(context.Background(), p.quote(t, nil)); err != nil {
		t.Fatalf("QE at ISVSVN 8: %v", err)
	}
	_, err := v.Verify(context.Background(), p.quote(t, func(q *sgxtest.QuoteParts) { q.QESVN = 7 }))
	if !errors.Is(err, sgx.ErrTCB) || !strings.Contains(err.Error(), "expected not Revoked, found Revoked (platform SWHardeningNeeded, QE Revoked)") {
		t.Fatalf("revoked QE: %v", err)
	}
}

// TestVerifierCollateralUnreachable checks the error of a verifier whose
// PCCS does not answer: it names the platform, the URL and the cause.
func TestVerifierCollateralUnreachable(t *testing.T) {
	p := newPKI(t)
	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL
	down.Close()
	v, err := sgx.NewDCAPVerifier(sgx.CollateralSource{URL: url}, sgx.Options{Root: p.Root, Now: sgxtest.Now})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), p.quote(t, nil))
	if !errors.Is(err, sgx.ErrCollateral) || !errors.Is(err, sgx.ErrFetch) {
		t.Fatalf("err = %v, want ErrCollateral and ErrFetch", err)
	}
	for _, w := range []string{"fetching for FMSPC 00906ED50000, CA processor", "TCB Info: GET " + url + "/sgx/certification/v4/tcb?fmspc=00906ED50000", "connection refused"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}

func TestSyntheticRejections(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	now := time.Unix(pkiNowUnix, 0)
	tests := []struct {
		name  string
		quote func(*sgxtest.QuoteParts)
		coll  func(*sgxtest.CollateralParts)
		opts  sgx.Options
		want  error
		msg   string
	}{
		{name: "revoked PCK leaf", coll: func(c *sgxtest.CollateralParts) { c.PCKRevoked = []*big.Int{big.NewInt(99), p.Leaf.SerialNumber} }, want: sgx.ErrRevoked, msg: `"Test SGX PCK Certificate" serial 64 is listed in the PCK CRL`},
		{name: "revoked PCK CA", coll: func(c *sgxtest.CollateralParts) { c.RootCRLRevoked = []*big.Int{p.PCKCA.SerialNumber} }, want: sgx.ErrRevoked, msg: `"Test SGX PCK Processor CA" serial 2 is listed in the Root CA CRL`},
		{name: "revoked TCB signer", coll: func(c *sgxtest.CollateralParts) { c.RootCRLRevoked = []*big.Int{p.TCBSigner.SerialNumber} }, want: sgx.ErrRevoked, msg: `"Test SGX TCB Signing" serial 3 is listed in the Root CA CRL`},
		{name: "expired CRL", coll: func(c *sgxtest.CollateralParts) { c.CRLNext = now.Add(-time.Second) }, want: sgx.ErrExpired, msg: "PCK CRL thisUpdate..nextUpdate: expected not after 2030-01-01T11:59:59Z, verification time is 2030-01-01T12:00:00Z"},
		{name: "CRL not yet valid", coll: func(c *sgxtest.CollateralParts) { c.CRLThis = now.Add(time.Hour) }, want: sgx.ErrExpired, msg: "PCK CRL thisUpdate..nextUpdate: expected not before"},
		{name: "PCK CRL from another CA", coll: func(c *sgxtest.CollateralParts) { c.PCKCRLSigner, c.PCKCRLSignerKey = other.PCKCA, other.PCKCAKey }, want: sgx.ErrCertificate, msg: "PCK CRL issuer chain leaf"},
		{name: "PCK CRL signed by wrong key", coll: func(c *sgxtest.CollateralParts) { c.PCKCRLSignerKey = other.PCKCAKey }, want: sgx.ErrSignature, msg: "PCK CRL signature"},
		{name: "expired TCB Info", coll: func(c *sgxtest.CollateralParts) { c.TCBInfo.NextUpdate = now.Add(-time.Second) }, want: sgx.ErrExpired, msg: "TCB Info issueDate..nextUpdate: expected not after 2030-01-01T11:59:59Z"},
		{name: "expired QE Identity", coll: func(c *sgxtest.CollateralParts) { c.QEID.NextUpdate = now.Add(-time.Second) }, want: sgx.ErrExpired, msg: "QE Identity issueDate..nextUpdate"},
		{name: "wrong FMSPC", coll: func(c *sgxtest.CollateralParts) { c.TCBInfo.FMSPC = []byte{0, 0x60, 0x6a, 0, 0, 0} }, want: sgx.ErrTCB, msg: "TCB Info fmspc: expected 00906ED50000 (PCK certificate), found 00606A000000"},
		{name: "wrong PCE ID", coll: func(c *sgxtest.CollateralParts) { c.TCBInfo.PCEID = []byte{0, 1} }, want: sgx.ErrTCB, msg: "TCB Info pceId: expected 0000 (PCK certificate), found 0001"},
		{name: "TCB Info tcbType", coll: func(c *sgxtest.CollateralParts) { c.TCBInfo.TCBType = 1 }, want: sgx.ErrCollateral, msg: "TCB Info tcbType: expected 0, found 1"},
		{name: "TCB Info wrong id", coll: func(c *sgxtest.CollateralParts) { c.TCBInfo.ID = "TDX" }, want: sgx.ErrCollateral, msg: `expected SGX/3, found "TDX"/3`},
		{name: "platform below all levels", coll: func(c *sgxtest.CollateralParts) { c.TCBInfo.TCBLevels = c.TCBInfo.TCBLevels[:1] }, want: sgx.ErrTCB, msg: "TCB level not supported"},
		{name: "evaluation number too low", opts: sgx.Options{MinTCBEvaluationDataNumber: 18}, want: sgx.ErrCollateral, msg: "TCB Info tcbEvaluationDataNumber: expected at least 18, found 17"},
		{name: "QE MRSIGNER", quote: func(q *sgxtest.QuoteParts) { q.QEMRSigner[0] ^= 1 }, want: sgx.ErrQEIdentity, msg: "QE MRSIGNER: expected A0A1"},
		{name: "QE ISVPRODID", quote: func(q *sgxtest.QuoteParts) { q.QEProdID = 2 }, want: sgx.ErrQEIdentity, msg: "QE ISVPRODID: expected 1, found 2"},
		{name: "QE MISCSELECT", quote: func(q *sgxtest.QuoteParts) { q.QEMisc = 1 }, want: sgx.ErrQEIdentity, msg: "QE MISCSELECT & mask FFFFFFFF: expected 00000000, found 00000001"},
		{name: "debug QE", quote: func(q *sgxtest.QuoteParts) { q.QEFlags = 0x17 }, want: sgx.ErrQEIdentity, msg: "QE ATTRIBUTES & mask"},
		{name: "debug QE with lax identity", quote: func(q *sgxtest.QuoteParts) { q.QEFlags = 0x17 }, coll: func(c *sgxtest.CollateralParts) { c.QEID.AttributesMask[0] = 0xf9 }, want: sgx.ErrQEIdentity, msg: "QE ATTRIBUTES DEBUG bit: expected clear, found set"},
		{name: "QE SVN below all levels", quote: func(q *sgxtest.QuoteParts) { q.QESVN = 5 }, want: sgx.ErrTCB, msg: "QE ISVSVN 5"},
		{name: "bad QE binding", quote: func(q *sgxtest.QuoteParts) { q.BindOverride = make([]byte, 32) }, want: sgx.ErrBinding, msg: "QE report data[0:32]: expected SHA-256(attestation key ‖ QE auth data)"},
		{name: "QE binding tail", quote: func(q *sgxtest.QuoteParts) { q.BindTail = []byte{1} }, want: sgx.ErrBinding, msg: "QE report data[32:64]: expected zeros, found 01"},
		{name: "non-Intel QE vendor", quote: func(q *sgxtest.QuoteParts) { q.Vendor[0] = 0 }, want: sgx.ErrUnsupported, msg: "header QE vendor ID: expected 939A7233"},
		{name: "chain without intermediate", quote: func(q *sgxtest.QuoteParts) { q.CertData = sgxtest.CertPEM(p.Leaf, p.Root) }, want: sgx.ErrCertificate, msg: "PCK chain length: expected 3 certificates, found 2"},
		{name: "chain from another root", quote: func(q *sgxtest.QuoteParts) { q.CertData = sgxtest.CertPEM(p.Leaf, p.PCKCA, other.Root) }, want: sgx.ErrCertificate, msg: "PCK chain root SHA-256: expected"},
		{name: "certificates expired", opts: sgx.Options{Now: func() time.Time { return now.Add(2 * 365 * 24 * time.Hour) }}, want: sgx.ErrCertificate, msg: "expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := p.verifier(t, p.collateral(t, tc.coll), tc.opts)
			_, err := v.Verify(context.Background(), p.quote(t, tc.quote))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("expected %v containing %q, found %v", tc.want, tc.msg, err)
			}
		})
	}
}

func TestSimulationEvidenceRejected(t *testing.T) {
	p := newPKI(t)
	_, err := p.verifier(t, p.collateral(t, nil), sgx.Options{}).Verify(context.Background(), []byte{})
	if !errors.Is(err, sgx.ErrUnsupported) || !strings.Contains(err.Error(), "found empty (simulation) evidence") {
		t.Fatalf("expected rejection of empty evidence, found %v", err)
	}
}

func TestSyntheticDebugEnclave(t *testing.T) {
	p := newPKI(t)
	c, err := p.verifier(t, p.collateral(t, nil), sgx.Options{}).Verify(context.Background(), p.quote(t, func(q *sgxtest.QuoteParts) { q.Flags = 0x07 }))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Debug {
		t.Fatal("ATTRIBUTES 0x07: expected Debug true, found false")
	}
}

func TestCachedCollateralStillChecksTime(t *testing.T) {
	p := newPKI(t)
	col := p.collateral(t, nil)
	now := time.Unix(pkiNowUnix, 0)
	v := p.verifier(t, col, sgx.Options{})
	q := mustParse(t, p.quote(t, nil))
	if _, err := v.VerifyQuote(context.Background(), q, now); err != nil {
		t.Fatal(err)
	}
	_, err := v.VerifyQuote(context.Background(), q, now.Add(25*time.Hour))
	if !errors.Is(err, sgx.ErrExpired) || !strings.Contains(err.Error(), "TCB Info issueDate..nextUpdate") {
		t.Fatalf("expected expiry of cached collateral, found %v", err)
	}
	// Within the window the cached collateral is still accepted.
	if _, err := v.VerifyQuote(context.Background(), q, now.Add(time.Hour)); err != nil {
		t.Fatalf("expected success within the window, found %v", err)
	}
	// The cached PCK chain is checked against its validity window.
	_, err = v.VerifyQuote(context.Background(), q, now.Add(2*365*24*time.Hour))
	if !errors.Is(err, sgx.ErrCertificate) || !strings.Contains(err.Error(), `PCK chain certificate "Test SGX PCK Certificate" validity: expected not after`) {
		t.Fatalf("expected expiry of the cached PCK chain, found %v", err)
	}
}

type failingProvider struct{}

func (failingProvider) Collateral(context.Context, sgx.CollateralRequest) (*sgx.Collateral, error) {
	return nil, errors.New("PCCS unreachable")
}

type recordingProvider struct {
	got *sgx.CollateralRequest
	c   *sgx.Collateral
}

func (r recordingProvider) Collateral(_ context.Context, req sgx.CollateralRequest) (*sgx.Collateral, error) {
	*r.got = req
	return r.c, nil
}

func TestProviderUse(t *testing.T) {
	p := newPKI(t)
	q := p.quote(t, nil)
	now := func() time.Time { return time.Unix(pkiNowUnix, 0) }
	v, err := sgx.NewVerifier(failingProvider{}, sgx.Options{Root: p.Root, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), q); !errors.Is(err, sgx.ErrCollateral) || !strings.Contains(err.Error(), "FMSPC 00906ED50000, CA processor: PCCS unreachable") {
		t.Fatalf("expected provider error, found %v", err)
	}
	var got sgx.CollateralRequest
	v, err = sgx.NewVerifier(recordingProvider{got: &got, c: p.collateral(t, nil)}, sgx.Options{Root: p.Root, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	if got.CA != "processor" || !bytes.Equal(got.FMSPC, p.Ext.FMSPC) {
		t.Fatalf("request: expected processor/%X, found %s/%X", p.Ext.FMSPC, got.CA, got.FMSPC)
	}
	if _, err := sgx.NewVerifier(nil, sgx.Options{}); !errors.Is(err, sgx.ErrCollateral) {
		t.Fatalf("nil provider: expected ErrCollateral, found %v", err)
	}
}

func TestParseTruncatedAndTrailing(t *testing.T) {
	p := newPKI(t)
	q := p.quote(t, nil)
	if _, err := sgx.ParseQuote(q); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(q); n++ {
		if _, err := sgx.ParseQuote(q[:n]); !errors.Is(err, sgx.ErrTruncated) {
			t.Fatalf("prefix of %d bytes: expected ErrTruncated, found %v", n, err)
		}
	}
	_, err := sgx.ParseQuote(append(slices.Clone(q), 0))
	if want := fmt.Sprintf("1 bytes after signature data at offset %d", len(q)); !errors.Is(err, sgx.ErrTrailing) || !strings.Contains(err.Error(), want) {
		t.Fatalf("trailing byte: expected %q, found %v", want, err)
	}
	// A signature-data length one short leaves the certification data truncated.
	short := slices.Clone(q)
	binary.LittleEndian.PutUint32(short[432:], binary.LittleEndian.Uint32(short[432:])-1)
	if _, err := sgx.ParseQuote(short); !errors.Is(err, sgx.ErrTruncated) || !strings.Contains(err.Error(), "certification data size field") {
		t.Fatalf("short signature length: expected truncated certification data, found %v", err)
	}
	// A certification-data size one short leaves a byte inside the signature data.
	certSizeOff := 1016 + 32
	inner := slices.Clone(q)
	binary.LittleEndian.PutUint32(inner[certSizeOff:], binary.LittleEndian.Uint32(inner[certSizeOff:])-1)
	if _, err := sgx.ParseQuote(inner); !errors.Is(err, sgx.ErrTrailing) || !strings.Contains(err.Error(), "1 bytes after certification data (inside signature data length)") {
		t.Fatalf("short certification size: expected trailing byte, found %v", err)
	}
}

func TestParseHeaderErrors(t *testing.T) {
	p := newPKI(t)
	q := p.quote(t, nil)
	mod := func(off int, v uint16) []byte {
		b := slices.Clone(q)
		binary.LittleEndian.PutUint16(b[off:], v)
		return b
	}
	tests := map[string]struct {
		b    []byte
		want error
		msg  string
	}{
		"version 2":     {mod(0, 2), sgx.ErrMalformed, "header version: expected 3, 4 or 5, found 2"},
		"key type 3":    {mod(2, 3), sgx.ErrMalformed, "attestation key type: expected 2 (ECDSA P-256), found 3"},
		"v3 reserved":   {mod(4, 1), sgx.ErrMalformed, "v3 header reserved field at offset 4: expected 0, found 0x1"},
		"cert type 4":   {mod(1014+32, 4), sgx.ErrMalformed, ""},
		"v4 bad layout": {mod(0, 4), sgx.ErrMalformed, "outer certification data type: expected 6 (QE report)"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pq, err := sgx.ParseQuote(tc.b)
			if name == "cert type 4" {
				if err != nil {
					t.Fatal(err)
				}
				_, err = pq.PCKChainPEM()
				tc.msg = "certification data type: expected 5 (PCK certificate chain), found 4"
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("expected %v containing %q, found %v", tc.want, tc.msg, err)
			}
		})
	}
}

func TestOEHeader(t *testing.T) {
	p := newPKI(t)
	q := p.quote(t, nil)
	wrapped := sgxtest.WithOEHeader(q)
	got, err := sgx.StripOEHeader(wrapped)
	if err != nil || !bytes.Equal(got, q) {
		t.Fatalf("strip: %v", err)
	}
	if got, err := sgx.StripOEHeader(q); err != nil || !bytes.Equal(got, q) {
		t.Fatalf("raw quote must pass unchanged: %v", err)
	}
	badType := slices.Clone(wrapped)
	badType[4] = 1
	long := append(slices.Clone(wrapped), 0)
	tests := map[string]struct {
		b    []byte
		want error
		msg  string
	}{
		"short header": {wrapped[:10], sgx.ErrTruncated, "OE report header needs 16 bytes, found 10"},
		"wrong type":   {badType, sgx.ErrMalformed, "OE report type: expected 2 (SGX remote), found 1"},
		"truncated":    {wrapped[:len(wrapped)-1], sgx.ErrTruncated, fmt.Sprintf("OE report size field is %d, only %d bytes follow", len(q), len(q)-1)},
		"trailing":     {long, sgx.ErrTrailing, fmt.Sprintf("OE report size field is %d, but %d bytes follow", len(q), len(q)+1)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := sgx.ParseEvidence(tc.b)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("expected %v containing %q, found %v", tc.want, tc.msg, err)
			}
		})
	}
}

func TestPCKExtensionErrors(t *testing.T) {
	p := newPKI(t)
	ext, err := sgx.ParsePCKExtension(p.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	if ext.PCESVN != 10 || ext.CompSVN[15] != 5 || !bytes.Equal(ext.FMSPC, p.Ext.FMSPC) || len(ext.CPUSVN) != 16 || len(ext.PPID) != 16 {
		t.Fatalf("unexpected extension %+v", ext)
	}
	if _, err := sgx.ParsePCKExtension(p.Root); !errors.Is(err, sgx.ErrPCKExtension) || !strings.Contains(err.Error(), "not present") {
		t.Fatalf("root: expected missing extension, found %v", err)
	}
	bad := sgxtest.DefaultPCKExt()
	bad.FMSPC = []byte{1, 2, 3}
	if _, err := sgx.ParsePCKExtensionValue(sgxExtension(t, bad)); !errors.Is(err, sgx.ErrPCKExtension) || !strings.Contains(err.Error(), "FMSPC: expected 6 bytes, found 3") {
		t.Fatalf("short FMSPC: found %v", err)
	}
	bad = sgxtest.DefaultPCKExt()
	bad.Comps[2] = 300
	if _, err := sgx.ParsePCKExtensionValue(sgxExtension(t, bad)); !errors.Is(err, sgx.ErrPCKExtension) || !strings.Contains(err.Error(), "TCB component 3: value 300 out of range") {
		t.Fatalf("large SVN: found %v", err)
	}
}

func TestIntelRootPinned(t *testing.T) {
	root, err := sgx.IntelRootCA()
	if err != nil {
		t.Fatal(err)
	}
	if root.Subject.CommonName != "Intel SGX Root CA" || root.SerialNumber.Text(16) != "22650cd65a9d3489f383b49552bf501b392706ac" {
		t.Fatalf("unexpected root %q serial %x", root.Subject.CommonName, root.SerialNumber)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Fatal(err)
	}
	if root.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("root key: expected ECDSA, found %v", root.PublicKeyAlgorithm)
	}
}

type swapProvider struct{ c **sgx.Collateral }

func (s swapProvider) Collateral(context.Context, sgx.CollateralRequest) (*sgx.Collateral, error) {
	return *s.c, nil
}

func TestRevocationAfterCaching(t *testing.T) {
	p := newPKI(t)
	cur := p.collateral(t, nil)
	v, err := sgx.NewVerifier(swapProvider{c: &cur}, sgx.Options{Root: p.Root, Now: func() time.Time { return time.Unix(pkiNowUnix, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	q := p.quote(t, nil)
	if _, err := v.Verify(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	cur = p.collateral(t, func(c *sgxtest.CollateralParts) { c.PCKRevoked = []*big.Int{p.Leaf.SerialNumber} })
	if _, err := v.Verify(context.Background(), q); !errors.Is(err, sgx.ErrRevoked) {
		t.Fatalf("leaf revoked after its chain was cached: expected ErrRevoked, found %v", err)
	}
}

func TestConcurrentVerify(t *testing.T) {
	p := newPKI(t)
	v := p.verifier(t, p.collateral(t, nil), sgx.Options{})
	quotes := [][]byte{p.quote(t, nil), p.quote(t, func(q *sgxtest.QuoteParts) { q.SVN = 9 })}
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			c, err := v.Verify(context.Background(), quotes[i%2])
			if err == nil && c.TCBStatus != attestation.TCBSWHardeningNeeded {
				err = fmt.Errorf("status: expected %s, found %s", attestation.TCBSWHardeningNeeded, c.TCBStatus)
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func sgxExtension(t testing.TB, e sgxtest.PCKExt) []byte {
	t.Helper()
	b, err := sgxtest.SGXExtension(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
