package coordtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/rpc"
)

// WithSealer seals the data key with s instead of the simulation sealer.
// Restarting on the same seal folder with a sealer of another key imitates
// a move to another machine: the Coordinator enters recovery.
func WithSealer(s seal.Sealer) Option {
	return func(c *coordinator.Config) { c.Sealer = s }
}

// NewAESSealer returns a sealer with a random key, standing for one
// machine's sealing key.
func NewAESSealer(t testing.TB) seal.Sealer {
	t.Helper()
	key := make([]byte, seal.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return seal.AESGCMSealer{Key: key}
}

// User is a manifest user: a self-signed certificate with its key.
type User struct {
	Name string
	// CertPEM goes into the manifest's Users section.
	CertPEM string
	TLS     tls.Certificate
}

// NewUser creates a user with an ECDSA P-256 certificate.
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
	return &User{
		Name:    name,
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
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

// Response is a decoded JSend answer.
type Response struct {
	Code    int
	Status  string          `json:"status"`
	Data    json.RawMessage `json:"data"`
	Message string          `json:"message"`
}

// Do sends a request to the client API, presenting certs as client
// certificates, and decodes the JSend answer.
func (c *Coordinator) Do(t testing.TB, method, path string, body []byte, certs ...tls.Certificate) Response {
	t.Helper()
	req, err := http.NewRequest(method, c.URL(path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	client := c.Client(certs...)
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading answer: %v", method, path, err)
	}
	out := Response{Code: resp.StatusCode}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %q", method, path, raw)
	}
	return out
}

// MarbleTLS returns the client certificate an activated marble received:
// its certificate chain and private key.
func MarbleTLS(p *rpc.Parameters) (tls.Certificate, error) {
	chain, key := p.GetEnv()[core.EnvCertChain], p.GetEnv()[core.EnvPrivateKey]
	if len(chain) == 0 || len(key) == 0 {
		return tls.Certificate{}, errors.New("the parameters lack the marble certificate or key")
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("marble certificate: %w", err)
	}
	return cert, nil
}
