package sgx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
)

// Errors wrapped by verification failures.
var (
	ErrCertificate = errors.New("certificate check failed")
	ErrRevoked     = errors.New("certificate revoked")
	ErrSignature   = errors.New("signature check failed")
	ErrBinding     = errors.New("attestation key binding failed")
	ErrExpired     = errors.New("outside validity window")
	ErrQEIdentity  = errors.New("QE identity mismatch")
	ErrTCB         = errors.New("TCB evaluation failed")
	ErrUnsupported = errors.New("unsupported quote")
)

// statusSeverity orders the statuses TCB Info may give a level, from
// UpToDate (0) to Revoked (6); -1 is a name TCB Info does not use.
func statusSeverity(s string) int {
	switch s {
	case attestation.TCBUpToDate:
		return 0
	case attestation.TCBSWHardeningNeeded:
		return 1
	case attestation.TCBConfigurationNeeded:
		return 2
	case attestation.TCBConfigurationAndSWHardeningNeeded:
		return 3
	case attestation.TCBOutOfDate:
		return 4
	case attestation.TCBOutOfDateConfigurationNeeded:
		return 5
	case attestation.TCBRevoked:
		return 6
	}
	return -1
}

// Options configure a Verifier.
type Options struct {
	// Root is the trust anchor; nil selects the pinned Intel SGX Root CA.
	Root *x509.Certificate
	// Now returns the verification time; nil selects time.Now.
	Now func() time.Time
	// MinTCBEvaluationDataNumber rejects TCB Info and QE Identity with a
	// lower tcbEvaluationDataNumber.
	MinTCBEvaluationDataNumber uint32
}

// Verifier verifies SGX DCAP quotes. It implements attestation.Verifier and
// is safe for concurrent use. Checked collateral is cached by content.
type Verifier struct {
	root     *x509.Certificate
	provider CollateralProvider
	now      func() time.Time
	minEval  uint32
	cache    *cache[checked]
	chains   *cache[pckChain]
}

func (e *PCKExtension) clone() *PCKExtension {
	c := *e
	c.PPID, c.CPUSVN, c.PCEID, c.FMSPC = slices.Clone(e.PPID), slices.Clone(e.CPUSVN), slices.Clone(e.PCEID), slices.Clone(e.FMSPC)
	return &c
}

// pckChain is a PCK certificate chain whose signatures were verified.
type pckChain struct {
	leaf, inter, root *x509.Certificate
	ext               *PCKExtension
}

var _ attestation.Verifier = (*Verifier)(nil)

