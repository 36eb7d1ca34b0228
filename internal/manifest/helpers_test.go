package manifest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

// testNow is the clock used by generation tests.
func testNow() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }

// newCA returns a self-signed P-256 CA.
func newCA(t testing.TB) CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "test marble root"},
		NotBefore:             testNow().Add(-time.Hour),
		NotAfter:              testNow().AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return CA{Cert: cert, Key: key}
}

// selfSignedPEM returns a self-signed P-256 certificate as PEM.
func selfSignedPEM(t testing.TB, cn string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    testNow(),
		NotAfter:     testNow().AddDate(1, 0, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// publicKeyPEM encodes pub as a PEM "PUBLIC KEY" block.
func publicKeyPEM(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// fixtures holds key material that is expensive to create; one per test.
type fixtures struct {
	alice, bob, carol string // user certificates
	recoveryA         string // RSA public keys
	recoveryB         string
	ecdsaPub          string // a non-RSA public key
}

// testRecoveryKeyPEM is a 2048-bit RSA public key; only its public half
// exists, which is all recovery keys need in these tests.
const testRecoveryKeyPEM = `-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvGzd8iL0cWH6kYybR211
1RCzDoRxPxIjRedTw13acC6izIbWmHFIPpNNgE7OSnA9Q68Lc/R/t9lkSUG74XwD
go2Uag3n886EEPiTEf6eU5VXjDa+b4rRk5abOxl4/LJk8iRG0FofIEIDHPchK1cv
TRPSECKOpUwJtsru5ouKVKpYeTV/b4ZQzAINQp0pUGhpeHwDxl6pUeRJW9MuplS/
UQWtGm6GOdzuq8J6Jr1neUnsJbgyMN68Um3TfCKTd3VdrhZC1uEH4pJ3bqyqPYIo
9Ja2jtmzFuOPQkoRy68S0Blj/z+210LPy1OPgHx0s4sgi79tax347GfEL4D2IQ+S
vQIDAQAB
-----END PUBLIC KEY-----
`

func newFixtures(t testing.TB) *fixtures {
	t.Helper()
	rsaKey, err := ParseRecoveryKey(testRecoveryKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// A modified modulus still parses as an RSA public key and differs
	// from the first.
	other := *rsaKey
	other.N = new(big.Int).Add(rsaKey.N, big.NewInt(2))
	return &fixtures{
		alice:     selfSignedPEM(t, "alice"),
		bob:       selfSignedPEM(t, "bob"),
		carol:     selfSignedPEM(t, "carol"),
		recoveryA: testRecoveryKeyPEM,
		recoveryB: publicKeyPEM(t, &other),
		ecdsaPub:  publicKeyPEM(t, &ecKey.PublicKey),
	}
}

func ptr[T any](v T) *T { return &v }

const (
	testUniqueID = "8b4a1e2c5d6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809"
	testSignerID = "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc"
)

// validManifest returns a manifest using every section, which passes Check.
func validManifest(f *fixtures) *Manifest {
	return &Manifest{
		Packages: map[string]Package{
			"frontend": {UniqueID: testUniqueID},
			"backend":  {SignerID: testSignerID, ProductID: ptr[uint64](3), SecurityVersion: ptr[uint](2)},
		},
		Infrastructures: map[string]Infrastructure{"azure": {QESVN: ptr[uint16](2)}},
		Marbles: map[string]Marble{
			"frontend": {
				Package: "frontend",
				TLS:     []string{"web"},
				Parameters: Parameters{
					Files: map[string]File{
						"/tls/cert.pem": {Data: "{{ pem .Secrets.frontendCert.Cert }}{{ pem .Secrets.frontendCert.Private }}"},
						"/tls/ca.pem":   {Data: "{{ pem .MarbleRun.RootCA.Cert }}"},
						"/raw":          {Data: "{{ raw .Secrets.apiToken }}"},
						"/literal":      {Data: "{{ not a template", NoTemplates: true},
					},
					Env: map[string]File{
						"SESSION_KEY": {Data: "{{ hex .Secrets.sessionKey }}"},
						"API_TOKEN":   {Data: "{{ string .Secrets.apiToken }}"},
						"OLD_KEY":     {Data: "{{ base64 .Previous.Secrets.sessionKey }}"},
					},
					Argv: []string{"./frontend", "{{ not templated }}"},
				},
			},
			"backend": {
				Package:        "backend",
				MaxActivations: 2,
				TLS:            []string{"web", "db"},
				Parameters: Parameters{
					Files: map[string]File{
						"/keys/db": {Data: "{{ hex .Secrets.dbKey }}"},
						"/keys/me": {Data: "{{ pem .MarbleRun.MarbleCert.Private }}"},
					},
					Env: map[string]File{"SHARED": {Data: "{{ base64 .Secrets.sharedKey }}"}},
				},
			},
		},
		Users: map[string]User{
			"alice": {Certificate: f.alice, Roles: []string{"updater", "reader"}},
			"bob":   {Certificate: f.bob, Roles: []string{"updater", "writer", "svn"}},
		},
		Secrets: map[string]Secret{
			"sessionKey":   {Type: SecretTypeSymmetricKey, Size: 128},
			"sharedKey":    {Type: SecretTypeSymmetricKey, Size: 256, Shared: true},
			"dbKey":        {Type: SecretTypeSymmetricKey, Size: 256, UserDefined: true},
			"frontendCert": {Type: SecretTypeCertECDSA, Size: 256, Shared: true, ValidFor: 30},
			"edCert":       {Type: SecretTypeCertED25519},
			"apiToken":     {Type: SecretTypePlain, UserDefined: true},
		},
		RecoveryKeys: map[string]string{"a": f.recoveryA, "b": f.recoveryB},
		Roles: map[string]Role{
			"updater": {ResourceType: "Manifest", Actions: []string{"UpdateManifest"}},
			"reader":  {ResourceType: "Secrets", ResourceNames: []string{"sharedKey", "apiToken"}, Actions: []string{"ReadSecret"}},
			"writer":  {ResourceType: "Secrets", ResourceNames: []string{"dbKey", "apiToken"}, Actions: []string{"WriteSecret", "ReadSecret"}},
			"svn":     {ResourceType: "Packages", ResourceNames: []string{"backend"}, Actions: []string{"UpdateSecurityVersion"}},
		},
		TLS: map[string]TLSTag{
			"web": {
				Incoming: []TLSEntry{{Port: "8443", Cert: "frontendCert", DisableClientAuth: true}},
				Outgoing: []TLSEntry{{Addr: "backend", Port: "9000"}},
			},
			"db": {Incoming: []TLSEntry{{Port: "9000"}}},
		},
		Config: Config{
			SealMode:          "ProductKey",
			FeatureGates:      []string{"SignQuoteEndpoint"},
			UpdateThreshold:   2,
			RecoveryThreshold: 2,
		},
	}
}

// errorLines splits a joined error into its lines.
func errorLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}
