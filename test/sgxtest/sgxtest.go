// Package sgxtest builds a synthetic Intel SGX DCAP PKI for tests: a root
// CA, a PCK CA and PCK leaf certificate with the SGX extension, a TCB
// signing certificate, signed TCB Info and QE Identity, CRLs, and v3 quotes
// for chosen enclave identities and report data. The sgx verifier accepts
// them when it is given PKI.Root as trust anchor and Now as the time.
//
// Nothing here is secret or random in a way that matters: it is test
// material only, and must never be used as a trust anchor in production.
package sgxtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/sgx"
)

// NowUnix is the verification time of the synthetic PKI,
// 2030-01-01T12:00:00Z. Certificates are valid a year either side of it,
// collateral from an hour before to a day after.
const NowUnix = 1893499200

// Now returns NowUnix as a time.
func Now() time.Time { return time.Unix(NowUnix, 0) }

// PCKExt is the content of the PCK leaf's SGX extension.
type PCKExt struct {
	FMSPC  []byte
	PCEID  []byte
	Comps  [sgx.CompSVNCount]int
	PCESVN int
}

// DefaultPCKExt is FMSPC 00906ED50000, PCE ID 0000, every TCB component at
// 5 and PCESVN 10: SWHardeningNeeded in the default TCB Info.
func DefaultPCKExt() PCKExt {
	e := PCKExt{FMSPC: []byte{0x00, 0x90, 0x6e, 0xd5, 0x00, 0x00}, PCEID: []byte{0, 0}, PCESVN: 10}
	for i := range e.Comps {
		e.Comps[i] = 5
	}
	return e
}

