package sgx

import (
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
	"math/big"
	"testing"
	"time"
)

// pkiNowUnix is the verification time of the synthetic PKI, 2030-01-01T12:00:00Z.
const pkiNowUnix = 1893499200

// testPKI is a synthetic DCAP PKI: root, PCK CA, PCK leaf and TCB signer.
type testPKI struct {
	root, pckCA, leaf, tcbSigner             *x509.Certificate
	rootKey, pckCAKey, leafKey, tcbSignerKey *ecdsa.PrivateKey
	ext                                      pckExtOpts
}

type pckExtOpts struct {
	fmspc  []byte
	pceID  []byte
	comps  [CompSVNCount]int
	pcesvn int
}

func defaultExt() pckExtOpts {
	e := pckExtOpts{fmspc: []byte{0x00, 0x90, 0x6e, 0xd5, 0x00, 0x00}, pceID: []byte{0, 0}, pcesvn: 10}
	for i := range e.comps {
		e.comps[i] = 5
	}
	return e
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCert(t testing.TB, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caTemplate(cn string, serial int64) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Test Corporation"}},
		NotBefore:             time.Unix(pkiNowUnix, 0).Add(-365 * 24 * time.Hour),
		NotAfter:              time.Unix(pkiNowUnix, 0).Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{rootKey: mustKey(t), pckCAKey: mustKey(t), tcbSignerKey: mustKey(t)}
	p.root = mustCert(t, caTemplate("Test SGX Root CA", 1), caTemplate("Test SGX Root CA", 1), &p.rootKey.PublicKey, p.rootKey)
	p.pckCA = mustCert(t, caTemplate("Test SGX PCK Processor CA", 2), p.root, &p.pckCAKey.PublicKey, p.rootKey)
	signer := caTemplate("Test SGX TCB Signing", 3)
	signer.IsCA, signer.KeyUsage = false, x509.KeyUsageDigitalSignature
	p.tcbSigner = mustCert(t, signer, p.root, &p.tcbSignerKey.PublicKey, p.rootKey)
	p.setLeaf(t, defaultExt())
	return p
}

func (p *testPKI) setLeaf(t testing.TB, e pckExtOpts) {
	t.Helper()
	p.ext = e
	p.leafKey = mustKey(t)
	tmpl := caTemplate("Test SGX PCK Certificate", 100)
	tmpl.IsCA, tmpl.KeyUsage = false, x509.KeyUsageDigitalSignature
	tmpl.ExtraExtensions = []pkix.Extension{{Id: oidSGXExtension(), Value: sgxExtension(t, e)}}
	p.leaf = mustCert(t, tmpl, p.pckCA, &p.leafKey.PublicKey, p.pckCAKey)
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sgxExtension(t testing.TB, e pckExtOpts) []byte {
	t.Helper()
	item := func(v any, arcs ...int) oidValue {
		return oidValue{ID: subOID(arcs...), Value: asn1.RawValue{FullBytes: mustMarshal(t, v)}}
	}
	var tcb []oidValue
	for i, svn := range e.comps {
		tcb = append(tcb, item(svn, 2, i+1))
	}
	tcb = append(tcb, item(e.pcesvn, 2, 17), item(make([]byte, 16), 2, 18))
	items := []oidValue{
		item(make([]byte, 16), 1),
		{ID: subOID(2), Value: asn1.RawValue{FullBytes: mustMarshal(t, tcb)}},
		item(e.pceID, 3),
		item(e.fmspc, 4),
		item(asn1.Enumerated(0), 5),
	}
	return mustMarshal(t, items)
}

func certPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func rawSign(t testing.TB, key *ecdsa.PrivateKey, msg []byte) []byte {
	t.Helper()
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out
}

// quoteParts are the inputs of a synthetic v3 quote.
type quoteParts struct {
	version      uint16
	vendor       [16]byte
	flags        byte
	mrenclave    [32]byte
	mrsigner     [32]byte
	prodID       uint16
	svn          uint16
	reportData   [64]byte
	qeMRSigner   [32]byte
	qeProdID     uint16
	qeSVN        uint16
	qeFlags      byte
	qeMisc       uint32
	authData     []byte
	bindOverride []byte // replaces QE report data[0:32] when set
	bindTail     []byte // replaces QE report data[32:64] when set
	certData     []byte // replaces the PEM chain when set
}

func qeSignerValue() [32]byte {
	var s [32]byte
	for i := range s {
		s[i] = 0xa0 + byte(i)
	}
	return s
}

func defaultQuoteParts() quoteParts {
	q := quoteParts{version: 3, vendor: IntelQEVendorID(), flags: 0x05, prodID: 7, svn: 3, qeMRSigner: qeSignerValue(), qeProdID: 1, qeSVN: 8, qeFlags: 0x15}
	for i := range q.mrenclave {
		q.mrenclave[i], q.mrsigner[i] = byte(i), byte(0x80+i)
	}
	copy(q.reportData[:], "synthetic report data")
	for i := 0; i < 32; i++ {
		q.authData = append(q.authData, byte(i))
	}
	return q
}

func reportBody(flags byte, misc uint32, mrenclave, mrsigner [32]byte, prodID, svn uint16, rd [64]byte) []byte {
	b := make([]byte, ReportBodySize)
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

// quote assembles and signs a v3 quote from p's PCK leaf.
func (p *testPKI) quote(t testing.TB, mod func(*quoteParts)) []byte {
	t.Helper()
	qp := defaultQuoteParts()
	if mod != nil {
		mod(&qp)
	}
	attKey := mustKey(t)
	attPub, err := attKey.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	attPub = attPub[1:]

	hdr := make([]byte, HeaderSize)
	binary.LittleEndian.PutUint16(hdr[0:], qp.version)
	binary.LittleEndian.PutUint16(hdr[2:], AttestationKeyECDSAP256)
	binary.LittleEndian.PutUint16(hdr[8:], qp.qeSVN)
	binary.LittleEndian.PutUint16(hdr[10:], uint16(p.ext.pcesvn))
	copy(hdr[12:], qp.vendor[:])
	signed := append(hdr, reportBody(qp.flags, 0, qp.mrenclave, qp.mrsigner, qp.prodID, qp.svn, qp.reportData)...)

	var qeRD [64]byte
	bind := sha256.Sum256(append(append([]byte{}, attPub...), qp.authData...))
	copy(qeRD[:], bind[:])
	if qp.bindOverride != nil {
		copy(qeRD[:32], qp.bindOverride)
	}
	if qp.bindTail != nil {
		copy(qeRD[32:], qp.bindTail)
	}
	qeReport := reportBody(qp.qeFlags, qp.qeMisc, [32]byte{0xee}, qp.qeMRSigner, qp.qeProdID, qp.qeSVN, qeRD)

	cert := qp.certData
	if cert == nil {
		cert = append(certPEM(p.leaf, p.pckCA, p.root), 0)
	}
	var sig []byte
	sig = append(sig, rawSign(t, attKey, signed)...)
	sig = append(sig, attPub...)
	sig = append(sig, qeReport...)
	sig = append(sig, rawSign(t, p.leafKey, qeReport)...)
	sig = binary.LittleEndian.AppendUint16(sig, uint16(len(qp.authData)))
	sig = append(sig, qp.authData...)
	sig = binary.LittleEndian.AppendUint16(sig, CertDataPCKChain)
	sig = binary.LittleEndian.AppendUint32(sig, uint32(len(cert)))
	sig = append(sig, cert...)

	out := append([]byte{}, signed...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(sig)))
	return append(out, sig...)
}

// collParts are the inputs of synthetic collateral.
type collParts struct {
	tcbInfo                    TCBInfo
	qeID                       EnclaveIdentity
	rootCRLRevoked, pckRevoked []*big.Int
	crlThis, crlNext           time.Time
	pckCRLSigner               *x509.Certificate
	pckCRLSignerKey            *ecdsa.PrivateKey
}

func tcbLevel(comp, pcesvn int, status string, adv ...string) TCBLevel {
	var l TCBLevel
	for range CompSVNCount {
		l.TCB.SGXTCBComponents = append(l.TCB.SGXTCBComponents, struct {
			SVN int `json:"svn"`
		}{comp})
	}
	l.TCB.PCESVN, l.TCBStatus, l.AdvisoryIDs = pcesvn, status, adv
	l.TCBDate = time.Unix(pkiNowUnix, 0).Add(-30 * 24 * time.Hour)
	return l
}

func qeLevel(svn uint16, status string, adv ...string) struct {
	TCB struct {
		ISVSVN uint16 `json:"isvsvn"`
	} `json:"tcb"`
	TCBDate     time.Time `json:"tcbDate"`
	TCBStatus   string    `json:"tcbStatus"`
	AdvisoryIDs []string  `json:"advisoryIDs"`
} {
	var l struct {
		TCB struct {
			ISVSVN uint16 `json:"isvsvn"`
		} `json:"tcb"`
		TCBDate     time.Time `json:"tcbDate"`
		TCBStatus   string    `json:"tcbStatus"`
		AdvisoryIDs []string  `json:"advisoryIDs"`
	}
	l.TCB.ISVSVN, l.TCBStatus, l.AdvisoryIDs, l.TCBDate = svn, status, adv, time.Unix(pkiNowUnix, 0).Add(-30*24*time.Hour)
	return l
}

func (p *testPKI) defaultCollParts() collParts {
	signer := qeSignerValue()
	return collParts{
		tcbInfo: TCBInfo{
			ID: "SGX", Version: 3, IssueDate: time.Unix(pkiNowUnix, 0).Add(-time.Hour), NextUpdate: time.Unix(pkiNowUnix, 0).Add(24 * time.Hour),
			FMSPC: p.ext.fmspc, PCEID: p.ext.pceID, TCBEvaluationDataNumber: 17,
			TCBLevels: []TCBLevel{
				tcbLevel(6, 10, StatusUpToDate),
				tcbLevel(5, 10, StatusSWHardeningNeeded, "INTEL-SA-00615"),
				tcbLevel(4, 10, StatusOutOfDate, "INTEL-SA-00615", "INTEL-SA-00828"),
			},
		},
		qeID: EnclaveIdentity{
			ID: "QE", Version: 2, IssueDate: time.Unix(pkiNowUnix, 0).Add(-time.Hour), NextUpdate: time.Unix(pkiNowUnix, 0).Add(24 * time.Hour), TCBEvaluationDataNumber: 17,
			MiscSelect: []byte{0, 0, 0, 0}, MiscSelectMask: []byte{0xff, 0xff, 0xff, 0xff},
			Attributes:     []byte{0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
			AttributesMask: []byte{0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0},
			MRSigner:       signer[:], ISVProdID: 1,
			TCBLevels: append(make([]struct {
				TCB struct {
					ISVSVN uint16 `json:"isvsvn"`
				} `json:"tcb"`
				TCBDate     time.Time `json:"tcbDate"`
				TCBStatus   string    `json:"tcbStatus"`
				AdvisoryIDs []string  `json:"advisoryIDs"`
			}, 0), qeLevel(8, StatusUpToDate), qeLevel(6, StatusOutOfDate, "INTEL-SA-00615")),
		},
		crlThis: time.Unix(pkiNowUnix, 0).Add(-time.Hour), crlNext: time.Unix(pkiNowUnix, 0).Add(24 * time.Hour),
		pckCRLSigner: p.pckCA, pckCRLSignerKey: p.pckCAKey,
	}
}

func (p *testPKI) crl(t testing.TB, issuer *x509.Certificate, key *ecdsa.PrivateKey, this, next time.Time, revoked []*big.Int) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: this, NextUpdate: next}
	for _, s := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: this})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// collateral signs collateral for p, after mod adjusts the defaults.
