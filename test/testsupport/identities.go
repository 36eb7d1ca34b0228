package testsupport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// User is a manifest user: a client certificate and its key.
type User struct {
	Name string
	Cert *x509.Certificate
	// CertPEM goes into the manifest's Users section.
	CertPEM string
	// TLS presents the certificate to the Coordinator.
	TLS tls.Certificate
}

// NewUser creates a user with a self-signed ECDSA P-256 client certificate.
func NewUser(t testing.TB, name string) *User {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &User{
		Name:    name,
		Cert:    cert,
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert},
	}
}

// RecoveryKey is a recovery key owner's RSA key pair.
type RecoveryKey struct {
	Key *rsa.PrivateKey
	// PublicPEM goes into the manifest's RecoveryKeys section.
	PublicPEM string
}

// NewRecoveryKey creates an RSA-2048 recovery key.
func NewRecoveryKey(t testing.TB) *RecoveryKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &RecoveryKey{Key: key, PublicPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}
}

// Decrypt returns the plaintext recovery secret from its encrypted form.
func (k *RecoveryKey) Decrypt(t testing.TB, encrypted []byte) []byte {
	t.Helper()
	secret, err := rsa.DecryptOAEP(sha256.New(), nil, k.Key, encrypted, nil)
	if err != nil {
		t.Fatalf("decrypting recovery secret: %v", err)
	}
	return secret
}

// Sign returns the owner's PKCS#1 v1.5 SHA-256 signature over a plaintext
// recovery secret.
func (k *RecoveryKey) Sign(t testing.TB, secret []byte) []byte {
	t.Helper()
	digest := sha256.Sum256(secret)
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.Key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}