// PKI is a synthetic DCAP PKI: root, PCK CA, PCK leaf and TCB signer.
// SetLeaf must not run concurrently with other methods; the others are
// safe for concurrent use.
type PKI struct {
	Root, PCKCA, Leaf, TCBSigner             *x509.Certificate
	RootKey, PCKCAKey, LeafKey, TCBSignerKey *ecdsa.PrivateKey
	Ext                                      PCKExt
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func newCert(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("creating certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

func caTemplate(cn string, serial int64) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Test Corporation"}},
		NotBefore:             Now().Add(-365 * 24 * time.Hour),
		NotAfter:              Now().Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

// New creates a PKI with fresh keys and a leaf with DefaultPCKExt. The
// certificates are "Test SGX Root CA" (serial 1), "Test SGX PCK Processor
// CA" (2), "Test SGX TCB Signing" (3) and "Test SGX PCK Certificate" (100).
func New() (*PKI, error) {
	p := &PKI{}
	var err error
	for _, k := range []**ecdsa.PrivateKey{&p.RootKey, &p.PCKCAKey, &p.TCBSignerKey} {
		if *k, err = newKey(); err != nil {
			return nil, err
		}
	}
	rootTmpl := caTemplate("Test SGX Root CA", 1)
	if p.Root, err = newCert(rootTmpl, rootTmpl, &p.RootKey.PublicKey, p.RootKey); err != nil {
		return nil, err
	}
	if p.PCKCA, err = newCert(caTemplate("Test SGX PCK Processor CA", 2), p.Root, &p.PCKCAKey.PublicKey, p.RootKey); err != nil {
		return nil, err
	}
	signer := caTemplate("Test SGX TCB Signing", 3)
	signer.IsCA, signer.KeyUsage = false, x509.KeyUsageDigitalSignature
	if p.TCBSigner, err = newCert(signer, p.Root, &p.TCBSignerKey.PublicKey, p.RootKey); err != nil {
		return nil, err
	}
	if err := p.SetLeaf(DefaultPCKExt()); err != nil {
		return nil, err
	}
	return p, nil
}

// SetLeaf replaces the PCK leaf with a new key and the extension e.
func (p *PKI) SetLeaf(e PCKExt) error {
	ext, err := SGXExtension(e)
	if err != nil {
		return err
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	tmpl := caTemplate("Test SGX PCK Certificate", 100)
	tmpl.IsCA, tmpl.KeyUsage = false, x509.KeyUsageDigitalSignature
	tmpl.ExtraExtensions = []pkix.Extension{{Id: sgx.OIDSGXExtension(), Value: ext}}
	leaf, err := newCert(tmpl, p.PCKCA, &key.PublicKey, p.PCKCAKey)
	if err != nil {
		return err
	}
	p.Ext, p.LeafKey, p.Leaf = e, key, leaf
	return nil
}

// oidValue is one item of the SGX extension's sequence.
type oidValue struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// SGXExtension encodes e as the value of the SGX extension.
func SGXExtension(e PCKExt) ([]byte, error) {
	var err error
	sub := func(arcs ...int) asn1.ObjectIdentifier { return append(sgx.OIDSGXExtension(), arcs...) }
	item := func(v any, arcs ...int) oidValue {
		b, merr := asn1.Marshal(v)
		if merr != nil && err == nil {
			err = fmt.Errorf("encoding SGX extension item %v: %w", sub(arcs...), merr)
		}
		return oidValue{ID: sub(arcs...), Value: asn1.RawValue{FullBytes: b}}
	}
	var tcb []oidValue
	for i, svn := range e.Comps {
		tcb = append(tcb, item(svn, 2, i+1))
	}
	tcb = append(tcb, item(e.PCESVN, 2, 17), item(make([]byte, 16), 2, 18))
	tcbDER, merr := asn1.Marshal(tcb)
	if merr != nil {
		return nil, fmt.Errorf("encoding SGX extension TCB: %w", merr)
	}
	items := []oidValue{
		item(make([]byte, 16), 1),
		{ID: sub(2), Value: asn1.RawValue{FullBytes: tcbDER}},
		item(e.PCEID, 3),
		item(e.FMSPC, 4),
		item(asn1.Enumerated(0), 5),
	}
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(items)
}

// CertPEM concatenates the PEM encodings of certs.
func CertPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// rawSign returns an ECDSA signature over SHA-256(msg) as raw r‖s.
func rawSign(key *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}

// QuoteParts are the inputs of a synthetic v3 quote. Flags is the low byte
// of the enclave's ATTRIBUTES: 0x05 is INIT|MODE64BIT, 0x07 adds DEBUG.
type QuoteParts struct {
	Version      uint16
	Vendor       [16]byte
	Flags        byte
	MREnclave    [32]byte
	MRSigner     [32]byte
	ProdID       uint16
	SVN          uint16
	ReportData   [64]byte
	QEMRSigner   [32]byte
	QEProdID     uint16
	QESVN        uint16
	QEFlags      byte
	QEMisc       uint32
	AuthData     []byte
	BindOverride []byte // replaces QE report data[0:32] when set
	BindTail     []byte // replaces QE report data[32:64] when set
	CertData     []byte // replaces the PEM chain when set
}

// QEMRSigner is the MRSIGNER of the synthetic quoting enclave, A0A1…BF.
func QEMRSigner() [32]byte {
	var s [32]byte
	for i := range s {
		s[i] = 0xa0 + byte(i)
	}
	return s
}

// DefaultQuoteParts describe a production enclave with MRENCLAVE 00…1F,
// MRSIGNER 80…9F, ISVPRODID 7, ISVSVN 3 and a valid QE.
func DefaultQuoteParts() QuoteParts {
	q := QuoteParts{Version: 3, Vendor: sgx.IntelQEVendorID(), Flags: 0x05, ProdID: 7, SVN: 3, QEMRSigner: QEMRSigner(), QEProdID: 1, QESVN: 8, QEFlags: 0x15}
	for i := range q.MREnclave {
		q.MREnclave[i], q.MRSigner[i] = byte(i), byte(0x80+i)
	}
	copy(q.ReportData[:], "synthetic report data")
	for i := range 32 {
		q.AuthData = append(q.AuthData, byte(i))
	}
	return q
}

func reportBody(flags byte, misc uint32, mrenclave, mrsigner [32]byte, prodID, svn uint16, rd [64]byte) []byte {
	b := make([]byte, sgx.ReportBodySize)
	binary.LittleEndian.PutUint32(b[16:], misc)
	b[48] = flags
	b[56] = 0x03
	copy(b[64:], mrenclave[:])
	copy(b[128:], mrsigner[:])
	binary.LittleEndian.PutUint16(b[256:], prodID)
	binary.LittleEndian.PutUint16(b[258:], svn)
	copy(b[320:], rd[:])
	return b
}

// Quote assembles and signs a v3 quote from p's PCK leaf, after mod (if
// not nil) adjusts DefaultQuoteParts.
func (p *PKI) Quote(mod func(*QuoteParts)) ([]byte, error) {
	qp := DefaultQuoteParts()
	if mod != nil {
		mod(&qp)
	}
	attKey, err := newKey()
	if err != nil {
		return nil, err
	}
	attPub, err := attKey.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	attPub = attPub[1:]

	hdr := make([]byte, sgx.HeaderSize)
	binary.LittleEndian.PutUint16(hdr[0:], qp.Version)
	binary.LittleEndian.PutUint16(hdr[2:], sgx.AttestationKeyECDSAP256)
	binary.LittleEndian.PutUint16(hdr[8:], qp.QESVN)
	binary.LittleEndian.PutUint16(hdr[10:], uint16(p.Ext.PCESVN))
	copy(hdr[12:], qp.Vendor[:])
	signed := append(hdr, reportBody(qp.Flags, 0, qp.MREnclave, qp.MRSigner, qp.ProdID, qp.SVN, qp.ReportData)...)

	var qeRD [64]byte
	bind := sha256.Sum256(append(append([]byte{}, attPub...), qp.AuthData...))
	copy(qeRD[:], bind[:])
	if qp.BindOverride != nil {
		copy(qeRD[:32], qp.BindOverride)
	}
	if qp.BindTail != nil {
		copy(qeRD[32:], qp.BindTail)
	}
	qeReport := reportBody(qp.QEFlags, qp.QEMisc, [32]byte{0xee}, qp.QEMRSigner, qp.QEProdID, qp.QESVN, qeRD)

	cert := qp.CertData
	if cert == nil {
		cert = append(CertPEM(p.Leaf, p.PCKCA, p.Root), 0)
	}
	isvSig, err := rawSign(attKey, signed)
	if err != nil {
		return nil, err
	}
	qeSig, err := rawSign(p.LeafKey, qeReport)
	if err != nil {
		return nil, err
	}
	var sig []byte
	sig = append(sig, isvSig...)
	sig = append(sig, attPub...)
	sig = append(sig, qeReport...)
	sig = append(sig, qeSig...)
	sig = binary.LittleEndian.AppendUint16(sig, uint16(len(qp.AuthData)))
	sig = append(sig, qp.AuthData...)
	sig = binary.LittleEndian.AppendUint16(sig, sgx.CertDataPCKChain)
	sig = binary.LittleEndian.AppendUint32(sig, uint32(len(cert)))
	sig = append(sig, cert...)

	out := append([]byte{}, signed...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(sig)))
	return append(out, sig...), nil
}

// WithOEHeader wraps a raw quote in an Open Enclave remote-report header,
// as EGo and EdgelessRT programs send it.
func WithOEHeader(q []byte) []byte {
	out := make([]byte, sgx.OEHeaderSize, sgx.OEHeaderSize+len(q))
	binary.LittleEndian.PutUint32(out[0:], 1)
	binary.LittleEndian.PutUint32(out[4:], 2)
	binary.LittleEndian.PutUint64(out[8:], uint64(len(q)))
	return append(out, q...)
}

// CollateralParts are the inputs of synthetic collateral.
type CollateralParts struct {
	TCBInfo                    sgx.TCBInfo
	QEID                       sgx.EnclaveIdentity
	RootCRLRevoked, PCKRevoked []*big.Int
	CRLThis, CRLNext           time.Time
	PCKCRLSigner               *x509.Certificate
	PCKCRLSignerKey            *ecdsa.PrivateKey
}

// TCBLevel returns a TCB Info level with every component at comp.
func TCBLevel(comp, pcesvn int, status string, adv ...string) sgx.TCBLevel {
	var l sgx.TCBLevel
	for range sgx.CompSVNCount {
		l.TCB.SGXTCBComponents = append(l.TCB.SGXTCBComponents, struct {
			SVN int `json:"svn"`
		}{comp})
	}
	l.TCB.PCESVN, l.TCBStatus, l.AdvisoryIDs = pcesvn, status, adv
	l.TCBDate = Now().Add(-30 * 24 * time.Hour)
	return l
}

// QELevel returns a QE Identity level.
func QELevel(svn uint16, status string, adv ...string) sgx.QETCBLevel {
	var l sgx.QETCBLevel
	l.TCB.ISVSVN, l.TCBStatus, l.AdvisoryIDs, l.TCBDate = svn, status, adv, Now().Add(-30*24*time.Hour)
	return l
}

// DefaultCollateralParts match p's leaf: TCB levels UpToDate (components
// 6), SWHardeningNeeded with INTEL-SA-00615 (5) and OutOfDate (4), all at
// PCESVN 10; QE levels UpToDate (ISVSVN 8) and OutOfDate (6); nothing
// revoked; evaluation data number 17.
func (p *PKI) DefaultCollateralParts() CollateralParts {
	signer := QEMRSigner()
	return CollateralParts{
		TCBInfo: sgx.TCBInfo{
			ID: "SGX", Version: 3, IssueDate: Now().Add(-time.Hour), NextUpdate: Now().Add(24 * time.Hour),
			FMSPC: p.Ext.FMSPC, PCEID: p.Ext.PCEID, TCBEvaluationDataNumber: 17,
			TCBLevels: []sgx.TCBLevel{
				TCBLevel(6, 10, attestation.TCBUpToDate),
				TCBLevel(5, 10, attestation.TCBSWHardeningNeeded, "INTEL-SA-00615"),
				TCBLevel(4, 10, attestation.TCBOutOfDate, "INTEL-SA-00615", "INTEL-SA-00828"),
			},
		},
		QEID: sgx.EnclaveIdentity{
			ID: "QE", Version: 2, IssueDate: Now().Add(-time.Hour), NextUpdate: Now().Add(24 * time.Hour), TCBEvaluationDataNumber: 17,
			MiscSelect: []byte{0, 0, 0, 0}, MiscSelectMask: []byte{0xff, 0xff, 0xff, 0xff},
			Attributes:     []byte{0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
			AttributesMask: []byte{0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0},
			MRSigner:       signer[:], ISVProdID: 1,
			TCBLevels: []sgx.QETCBLevel{QELevel(8, attestation.TCBUpToDate), QELevel(6, attestation.TCBOutOfDate, "INTEL-SA-00615")},
		},
		CRLThis: Now().Add(-time.Hour), CRLNext: Now().Add(24 * time.Hour),
		PCKCRLSigner: p.PCKCA, PCKCRLSignerKey: p.PCKCAKey,
	}
}

// CRL returns a DER CRL by issuer listing revoked.
func CRL(issuer *x509.Certificate, key *ecdsa.PrivateKey, this, next time.Time, revoked []*big.Int) ([]byte, error) {
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: this, NextUpdate: next}
	for _, s := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: this})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	if err != nil {
		return nil, fmt.Errorf("creating CRL of %q: %w", issuer.Subject.CommonName, err)
	}
	return der, nil
}

// Collateral signs collateral for p, after mod (if not nil) adjusts
// DefaultCollateralParts.
func (p *PKI) Collateral(mod func(*CollateralParts)) (*sgx.Collateral, error) {
	cp := p.DefaultCollateralParts()
	if mod != nil {
		mod(&cp)
	}
	tcb, err := json.Marshal(cp.TCBInfo)
	if err != nil {
		return nil, err
	}
	qe, err := json.Marshal(cp.QEID)
	if err != nil {
		return nil, err
	}
	c := &sgx.Collateral{
		TCBInfo:               tcb,
		TCBInfoIssuerChain:    CertPEM(p.TCBSigner, p.Root),
		QEIdentity:            qe,
		QEIdentityIssuerChain: CertPEM(p.TCBSigner, p.Root),
		PCKCRLIssuerChain:     CertPEM(cp.PCKCRLSigner, p.Root),
	}
	if c.TCBInfoSignature, err = rawSign(p.TCBSignerKey, tcb); err != nil {
		return nil, err
	}
	if c.QEIdentitySignature, err = rawSign(p.TCBSignerKey, qe); err != nil {
		return nil, err
	}
	if c.PCKCRL, err = CRL(cp.PCKCRLSigner, cp.PCKCRLSignerKey, cp.CRLThis, cp.CRLNext, cp.PCKRevoked); err != nil {
		return nil, err
	}
	if c.RootCACRL, err = CRL(p.Root, p.RootKey, cp.CRLThis, cp.CRLNext, cp.RootCRLRevoked); err != nil {
		return nil, err
	}
	return c, nil
}

// Verifier returns an sgx verifier that trusts p.Root and serves c; when
// opts.Now is nil it verifies at Now.
func (p *PKI) Verifier(c *sgx.Collateral, opts sgx.Options) (*sgx.Verifier, error) {
	opts.Root = p.Root
	if opts.Now == nil {
		opts.Now = Now
	}
	return sgx.NewVerifier(sgx.StaticProvider{C: c}, opts)
}

// Issuer is an attestation.Issuer that produces synthetic quotes from PKI
// binding the requested report data. Parts, if set, adjusts the quote
// after the report data is filled in, so it may describe any enclave (or
// override the binding).
type Issuer struct {
	PKI   *PKI
	Parts func(*QuoteParts)
}

var _ attestation.Issuer = Issuer{}

// Issue returns a quote binding reportData.
func (i Issuer) Issue(_ context.Context, reportData [attestation.ReportDataSize]byte) ([]byte, error) {
	if i.PKI == nil {
		return nil, fmt.Errorf("sgxtest issuer: no PKI")
	}
	return i.PKI.Quote(func(q *QuoteParts) {
		q.ReportData = reportData
		if i.Parts != nil {
			i.Parts(q)
		}
	})
}

// Insecure is false: the quotes verify against PKI.Root.
func (Issuer) Insecure() bool { return false }