// NewVerifier returns a verifier that fetches collateral from provider.
func NewVerifier(provider CollateralProvider, opts Options) (*Verifier, error) {
	if provider == nil {
		return nil, fmt.Errorf("%w: no collateral provider", ErrCollateral)
	}
	root := opts.Root
	if root == nil {
		var err error
		if root, err = IntelRootCA(); err != nil {
			return nil, err
		}
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Verifier{root: root, provider: provider, now: now, minEval: opts.MinTCBEvaluationDataNumber, cache: newCache[checked](32), chains: newCache[pckChain](1024)}, nil
}

// Result is the outcome of a successful verification.
type Result struct {
	Quote *Quote
	PCK   *PCKExtension
	// PlatformStatus and QEStatus are the matched TCB levels; Claims holds
	// their combination.
	PlatformStatus          string
	QEStatus                string
	TCBEvaluationDataNumber uint32
	Claims                  attestation.Claims
}

// Verify parses evidence (a raw quote or an OE remote report) and verifies
// it at the verifier's current time.
func (v *Verifier) Verify(ctx context.Context, evidence []byte) (*attestation.Claims, error) {
	if len(evidence) == 0 {
		return nil, fmt.Errorf("%w: evidence: expected an SGX quote, found empty (simulation) evidence", ErrUnsupported)
	}
	q, err := ParseEvidence(evidence)
	if err != nil {
		return nil, err
	}
	res, err := v.VerifyQuote(ctx, q, v.now())
	if err != nil {
		return nil, err
	}
	return &res.Claims, nil
}

// VerifyQuote performs the full DCAP verification of q at time now.
// It returns an error for a Revoked TCB status; every other status is
// returned for the caller's policy to judge.
func (v *Verifier) VerifyQuote(ctx context.Context, q *Quote, now time.Time) (*Result, error) {
	if err := checkHeader(q); err != nil {
		return nil, err
	}
	chain, err := v.verifyPCKChain(q, now)
	if err != nil {
		return nil, err
	}
	leaf, inter := chain.leaf, chain.inter
	pck := chain.ext.clone()
	if err := verifyQE(q, leaf); err != nil {
		return nil, err
	}

	ca, err := pckCAType(inter)
	if err != nil {
		return nil, err
	}
	raw, err := v.provider.Collateral(ctx, CollateralRequest{FMSPC: slices.Clone(pck.FMSPC), CA: ca})
	if err != nil {
		return nil, fmt.Errorf("%w: fetching for FMSPC %X, CA %s: %w", ErrCollateral, pck.FMSPC, ca, err)
	}
	col, err := v.checkedCollateral(raw, now)
	if err != nil {
		return nil, err
	}
	if err := col.checkTimes(now); err != nil {
		return nil, err
	}
	if !bytes.Equal(col.pckCRLIssuer.Raw, inter.Raw) {
		return nil, fmt.Errorf("%w: PCK CRL issuer: expected the quote's PCK CA %q (serial %X), found %q (serial %X)", ErrCertificate, inter.Subject.CommonName, inter.SerialNumber, col.pckCRLIssuer.Subject.CommonName, col.pckCRLIssuer.SerialNumber)
	}
	if err := checkRevoked("PCK CRL", col.pckCRL, leaf); err != nil {
		return nil, err
	}
	if err := checkRevoked("Root CA CRL", col.rootCRL, inter); err != nil {
		return nil, err
	}
	if col.tcbInfo.TCBEvaluationDataNumber < v.minEval {
		return nil, fmt.Errorf("%w: TCB Info tcbEvaluationDataNumber: expected at least %d, found %d", ErrCollateral, v.minEval, col.tcbInfo.TCBEvaluationDataNumber)
	}
	if col.qeID.TCBEvaluationDataNumber < v.minEval {
		return nil, fmt.Errorf("%w: QE Identity tcbEvaluationDataNumber: expected at least %d, found %d", ErrCollateral, v.minEval, col.qeID.TCBEvaluationDataNumber)
	}

	qeLevel, err := matchQEIdentity(col.qeID, &q.QEReport)
	if err != nil {
		return nil, err
	}
	platLevel, err := matchTCBInfo(col.tcbInfo, pck)
	if err != nil {
		return nil, err
	}
	status := platLevel.TCBStatus
	if statusSeverity(qeLevel.status) > statusSeverity(status) {
		status = qeLevel.status
	}
	if status == attestation.TCBRevoked {
		return nil, fmt.Errorf("%w: TCB status: expected not %s, found %s (platform %s, QE %s)", ErrTCB, attestation.TCBRevoked, status, platLevel.TCBStatus, qeLevel.status)
	}
	var adv []string
	for _, a := range slices.Concat(platLevel.AdvisoryIDs, qeLevel.advisories) {
		if !slices.Contains(adv, a) {
			adv = append(adv, a)
		}
	}

	rb := q.Report
	res := &Result{
		Quote:                   q,
		PCK:                     pck,
		PlatformStatus:          platLevel.TCBStatus,
		QEStatus:                qeLevel.status,
		TCBEvaluationDataNumber: min(col.tcbInfo.TCBEvaluationDataNumber, col.qeID.TCBEvaluationDataNumber),
		Claims: attestation.Claims{
			UniqueID:        slices.Clone(rb.MREnclave[:]),
			SignerID:        slices.Clone(rb.MRSigner[:]),
			ProductID:       rb.ISVProdID,
			SecurityVersion: rb.ISVSVN,
			Debug:           rb.Debug(),
			ReportData:      rb.ReportData,
			TCBStatus:       status,
			Advisories:      adv,
		},
	}
	return res, nil
}

func checkHeader(q *Quote) error {
	h := q.Header
	if h.AttestationKeyType != AttestationKeyECDSAP256 {
		return fmt.Errorf("%w: header attestation key type: expected %d, found %d", ErrUnsupported, AttestationKeyECDSAP256, h.AttestationKeyType)
	}
	if h.TEEType != TEETypeSGX || q.Report == nil {
		return fmt.Errorf("%w: header TEE type: expected %#x (SGX), found %#x", ErrUnsupported, TEETypeSGX, h.TEEType)
	}
	if want := IntelQEVendorID(); h.QEVendorID != want {
		return fmt.Errorf("%w: header QE vendor ID: expected %X, found %X", ErrUnsupported, want, h.QEVendorID)
	}
	return nil
}

func parseCertChain(what string, pemData []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := pemData
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: %s PEM block %d: expected type CERTIFICATE, found %q", ErrCertificate, what, len(certs), blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s certificate %d: %w", ErrCertificate, what, len(certs), err)
		}
		certs = append(certs, c)
	}
	if t := bytes.TrimSpace(rest); len(t) != 0 {
		return nil, fmt.Errorf("%w: %s: %d bytes after the last PEM block, expected 0", ErrCertificate, what, len(t))
	}
	return certs, nil
}

