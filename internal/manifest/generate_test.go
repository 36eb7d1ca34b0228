package manifest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkCertSecret verifies the invariants of a generated certificate secret
// and returns its private key.
func checkCertSecret(t *testing.T, s Secret, ca CA) crypto.Signer {
	t.Helper()
	cert := s.Cert.X509()
	if len(cert.Raw) == 0 {
		t.Fatal("no certificate")
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("certificate is not signed by the CA: %v", err)
	}
	if !bytes.Equal(cert.RawIssuer, ca.Cert.RawSubject) {
		t.Error("issuer is not the CA")
	}
	key, err := x509.ParsePKCS8PrivateKey(s.Private)
	if err != nil {
		t.Fatalf("Private is not PKCS#8: %v", err)
	}
	signer := key.(crypto.Signer)
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pub, s.Public) || !bytes.Equal(cert.RawSubjectPublicKeyInfo, s.Public) {
		t.Error("Public does not match the private key and the certificate")
	}
	if cert.SerialNumber.Sign() <= 0 {
		t.Errorf("serial number %v is not positive", cert.SerialNumber)
	}
	return signer
}

func TestGenerateCertificateTypes(t *testing.T) {
	ca := newCA(t)
	tests := []struct {
		typ   string
		size  uint
		check func(t *testing.T, key crypto.Signer)
	}{
		{SecretTypeCertECDSA, 224, curveIs(elliptic.P224())},
		{SecretTypeCertECDSA, 256, curveIs(elliptic.P256())},
		{SecretTypeCertECDSA, 384, curveIs(elliptic.P384())},
		{SecretTypeCertECDSA, 521, curveIs(elliptic.P521())},
		{SecretTypeCertED25519, 0, func(t *testing.T, key crypto.Signer) {
			if _, ok := key.(ed25519.PrivateKey); !ok {
				t.Errorf("key is %T", key)
			}
		}},
		{SecretTypeCertRSA, 2048, func(t *testing.T, key crypto.Signer) {
			k, ok := key.(*rsa.PrivateKey)
			if !ok || k.N.BitLen() != 2048 {
				t.Errorf("key is %T, want 2048-bit RSA", key)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s-%d", tt.typ, tt.size), func(t *testing.T) {
			def := Secret{Type: tt.typ, Size: tt.size, Shared: true}
			s, err := GenerateSecret("s", def, ca, nil, testNow())
			if err != nil {
				t.Fatal(err)
			}
			if s.Type != tt.typ || s.Size != tt.size || !s.Shared {
				t.Errorf("definition fields not kept: %+v", s)
			}
			tt.check(t, checkCertSecret(t, s, ca))
		})
	}
}

func curveIs(c elliptic.Curve) func(*testing.T, crypto.Signer) {
	return func(t *testing.T, key crypto.Signer) {
		k, ok := key.(*ecdsa.PrivateKey)
		if !ok || k.Curve != c {
			t.Errorf("key is %T, want ECDSA on %s", key, c.Params().Name)
		}
	}
}

func TestGenerateCertificateDefaults(t *testing.T) {
	ca := newCA(t)
	s, err := GenerateSecret("s", Secret{Type: SecretTypeCertECDSA, Size: 256}, ca, nil, testNow())
	if err != nil {
		t.Fatal(err)
	}
	cert := s.Cert.X509()
	if cert.Subject.CommonName != DefaultCommonName {
		t.Errorf("CommonName = %q", cert.Subject.CommonName)
	}
	if !slices.Equal(cert.DNSNames, []string{"localhost"}) {
		t.Errorf("DNSNames = %v", cert.DNSNames)
	}
	if len(cert.IPAddresses) != 2 || !cert.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !cert.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses = %v", cert.IPAddresses)
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageCertSign {
		t.Errorf("KeyUsage = %v", cert.KeyUsage)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage = %v", cert.ExtKeyUsage)
	}
	if !cert.NotBefore.Equal(testNow()) || !cert.NotAfter.Equal(testNow().AddDate(0, 0, 365)) {
		t.Errorf("validity = %v .. %v", cert.NotBefore, cert.NotAfter)
	}

	other, err := GenerateSecret("s", Secret{Type: SecretTypeCertECDSA, Size: 256}, ca, nil, testNow())
	if err != nil {
		t.Fatal(err)
	}
	if other.Cert.SerialNumber.Cmp(cert.SerialNumber) == 0 || bytes.Equal(other.Private, s.Private) {
		t.Error("two generations share a serial number or key")
	}
}

func TestGenerateCertificateTemplate(t *testing.T) {
	ca := newCA(t)
	notAfter := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name     string
		def      Secret
		cn       string
		dns      []string
		notAfter time.Time
	}{
		{"ValidFor", Secret{Type: SecretTypeCertED25519, ValidFor: 10}, DefaultCommonName, []string{"localhost"}, testNow().AddDate(0, 0, 10)},
		{"NotAfter", Secret{Type: SecretTypeCertED25519, Cert: Certificate{NotAfter: notAfter}}, DefaultCommonName, []string{"localhost"}, notAfter},
		{"CN from first DNS name", Secret{Type: SecretTypeCertED25519, Cert: Certificate{DNSNames: []string{"a.example", "b.example"}}},
			"a.example", []string{"a.example", "b.example"}, testNow().AddDate(0, 0, 365)},
		{"CN from template", func() Secret {
			s := Secret{Type: SecretTypeCertED25519, Cert: Certificate{DNSNames: []string{"a.example"}}}
			s.Cert.Subject.CommonName = "service"
			s.Cert.Subject.Organization = []string{"Org"}
			return s
		}(), "service", []string{"a.example"}, testNow().AddDate(0, 0, 365)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cnBefore, dnsBefore := tt.def.Cert.Subject.CommonName, len(tt.def.Cert.DNSNames)
			s, err := GenerateSecret("s", tt.def, ca, nil, testNow())
			if err != nil {
				t.Fatal(err)
			}
			if tt.def.Cert.Subject.CommonName != cnBefore || len(tt.def.Cert.DNSNames) != dnsBefore {
				t.Error("the definition was modified")
			}
			checkCertSecret(t, s, ca)
			cert := s.Cert.X509()
			if cert.Subject.CommonName != tt.cn || !slices.Equal(cert.DNSNames, tt.dns) || !cert.NotAfter.Equal(tt.notAfter) {
				t.Errorf("certificate CN %q, DNS %v, NotAfter %v; want %q, %v, %v", cert.Subject.CommonName, cert.DNSNames, cert.NotAfter, tt.cn, tt.dns, tt.notAfter)
			}
		})
	}

	// A template from JSON carries IPs, key usages and organization.
	var def Secret
	if err := def.Cert.UnmarshalJSON([]byte(`{"Subject": {"Organization": ["Org"]}, "IPAddresses": ["10.1.2.3"], "KeyUsage": 1, "ExtKeyUsage": [1]}`)); err != nil {
		t.Fatal(err)
	}
	def.Type = SecretTypeCertECDSA
	def.Size = 256
	s, err := GenerateSecret("s", def, ca, nil, testNow())
	if err != nil {
		t.Fatal(err)
	}
	cert := s.Cert.X509()
	if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.IPv4(10, 1, 2, 3)) || cert.KeyUsage != x509.KeyUsageDigitalSignature ||
		!slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || !slices.Equal(cert.Subject.Organization, []string{"Org"}) {
		t.Errorf("template not applied: IPs %v, KeyUsage %v, EKU %v, O %v", cert.IPAddresses, cert.KeyUsage, cert.ExtKeyUsage, cert.Subject.Organization)
	}
}