func (p *testPKI) collateral(t testing.TB, mod func(*collParts)) *Collateral {
	t.Helper()
	cp := p.defaultCollParts()
	if mod != nil {
		mod(&cp)
	}
	tcb, err := json.Marshal(cp.tcbInfo)
	if err != nil {
		t.Fatal(err)
	}
	qe, err := json.Marshal(cp.qeID)
	if err != nil {
		t.Fatal(err)
	}
	return &Collateral{
		TCBInfo:               tcb,
		TCBInfoSignature:      rawSign(t, p.tcbSignerKey, tcb),
		TCBInfoIssuerChain:    certPEM(p.tcbSigner, p.root),
		QEIdentity:            qe,
		QEIdentitySignature:   rawSign(t, p.tcbSignerKey, qe),
		QEIdentityIssuerChain: certPEM(p.tcbSigner, p.root),
		PCKCRL:                p.crl(t, cp.pckCRLSigner, cp.pckCRLSignerKey, cp.crlThis, cp.crlNext, cp.pckRevoked),
		PCKCRLIssuerChain:     certPEM(cp.pckCRLSigner, p.root),
		RootCACRL:             p.crl(t, p.root, p.rootKey, cp.crlThis, cp.crlNext, cp.rootCRLRevoked),
	}
}

func (p *testPKI) verifier(t testing.TB, c *Collateral, opts Options) *Verifier {
	t.Helper()
	opts.Root = p.root
	if opts.Now == nil {
		opts.Now = func() time.Time { return time.Unix(pkiNowUnix, 0) }
	}
	v, err := NewVerifier(StaticProvider{C: c}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