// verifyChain checks that chain is leaf, (intermediate,) root with the root
// byte-identical to the trust anchor, and that it verifies at now.
func (v *Verifier) verifyChain(what string, chain []*x509.Certificate, want int, now time.Time) error {
	if len(chain) != want {
		return fmt.Errorf("%w: %s length: expected %d certificates, found %d", ErrCertificate, what, want, len(chain))
	}
	last := chain[len(chain)-1]
	if !bytes.Equal(last.Raw, v.root.Raw) {
		got, exp := sha256.Sum256(last.Raw), sha256.Sum256(v.root.Raw)
		return fmt.Errorf("%w: %s root SHA-256: expected %x (pinned %q), found %x (%q)", ErrCertificate, what, exp, v.root.Subject.CommonName, got, last.Subject.CommonName)
	}
	roots := x509.NewCertPool()
	roots.AddCert(v.root)
	inters := x509.NewCertPool()
	for _, c := range chain[1 : len(chain)-1] {
		inters.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inters,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("%w: %s leaf %q at %s: %w", ErrCertificate, what, chain[0].Subject.CommonName, now.UTC().Format(time.RFC3339), err)
	}
	for i := 1; i < len(chain)-1; i++ {
		if err := chain[i-1].CheckSignatureFrom(chain[i]); err != nil {
			return fmt.Errorf("%w: %s certificate %d %q is not signed by %q: %w", ErrCertificate, what, i-1, chain[i-1].Subject.CommonName, chain[i].Subject.CommonName, err)
		}
	}
	return nil
}

// verifyPCKChain verifies the quote's PCK chain at now. Chains whose
// signatures were verified before are taken from the cache, and only their
// validity windows are checked again.
func (v *Verifier) verifyPCKChain(q *Quote, now time.Time) (*pckChain, error) {
	pemData, err := q.PCKChainPEM()
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256(pemData)
	if c, ok := v.chains.get(key); ok {
		for _, cert := range []*x509.Certificate{c.leaf, c.inter, c.root} {
			if err := inWindow(window{fmt.Sprintf("PCK chain certificate %q validity", cert.Subject.CommonName), cert.NotBefore, cert.NotAfter}, now); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrCertificate, err)
			}
		}
		return c, nil
	}
	certs, err := parseCertChain("PCK chain", pemData)
	if err != nil {
		return nil, err
	}
	if err := v.verifyChain("PCK chain", certs, 3, now); err != nil {
		return nil, err
	}
	ext, err := ParsePCKExtension(certs[0])
	if err != nil {
		return nil, err
	}
	c := &pckChain{leaf: certs[0], inter: certs[1], root: certs[2], ext: ext}
	v.chains.put(key, c)
	return c, nil
}