func TestGenerateSymmetricKey(t *testing.T) {
	source := bytes.Repeat([]byte{0xab}, 64)
	s, err := GenerateSecret("k", Secret{Type: SecretTypeSymmetricKey, Size: 256, Shared: true}, CA{}, bytes.NewReader(source), testNow())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.Private, source[:32]) || !bytes.Equal(s.Public, s.Private) || len(s.Cert.Raw) != 0 {
		t.Errorf("symmetric key = %+v", s)
	}
	if _, err := GenerateSecret("k", Secret{Type: SecretTypeSymmetricKey, Size: 256}, CA{}, bytes.NewReader(source[:8]), testNow()); err == nil {
		t.Error("GenerateSecret() succeeded with too little randomness")
	}
	a, err := GenerateSecret("k", Secret{Type: SecretTypeSymmetricKey, Size: 128}, CA{}, nil, testNow())
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateSecret("k", Secret{Type: SecretTypeSymmetricKey, Size: 128}, CA{}, nil, testNow())
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Private) != 16 || bytes.Equal(a.Private, b.Private) {
		t.Errorf("random keys %x and %x", a.Private, b.Private)
	}
}

func TestGenerateSecretErrors(t *testing.T) {
	ca := newCA(t)
	tests := []struct {
		name string
		def  Secret
		ca   CA
		want string
	}{
		{"user-defined", Secret{Type: SecretTypeSymmetricKey, Size: 128, UserDefined: true}, ca, `secret "s": user-defined secrets are not generated`},
		{"plain", Secret{Type: SecretTypePlain}, ca, `secret "s": plain secrets must be user-defined`},
		{"unknown type", Secret{Type: "otp"}, ca, `secret "s": unknown type "otp"`},
		{"symmetric size", Secret{Type: SecretTypeSymmetricKey, Size: 100}, ca, "positive multiple of 8"},
		{"rsa size", Secret{Type: SecretTypeCertRSA, Size: 1024}, ca, "cert-rsa Size must be between 2048 and 8192 bits"},
		{"ecdsa size", Secret{Type: SecretTypeCertECDSA, Size: 512}, ca, "cert-ecdsa Size must be 224, 256, 384 or 521"},
		{"ed25519 size", Secret{Type: SecretTypeCertED25519, Size: 255}, ca, "cert-ed25519 Size must be 0"},
		{"no CA", Secret{Type: SecretTypeCertED25519}, CA{}, "no CA certificate and key"},
		{"NotAfter and ValidFor", Secret{Type: SecretTypeCertED25519, ValidFor: 3, Cert: Certificate{NotAfter: testNow().AddDate(1, 0, 0)}}, ca,
			"Cert.NotAfter and ValidFor must not both be set"},
		{"ValidFor too large", Secret{Type: SecretTypeCertED25519, ValidFor: 1 << 40}, ca, "too large"},
		{"CA key mismatch", Secret{Type: SecretTypeCertED25519}, CA{Cert: ca.Cert, Key: newCA(t).Key}, "creating certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := GenerateSecret("s", tt.def, tt.ca, nil, testNow())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("GenerateSecret() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestGenerateShared(t *testing.T) {
	ca := newCA(t)
	defs := map[string]Secret{
		"sym":     {Type: SecretTypeSymmetricKey, Size: 128, Shared: true},
		"cert":    {Type: SecretTypeCertECDSA, Size: 256, Shared: true},
		"ed":      {Type: SecretTypeCertED25519, Shared: true},
		"private": {Type: SecretTypeSymmetricKey, Size: 128},
		"user":    {Type: SecretTypeCertECDSA, Size: 256, Shared: true, UserDefined: true},
		"plain":   {Type: SecretTypePlain, UserDefined: true},
	}
	for i := range 40 {
		defs[fmt.Sprintf("many%02d", i)] = Secret{Type: SecretTypeCertECDSA, Size: 256, Shared: true}
	}
	out, err := GenerateShared(defs, ca, testNow())
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 43 {
		t.Errorf("GenerateShared() returned %d secrets, want 43", len(out))
	}
	for _, skipped := range []string{"private", "user", "plain"} {
		if _, ok := out[skipped]; ok {
			t.Errorf("GenerateShared() generated %q", skipped)
		}
	}
	if len(out["sym"].Private) != 16 {
		t.Errorf("sym = %x", out["sym"].Private)
	}
	checkCertSecret(t, out["cert"], ca)
	checkCertSecret(t, out["many39"], ca)
	if bytes.Equal(out["many00"].Private, out["many01"].Private) {
		t.Error("two secrets share a key")
	}

	defs["bad1"] = Secret{Type: SecretTypeCertECDSA, Size: 1, Shared: true}
	defs["bad2"] = Secret{Type: SecretTypePlain, Shared: true}
	_, err = GenerateShared(defs, ca, testNow())
	if err == nil {
		t.Fatal("GenerateShared() succeeded with invalid definitions")
	}
	if lines := errorLines(err); len(lines) != 2 || !strings.HasPrefix(lines[0], `secret "bad1"`) || !strings.HasPrefix(lines[1], `secret "bad2"`) {
		t.Errorf("GenerateShared() = %v, want both failures in order", err)
	}
}

func TestDeriveForMarble(t *testing.T) {
	ca := newCA(t)
	defs := map[string]Secret{
		"k1":     {Type: SecretTypeSymmetricKey, Size: 256},
		"k2":     {Type: SecretTypeSymmetricKey, Size: 256},
		"short":  {Type: SecretTypeSymmetricKey, Size: 64},
		"cert":   {Type: SecretTypeCertECDSA, Size: 256},
		"shared": {Type: SecretTypeSymmetricKey, Size: 256, Shared: true},
		"user":   {Type: SecretTypeSymmetricKey, Size: 256, UserDefined: true},
	}
	root := []byte("root secret of the deployment, 32")
	uuidA := [16]byte{1, 2, 3}
	uuidB := [16]byte{1, 2, 4}
	derive := func(t *testing.T, names []string, root []byte, id [16]byte, typ string, disable bool) map[string]Secret {
		t.Helper()
		out, err := DeriveForMarble(defs, names, root, id, typ, disable, ca, testNow())
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	a := derive(t, nil, root, uuidA, "backend", false)
	if got := sortedKeys(a); !slices.Equal(got, []string{"cert", "k1", "k2", "short"}) {
		t.Fatalf("derived %v, want the per-marble secrets", got)
	}
	// The derivation is HKDF-SHA256(root, salt = UUID ‖ name, info = type).
	want, err := hkdf.Key(sha256.New, root, append(uuidA[:], "k1"...), "backend", 32)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a["k1"].Private, want) || !bytes.Equal(a["k1"].Public, want) {
		t.Errorf("k1 = %x, want %x", a["k1"].Private, want)
	}
	if len(a["short"].Private) != 8 {
		t.Errorf("short has %d bytes", len(a["short"].Private))
	}
	checkCertSecret(t, a["cert"], ca)

	again := derive(t, []string{"k1", "cert", "k1"}, root, uuidA, "backend", false)
	if !bytes.Equal(again["k1"].Private, a["k1"].Private) {
		t.Error("same UUID derived a different key")
	}
	if bytes.Equal(again["cert"].Private, a["cert"].Private) {
		t.Error("per-marble certificate key was reused")
	}
	if len(again) != 2 {
		t.Errorf("names subset derived %v", sortedKeys(again))
	}

	differs := func(name string, other map[string]Secret) {
		t.Helper()
		if bytes.Equal(other["k1"].Private, a["k1"].Private) {
			t.Errorf("%s: derived the same key", name)
		}
	}
	differs("other UUID", derive(t, []string{"k1"}, root, uuidB, "backend", false))
	differs("other type", derive(t, []string{"k1"}, root, uuidA, "frontend", false))
	differs("other root", derive(t, []string{"k1"}, []byte("another root"), uuidA, "backend", false))
	differs("unbound", derive(t, []string{"k1"}, root, uuidA, "backend", true))
	if bytes.Equal(a["k1"].Private, a["k2"].Private) {
		t.Error("two names derived the same key")
	}

	unboundA := derive(t, []string{"k1"}, root, uuidA, "backend", true)
	unboundB := derive(t, []string{"k1"}, root, uuidA, "frontend", true)
	if !bytes.Equal(unboundA["k1"].Private, unboundB["k1"].Private) {
		t.Error("DisableSecretBinding still binds the key to the marble type")
	}
	wantUnbound, _ := hkdf.Key(sha256.New, root, append(uuidA[:], "k1"...), "", 32)
	if !bytes.Equal(unboundA["k1"].Private, wantUnbound) {
		t.Error("unbound derivation does not use empty info")
	}

	if out := derive(t, []string{"shared", "user"}, root, uuidA, "backend", false); len(out) != 0 {
		t.Errorf("shared and user-defined secrets were derived: %v", sortedKeys(out))
	}
	if out := derive(t, []string{}, root, uuidA, "backend", false); len(out) != 0 {
		t.Errorf("empty names derived %v", sortedKeys(out))
	}

	if _, err := DeriveForMarble(defs, []string{"k1", "ghost"}, root, uuidA, "backend", false, ca, testNow()); err == nil ||
		!strings.Contains(err.Error(), `secret "ghost" is not defined`) {
		t.Errorf("undefined name: %v", err)
	}
	if _, err := DeriveForMarble(defs, nil, nil, uuidA, "backend", false, ca, testNow()); err == nil {
		t.Error("empty root secret accepted")
	}
	if _, err := DeriveForMarble(defs, []string{"cert"}, root, uuidA, "backend", false, CA{}, testNow()); err == nil {
		t.Error("certificate derived without a CA")
	}
}
