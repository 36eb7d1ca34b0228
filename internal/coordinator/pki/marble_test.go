package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// referenceMarbleCert is the former implementation of IssueMarbleCert, the
// specification marbleCertDER must match byte for byte (apart from the
// randomised signature).
func referenceMarbleCert(marbleRoot *x509.Certificate, signer crypto.Signer, req MarbleCertRequest, now time.Time, serial *big.Int) ([]byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber:    serial,
		Subject:         pkix.Name{CommonName: req.UUID},
		NotBefore:       now.Add(-time.Minute),
		NotAfter:        noExpiry,
		KeyUsage:        x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:        req.DNSNames,
		IPAddresses:     withLoopback(req.IPAddresses),
		ExtraExtensions: []pkix.Extension{{Id: OIDMarbleType, Value: []byte(req.MarbleType)}},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, marbleRoot, req.PublicKey, signer)
}

type testPKI struct {
	root         CA
	intermediate CA
	marbleRoot   *x509.Certificate
	leafKey      *ecdsa.PrivateKey
}

func newTestPKI(t testing.TB, now time.Time) *testPKI {
	t.Helper()
	p, err := buildTestPKI(now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func buildTestPKI(now time.Time) (*testPKI, error) {
	root, err := NewRoot([]string{"coordinator.example"}, nil, now)
	if err != nil {
		return nil, err
	}
	inter, marbleRoot, err := NewIntermediate(root, []string{"coordinator.example"}, nil, now)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &testPKI{root: root, intermediate: inter, marbleRoot: marbleRoot, leafKey: key}, nil
}

func TestIssueMarbleCertMatchesCreateCertificate(t *testing.T) {
	realNow := time.Now()
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		now  time.Time
		req  MarbleCertRequest // PublicKey defaults to a P-256 key
	}{
		{name: "typical", now: realNow, req: MarbleCertRequest{
			UUID: "0b7ac1b4-5f1f-4a5e-9a53-2cf0d7d2b0a1", MarbleType: "backend", DNSNames: []string{"backend"},
		}},
		{name: "no names", now: realNow, req: MarbleCertRequest{UUID: "0b7ac1b4-5f1f-4a5e-9a53-2cf0d7d2b0a1", MarbleType: "frontend"}},
		{name: "several DNS names", now: realNow, req: MarbleCertRequest{
			UUID: "f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f", MarbleType: "db",
			DNSNames: []string{"db", "db.default.svc", "db.default.svc.cluster.local", "*.db.example", "localhost"},
		}},
		{name: "IPv4 and IPv6", now: realNow, req: MarbleCertRequest{
			UUID: "0b7ac1b4-5f1f-4a5e-9a53-2cf0d7d2b0a1", MarbleType: "backend",
			IPAddresses: []net.IP{net.ParseIP("10.0.0.7"), net.IPv4(192, 168, 1, 1).To4(), net.ParseIP("fd00::1234"), net.ParseIP("2001:db8::1")},
		}},
		{name: "loopback already present", now: realNow, req: MarbleCertRequest{
			UUID: "0b7ac1b4-5f1f-4a5e-9a53-2cf0d7d2b0a1", MarbleType: "backend",
			DNSNames: []string{"a"}, IPAddresses: []net.IP{net.IPv6loopback, net.ParseIP("127.0.0.1")},
		}},
		{name: "IPv4-mapped IPv6", now: realNow, req: MarbleCertRequest{
			UUID: "x", MarbleType: "t", IPAddresses: []net.IP{net.ParseIP("::ffff:10.1.2.3")},
		}},
		{name: "long UUID and type", now: realNow, req: MarbleCertRequest{
			UUID: strings.Repeat("0b7ac1b4-5f1f-4a5e-9a53-2cf0d7d2b0a1", 8), MarbleType: strings.Repeat("very-long-marble-type-", 200),
			DNSNames: []string{strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".example"},
		}},
		{name: "unicode type", now: realNow, req: MarbleCertRequest{UUID: "0b7ac1b4", MarbleType: "бэкенд-サービス-🚀"}},
		{name: "unicode common name", now: realNow, req: MarbleCertRequest{UUID: "größe-😀", MarbleType: "x"}},
		{name: "non-printable ASCII common name", now: realNow, req: MarbleCertRequest{UUID: "a*b&c_d@e", MarbleType: "x"}},
		{name: "empty type", now: realNow, req: MarbleCertRequest{UUID: "0b7ac1b4"}},
		{name: "empty subject makes SAN critical", now: realNow, req: MarbleCertRequest{MarbleType: "anon", DNSNames: []string{"anon"}}},
		{name: "P-384 leaf key", now: realNow, req: MarbleCertRequest{UUID: "u", MarbleType: "t", PublicKey: &p384.PublicKey}},
		{name: "Ed25519 leaf key", now: realNow, req: MarbleCertRequest{UUID: "u", MarbleType: "t", PublicKey: edPub}},
		{name: "year 2049 UTCTime", now: time.Date(2049, 12, 31, 23, 0, 0, 0, time.UTC), req: MarbleCertRequest{
			UUID: "0b7ac1b4-5f1f-4a5e-9a53-2cf0d7d2b0a1", MarbleType: "backend", DNSNames: []string{"backend"},
		}},
		{name: "year 2051 GeneralizedTime", now: time.Date(2051, 3, 4, 5, 6, 7, 0, time.UTC), req: MarbleCertRequest{
			UUID: "0b7ac1b4-5f1f-4a5e-9a53-2cf0d7d2b0a1", MarbleType: "backend", DNSNames: []string{"backend"},
		}},
		{name: "new year 2050 boundary", now: time.Date(2050, 1, 1, 0, 0, 30, 0, time.UTC), req: MarbleCertRequest{UUID: "u", MarbleType: "t"}},
		{name: "sub-second non-UTC clock", now: time.Date(2030, 6, 1, 12, 0, 0, 999_999_999, time.FixedZone("X", -7*3600-1800)), req: MarbleCertRequest{
			UUID: "u", MarbleType: "t", DNSNames: []string{"u"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPKI(t, tc.now)
			req := tc.req
			if req.PublicKey == nil {
				req.PublicKey = &p.leafKey.PublicKey
			}

			serial, err := newSerial()
			if err != nil {
				t.Fatal(err)
			}
			der, err := marbleCertDER(p.marbleRoot, p.intermediate.Key, req, tc.now, serial)
			if err != nil {
				t.Fatal(err)
			}
			refDER, err := referenceMarbleCert(p.marbleRoot, p.intermediate.Key, req, tc.now, serial)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatalf("fast certificate does not parse: %v", err)
			}
			ref, err := x509.ParseCertificate(refDER)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(cert.RawTBSCertificate, ref.RawTBSCertificate) {
				t.Errorf("TBSCertificate differs from crypto/x509's:\nfast %x\nref  %x", cert.RawTBSCertificate, ref.RawTBSCertificate)
			}
			// ECDSA signatures vary in length; everything around them must
			// not.
			if len(der)-len(cert.Signature) != len(refDER)-len(ref.Signature) {
				t.Errorf("certificates of %d and %d bytes with signatures of %d and %d bytes differ outside the signature", len(der), len(refDER), len(cert.Signature), len(ref.Signature))
			}
			checkMarbleCert(t, p, cert, tc.now, req)

			// And from a fresh serial, through the exported function.
			issued, err := IssueMarbleCert(p.marbleRoot, p.intermediate.Key, req, tc.now)
			if err != nil {
				t.Fatal(err)
			}
			checkMarbleCert(t, p, issued, tc.now, req)
			compareFields(t, issued, ref)
			if issued.SerialNumber.Cmp(serial) == 0 || issued.SerialNumber.Sign() <= 0 || issued.SerialNumber.BitLen() > 127 {
				t.Errorf("serial %v: want a fresh positive 127-bit serial", issued.SerialNumber)
			}
		})
	}
}

// checkMarbleCert checks that cert verifies and chains in both ways
// marbles use, and carries req.
func checkMarbleCert(t *testing.T, p *testPKI, cert *x509.Certificate, now time.Time, req MarbleCertRequest) {
	t.Helper()
	if err := cert.CheckSignatureFrom(p.marbleRoot); err != nil {
		t.Errorf("CheckSignatureFrom(marble root): %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.marbleRoot)
	opts := x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if len(req.DNSNames) > 0 && !strings.HasPrefix(req.DNSNames[0], "*") {
		opts.DNSName = req.DNSNames[0]
	}
	if _, err := cert.Verify(opts); err != nil {
		t.Errorf("does not chain to the marble root: %v", err)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(p.root.Cert)
	inters.AddCert(p.intermediate.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("does not chain via the intermediate to the root: %v", err)
	}
	typ, err := MarbleType(cert)
	if err != nil || typ != req.MarbleType {
		t.Errorf("MarbleType = %q, %v; want %q", typ, err, req.MarbleType)
	}
	if cert.Subject.CommonName != req.UUID {
		t.Errorf("CN = %q, want %q", cert.Subject.CommonName, req.UUID)
	}
	if !cert.NotBefore.Equal(now.Add(-time.Minute).Truncate(time.Second)) || !cert.NotAfter.Equal(noExpiry) {
		t.Errorf("validity %v – %v", cert.NotBefore, cert.NotAfter)
	}
	if !req.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
		t.Error("certificate is not for the requested key")
	}
}

// compareFields compares what clients read from two marble certificates.
func compareFields(t *testing.T, got, want *x509.Certificate) {
	t.Helper()
	type fields struct {
		Subject, Issuer         string
		RawIssuer               []byte
		DNSNames                []string
		IPAddresses             []net.IP
		KeyUsage                x509.KeyUsage
		ExtKeyUsage             []x509.ExtKeyUsage
		AuthorityKeyID, SKI     []byte
		BasicConstraintsValid   bool
		NotBefore, NotAfter     time.Time
		Version                 int
		SignatureAlgorithm      x509.SignatureAlgorithm
		RawSubjectPublicKeyInfo []byte
		Extensions              []pkix.Extension
	}
	get := func(c *x509.Certificate) fields {
		return fields{
			c.Subject.String(), c.Issuer.String(), c.RawIssuer, c.DNSNames, c.IPAddresses, c.KeyUsage, c.ExtKeyUsage,
			c.AuthorityKeyId, c.SubjectKeyId, c.BasicConstraintsValid, c.NotBefore, c.NotAfter, c.Version,
			c.SignatureAlgorithm, c.RawSubjectPublicKeyInfo, c.Extensions,
		}
	}
	if g, w := get(got), get(want); !reflect.DeepEqual(g, w) {
		t.Errorf("fields differ from crypto/x509's:\ngot  %+v\nwant %+v", g, w)
	}
}

func TestIssueMarbleCertErrors(t *testing.T) {
	now := time.Now()
	p := newTestPKI(t, now)
	other := newTestPKI(t, now)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := MarbleCertRequest{UUID: "u", MarbleType: "t", PublicKey: &p.leafKey.PublicKey}
	tests := []struct {
		name      string
		signer    crypto.Signer
		req       func(MarbleCertRequest) MarbleCertRequest
		refAgrees bool // crypto/x509 refuses it too
	}{
		{"non-ASCII DNS name", p.intermediate.Key, func(r MarbleCertRequest) MarbleCertRequest { r.DNSNames = []string{"bücher.example"}; return r }, true},
		{"invalid UTF-8 common name", p.intermediate.Key, func(r MarbleCertRequest) MarbleCertRequest { r.UUID = "ab\xffcd"; return r }, true},
		{"unsupported public key", p.intermediate.Key, func(r MarbleCertRequest) MarbleCertRequest { r.PublicKey = struct{}{}; return r }, true},
		{"signer of another deployment", other.intermediate.Key, func(r MarbleCertRequest) MarbleCertRequest { return r }, true},
		{"Ed25519 signer", edKey, func(r MarbleCertRequest) MarbleCertRequest { return r }, false},
		{"P-384 signer", p384, func(r MarbleCertRequest) MarbleCertRequest { return r }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req(good)
			if _, err := IssueMarbleCert(p.marbleRoot, tc.signer, req, now); err == nil {
				t.Error("IssueMarbleCert succeeded; want error")
			}
			if tc.refAgrees {
				if _, err := referenceMarbleCert(p.marbleRoot, tc.signer, req, now, big.NewInt(1)); err == nil {
					t.Error("crypto/x509 accepts the request; the test's premise is wrong")
				}
			}
		})
	}
}

// cryptoSigner hides the concrete key type, as an HSM-backed signer would.
type cryptoSigner struct{ crypto.Signer }

func TestIssueMarbleCertOpaqueSigner(t *testing.T) {
	now := time.Now()
	p := newTestPKI(t, now)
	req := MarbleCertRequest{UUID: "u", MarbleType: "t", PublicKey: &p.leafKey.PublicKey}
	cert, err := IssueMarbleCert(p.marbleRoot, cryptoSigner{p.intermediate.Key}, req, now)
	if err != nil {
		t.Fatal(err)
	}
	checkMarbleCert(t, p, cert, now, req)
}

var fuzzPKI = sync.OnceValues(func() (*testPKI, error) {
	return buildTestPKI(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
})

func FuzzMarbleCertDER(f *testing.F) {
	f.Add("0b7ac1b4-5f1f-4a5e-9a53-2cf0d7d2b0a1", "backend", "backend\x00db.svc", []byte{10, 0, 0, 1}, int64(0))
	f.Add("", "", "", []byte{}, int64(1<<40))
	f.Add("größe", "бэкенд", "bücher", []byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34}, int64(-1))
	f.Add("a*b", "\xff\xfe", "*.x\x00\x00", []byte{1, 2, 3}, int64(80*365*24*3600))
	f.Fuzz(func(t *testing.T, uuid, marbleType, names string, ip []byte, offset int64) {
		p, err := fuzzPKI()
		if err != nil {
			t.Fatal(err)
		}
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(offset%(1<<62/int64(time.Second))) * time.Second)
		req := MarbleCertRequest{UUID: uuid, MarbleType: marbleType, PublicKey: &p.leafKey.PublicKey}
		if names != "" {
			req.DNSNames = strings.Split(names, "\x00")
		}
		if len(ip) > 0 {
			req.IPAddresses = []net.IP{ip}
		}
		serial := big.NewInt(offset)
		serial.Abs(serial)
		der, err := marbleCertDER(p.marbleRoot, p.intermediate.Key, req, now, serial)
		refDER, refErr := referenceMarbleCert(p.marbleRoot, p.intermediate.Key, req, now, serial)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("fast path error %v, crypto/x509 error %v", err, refErr)
		}
		if err != nil {
			return
		}
		cert, err := x509.ParseCertificate(der)
		ref, refErr := x509.ParseCertificate(refDER)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("fast certificate parse error %v, crypto/x509's %v", err, refErr)
		}
		if err != nil {
			return // crypto/x509 writes what it cannot read back, e.g. malformed IPs
		}
		if !bytes.Equal(cert.RawTBSCertificate, ref.RawTBSCertificate) {
			t.Fatalf("TBSCertificate differs:\nfast %x\nref  %x", cert.RawTBSCertificate, ref.RawTBSCertificate)
		}
		if err := cert.CheckSignatureFrom(p.marbleRoot); err != nil {
			t.Fatal(err)
		}
		if typ, err := MarbleType(cert); err != nil || typ != marbleType {
			t.Fatalf("MarbleType = %q, %v", typ, err)
		}
	})
}

func BenchmarkIssueMarbleCert(b *testing.B) {
	now := time.Now()
	p := newTestPKI(b, now)
	req := MarbleCertRequest{
		UUID: "0b7ac1b4-5f1f-4a5e-9a53-2cf0d7d2b0a1", MarbleType: "backend",
		DNSNames: []string{"backend", "backend.default.svc"}, PublicKey: &p.leafKey.PublicKey,
	}
	b.Run("CreateCertificate", func(b *testing.B) { // the former implementation
		b.ReportAllocs()
		for b.Loop() {
			serial, err := newSerial()
			if err != nil {
				b.Fatal(err)
			}
			der, err := referenceMarbleCert(p.marbleRoot, p.intermediate.Key, req, now, serial)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := x509.ParseCertificate(der); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("IssueMarbleCert", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := IssueMarbleCert(p.marbleRoot, p.intermediate.Key, req, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DERonly", func(b *testing.B) { // IssueMarbleCert without parsing
		b.ReportAllocs()
		for b.Loop() {
			serial, err := newSerial()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := marbleCertDER(p.marbleRoot, p.intermediate.Key, req, now, serial); err != nil {
				b.Fatal(err)
			}
		}
	})
}