func pckCAType(inter *x509.Certificate) (string, error) {
	switch cn := inter.Subject.CommonName; {
	case strings.Contains(cn, "Processor"):
		return "processor", nil
	case strings.Contains(cn, "Platform"):
		return "platform", nil
	default:
		return "", fmt.Errorf("%w: PCK CA common name: expected \"Intel SGX PCK Processor CA\" or \"Intel SGX PCK Platform CA\", found %q", ErrCertificate, cn)
	}
}

func rawSignature(sig []byte) (r, s *big.Int, err error) {
	if len(sig) != SignatureSize {
		return nil, nil, fmt.Errorf("length: expected %d bytes, found %d", SignatureSize, len(sig))
	}
	return new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]), nil
}

func verifyRaw(what string, pub *ecdsa.PublicKey, msg, sig []byte) error {
	r, s, err := rawSignature(sig)
	if err != nil {
		return fmt.Errorf("%w: %s signature %w", ErrSignature, what, err)
	}
	digest := sha256.Sum256(msg)
	if !ecdsa.Verify(pub, digest[:], r, s) {
		return fmt.Errorf("%w: %s: signature %x does not verify over SHA-256 %x", ErrSignature, what, sig, digest)
	}
	return nil
}

func p256Key(what string, cert *x509.Certificate) (*ecdsa.PublicKey, error) {
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: %s %q public key: expected ECDSA P-256, found %T", ErrCertificate, what, cert.Subject.CommonName, cert.PublicKey)
	}
	return pub, nil
}

// verifyQE checks the QE report signature, the attestation-key binding and
// the ISV quote signature.
func verifyQE(q *Quote, leaf *x509.Certificate) error {
	pckKey, err := p256Key("PCK leaf", leaf)
	if err != nil {
		return err
	}
	if err := verifyRaw("QE report (signed by PCK key)", pckKey, q.QEReport.Raw, q.QEReportSignature[:]); err != nil {
		return err
	}
	h := sha256.New()
	h.Write(q.AttestationKey[:])
	h.Write(q.QEAuthData)
	want := h.Sum(nil)
	rd := q.QEReport.ReportData
	if !bytes.Equal(rd[:32], want) {
		return fmt.Errorf("%w: QE report data[0:32]: expected SHA-256(attestation key ‖ QE auth data) = %x, found %x", ErrBinding, want, rd[:32])
	}
	if !bytes.Equal(rd[32:], make([]byte, 32)) {
		return fmt.Errorf("%w: QE report data[32:64]: expected zeros, found %x", ErrBinding, rd[32:])
	}
	attKey, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, q.AttestationKey[:]...))
	if err != nil {
		return fmt.Errorf("%w: attestation key %x: %w", ErrSignature, q.AttestationKey, err)
	}
	return verifyRaw("ISV quote (signed by attestation key)", attKey, q.Signed, q.Signature[:])
}

func checkRevoked(what string, crl *x509.RevocationList, cert *x509.Certificate) error {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			return fmt.Errorf("%w: %q serial %X is listed in the %s (revoked %s)", ErrRevoked, cert.Subject.CommonName, cert.SerialNumber, what, e.RevocationTime.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

type qeMatch struct {
	status     string
	advisories []string
}

func maskedEqual(what string, value, mask, want []byte) error {
	if len(mask) != len(value) || len(want) != len(value) {
		return fmt.Errorf("%w: QE Identity %s: expected %d-byte value and mask, found %d and %d bytes", ErrCollateral, what, len(value), len(want), len(mask))
	}
	got := make([]byte, len(value))
	for i := range value {
		got[i] = value[i] & mask[i]
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%w: QE %s & mask %X: expected %X, found %X", ErrQEIdentity, what, mask, want, got)
	}
	return nil
}

func matchQEIdentity(id *EnclaveIdentity, qe *ReportBody) (qeMatch, error) {
	if !bytes.Equal(id.MRSigner, qe.MRSigner[:]) {
		return qeMatch{}, fmt.Errorf("%w: QE MRSIGNER: expected %X, found %X", ErrQEIdentity, []byte(id.MRSigner), qe.MRSigner)
	}
	if id.ISVProdID != qe.ISVProdID {
		return qeMatch{}, fmt.Errorf("%w: QE ISVPRODID: expected %d, found %d", ErrQEIdentity, id.ISVProdID, qe.ISVProdID)
	}
	var misc [4]byte
	misc[0], misc[1], misc[2], misc[3] = byte(qe.MiscSelect), byte(qe.MiscSelect>>8), byte(qe.MiscSelect>>16), byte(qe.MiscSelect>>24) //nolint:gosec // G115: byte() takes each of the four bytes on purpose
	// The JSON writes MISCSELECT as a big-endian hex number.
	slices.Reverse(misc[:])
	if err := maskedEqual("MISCSELECT", misc[:], id.MiscSelectMask, id.MiscSelect); err != nil {
		return qeMatch{}, err
	}
	if err := maskedEqual("ATTRIBUTES", qe.Attributes[:], id.AttributesMask, id.Attributes); err != nil {
		return qeMatch{}, err
	}
	if qe.Debug() {
		return qeMatch{}, fmt.Errorf("%w: QE ATTRIBUTES DEBUG bit: expected clear, found set", ErrQEIdentity)
	}
	for _, l := range id.TCBLevels {
		if l.TCB.ISVSVN <= qe.ISVSVN {
			if l.TCBStatus != attestation.TCBUpToDate && l.TCBStatus != attestation.TCBOutOfDate && l.TCBStatus != attestation.TCBRevoked {
				return qeMatch{}, fmt.Errorf("%w: QE Identity tcbStatus: expected UpToDate, OutOfDate or Revoked, found %q", ErrCollateral, l.TCBStatus)
			}
			return qeMatch{status: l.TCBStatus, advisories: l.AdvisoryIDs}, nil
		}
	}
	return qeMatch{}, fmt.Errorf("%w: QE ISVSVN %d: expected at least the lowest QE Identity TCB level, none matched", ErrTCB, qe.ISVSVN)
}

func matchTCBInfo(info *TCBInfo, pck *PCKExtension) (*TCBLevel, error) {
	if !bytes.Equal(info.FMSPC, pck.FMSPC) {
		return nil, fmt.Errorf("%w: TCB Info fmspc: expected %X (PCK certificate), found %X", ErrTCB, pck.FMSPC, []byte(info.FMSPC))
	}
	if !bytes.Equal(info.PCEID, pck.PCEID) {
		return nil, fmt.Errorf("%w: TCB Info pceId: expected %X (PCK certificate), found %X", ErrTCB, pck.PCEID, []byte(info.PCEID))
	}
	for i := range info.TCBLevels {
		l := &info.TCBLevels[i]
		if len(l.TCB.SGXTCBComponents) != CompSVNCount {
			return nil, fmt.Errorf("%w: TCB Info level %d sgxtcbcomponents: expected %d entries, found %d", ErrCollateral, i, CompSVNCount, len(l.TCB.SGXTCBComponents))
		}
		if statusSeverity(l.TCBStatus) < 0 {
			return nil, fmt.Errorf("%w: TCB Info level %d tcbStatus: expected a known status, found %q", ErrCollateral, i, l.TCBStatus)
		}
		ok := pck.PCESVN >= l.TCB.PCESVN
		for j, c := range l.TCB.SGXTCBComponents {
			ok = ok && pck.CompSVN[j] >= c.SVN
		}
		if ok {
			return l, nil
		}
	}
	return nil, fmt.Errorf("%w: TCB level not supported: PCK component SVNs %v, PCESVN %d: expected a TCB Info level at or below them, none matched", ErrTCB, pck.CompSVN, pck.PCESVN)
}

// checked is collateral whose signatures, chains and formats were verified.
type checked struct {
	tcbInfo      *TCBInfo
	qeID         *EnclaveIdentity
	tcbChain     []*x509.Certificate
	qeChain      []*x509.Certificate
	pckCRL       *x509.RevocationList
	pckCRLIssuer *x509.Certificate
	pckCRLChain  []*x509.Certificate
	rootCRL      *x509.RevocationList
}

type window struct {
	what       string
	start, end time.Time
}

func inWindow(w window, now time.Time) error {
	if now.Before(w.start) {
		return fmt.Errorf("%w: %s: expected not before %s, verification time is %s", ErrExpired, w.what, w.start.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(w.end) {
		return fmt.Errorf("%w: %s: expected not after %s, verification time is %s", ErrExpired, w.what, w.end.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// checkTimes checks every time-dependent property of checked collateral.
func (c *checked) checkTimes(now time.Time) error {
	ws := []window{
		{"TCB Info issueDate..nextUpdate", c.tcbInfo.IssueDate, c.tcbInfo.NextUpdate},
		{"QE Identity issueDate..nextUpdate", c.qeID.IssueDate, c.qeID.NextUpdate},
		{"PCK CRL thisUpdate..nextUpdate", c.pckCRL.ThisUpdate, c.pckCRL.NextUpdate},
		{"Root CA CRL thisUpdate..nextUpdate", c.rootCRL.ThisUpdate, c.rootCRL.NextUpdate},
	}
	for _, chain := range [][]*x509.Certificate{c.tcbChain, c.qeChain, c.pckCRLChain} {
		for _, cert := range chain {
			ws = append(ws, window{fmt.Sprintf("certificate %q validity", cert.Subject.CommonName), cert.NotBefore, cert.NotAfter})
		}
	}
	for _, w := range ws {
		if err := inWindow(w, now); err != nil {
			return err
		}
	}
	return nil
}

func (v *Verifier) checkedCollateral(raw *Collateral, now time.Time) (*checked, error) {
	key := collateralKey(raw)
	if c, ok := v.cache.get(key); ok {
		return c, nil
	}
	c, err := v.checkCollateral(raw, now)
	if err != nil {
		return nil, err
	}
	v.cache.put(key, c)
	return c, nil
}

func (v *Verifier) checkSignedJSON(what string, body, sig, chainPEM []byte, now time.Time) ([]*x509.Certificate, error) {
	chain, err := parseCertChain(what+" issuer chain", chainPEM)
	if err != nil {
		return nil, err
	}
	if err := v.verifyChain(what+" issuer chain", chain, 2, now); err != nil {
		return nil, err
	}
	if cn := chain[0].Subject.CommonName; chain[0].IsCA || !strings.Contains(cn, "TCB Signing") {
		return nil, fmt.Errorf("%w: %s signer: expected a non-CA \"TCB Signing\" certificate, found %q (CA %v)", ErrCertificate, what, cn, chain[0].IsCA)
	}
	key, err := p256Key(what+" signer", chain[0])
	if err != nil {
		return nil, err
	}
	if err := verifyRaw(what+" (signed by "+chain[0].Subject.CommonName+")", key, body, sig); err != nil {
		return nil, err
	}
	return chain, nil
}

func (v *Verifier) parseCRL(what string, der []byte, issuer *x509.Certificate) (*x509.RevocationList, error) {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCollateral, what, err)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("%w: %s signature by %q: %w", ErrSignature, what, issuer.Subject.CommonName, err)
	}
	if crl.NextUpdate.IsZero() {
		return nil, fmt.Errorf("%w: %s nextUpdate: expected a time, found none", ErrCollateral, what)
	}
	return crl, nil
}

func decodeStrict(what string, data []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("%w: %s JSON: %w", ErrCollateral, what, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: %s JSON: trailing data after the object", ErrCollateral, what)
	}
	return nil
}

func (v *Verifier) checkCollateral(raw *Collateral, now time.Time) (*checked, error) {
	c := &checked{}
	var err error
	if c.tcbChain, err = v.checkSignedJSON("TCB Info", raw.TCBInfo, raw.TCBInfoSignature, raw.TCBInfoIssuerChain, now); err != nil {
		return nil, err
	}
	if c.qeChain, err = v.checkSignedJSON("QE Identity", raw.QEIdentity, raw.QEIdentitySignature, raw.QEIdentityIssuerChain, now); err != nil {
		return nil, err
	}
	c.tcbInfo = &TCBInfo{}
	if err := decodeStrict("TCB Info", raw.TCBInfo, c.tcbInfo); err != nil {
		return nil, err
	}
	if c.tcbInfo.ID != "SGX" || c.tcbInfo.Version != 3 {
		return nil, fmt.Errorf("%w: TCB Info id/version: expected SGX/3, found %q/%d", ErrCollateral, c.tcbInfo.ID, c.tcbInfo.Version)
	}
	if c.tcbInfo.TCBType != 0 {
		return nil, fmt.Errorf("%w: TCB Info tcbType: expected 0, found %d", ErrCollateral, c.tcbInfo.TCBType)
	}
	c.qeID = &EnclaveIdentity{}
	if err := decodeStrict("QE Identity", raw.QEIdentity, c.qeID); err != nil {
		return nil, err
	}
	if c.qeID.ID != "QE" || c.qeID.Version != 2 {
		return nil, fmt.Errorf("%w: QE Identity id/version: expected QE/2, found %q/%d", ErrCollateral, c.qeID.ID, c.qeID.Version)
	}

	if c.rootCRL, err = v.parseCRL("Root CA CRL", raw.RootCACRL, v.root); err != nil {
		return nil, err
	}
	if c.pckCRLChain, err = parseCertChain("PCK CRL issuer chain", raw.PCKCRLIssuerChain); err != nil {
		return nil, err
	}
	if err := v.verifyChain("PCK CRL issuer chain", c.pckCRLChain, 2, now); err != nil {
		return nil, err
	}
	c.pckCRLIssuer = c.pckCRLChain[0]
	if c.pckCRL, err = v.parseCRL("PCK CRL", raw.PCKCRL, c.pckCRLIssuer); err != nil {
		return nil, err
	}
	for _, cert := range []*x509.Certificate{c.tcbChain[0], c.qeChain[0], c.pckCRLIssuer} {
		if err := checkRevoked("Root CA CRL", c.rootCRL, cert); err != nil {
			return nil, err
		}
	}
	if err := c.checkTimes(now); err != nil {
		return nil, err
	}
	return c, nil
}

func collateralKey(c *Collateral) [32]byte {
	h := sha256.New()
	for _, f := range [][]byte{c.TCBInfo, c.TCBInfoSignature, c.TCBInfoIssuerChain, c.QEIdentity, c.QEIdentitySignature, c.QEIdentityIssuerChain, c.PCKCRL, c.PCKCRLIssuerChain, c.RootCACRL} {
		var n [8]byte
		for i := range n {
			n[i] = byte(uint64(len(f)) >> (8 * i)) //nolint:gosec // G115: byte() takes each of the eight bytes on purpose
		}
		h.Write(n[:])
		h.Write(f)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// cache is a bounded, concurrency-safe map from content hashes to verified
// values; the oldest entry is evicted first.
type cache[T any] struct {
	mu      sync.Mutex
	max     int
	entries map[[32]byte]*T
	order   [][32]byte
}

func newCache[T any](limit int) *cache[T] {
	return &cache[T]{max: limit, entries: make(map[[32]byte]*T)}
}

func (c *cache[T]) get(k [32]byte) (*T, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	return e, ok
}

func (c *cache[T]) put(k [32]byte, v *T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; ok {
		return
	}
	if len(c.order) >= c.max {
		delete(c.entries, c.order[0])
		c.order = c.order[1:]
	}
	c.entries[k] = v
	c.order = append(c.order, k)
}
