package api

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"github.com/marblemesh/marblemesh/api/wire"
)

// RecoveryResult is the Coordinator's answer to an uploaded recovery
// secret.
type RecoveryResult struct {
	// Remaining is how many more secrets are needed; 0 when recovered.
	Remaining int
	// Message is the Coordinator's description.
	Message string
}

// IsPlainRecoverySecret reports whether data has the length of a
// decrypted recovery secret: 32 bytes (a data key or an XOR share), 33
// bytes (a Shamir share) or 16 bytes (legacy). Anything else is taken to be
// encrypted.
func IsPlainRecoverySecret(data []byte) bool {
	switch len(data) {
	case 16, 32, 33:
		return true
	}
	return false
}

// DecryptRecoverySecret decrypts a recovery secret that was encrypted with
// RSA-OAEP-SHA256 for key.
func DecryptRecoverySecret(ciphertext []byte, key crypto.Decrypter) ([]byte, error) {
	plain, err := key.Decrypt(rand.Reader, ciphertext, &rsa.OAEPOptions{Hash: crypto.SHA256})
	if err != nil {
		return nil, fmt.Errorf("decrypting the recovery secret with RSA-OAEP-SHA256 (is it the right key?): %w", err)
	}
	return plain, nil
}

// EncryptRecoverySecret encrypts a recovery secret with RSA-OAEP-SHA256
// for pub, e.g. the Coordinator's ephemeral recovery key.
func EncryptRecoverySecret(secret []byte, pub *rsa.PublicKey) ([]byte, error) {
	out, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, secret, nil)
	if err != nil {
		return nil, fmt.Errorf("encrypting the recovery secret: %w", err)
	}
	return out, nil
}

// SignRecoverySecret signs the plain recovery secret with the owner's
// recovery key (RSA PKCS#1 v1.5, SHA-256), which the Coordinator checks
// against the manifest's RecoveryKeys.
func SignRecoverySecret(secret []byte, key crypto.Signer) ([]byte, error) {
	if _, ok := key.Public().(*rsa.PublicKey); !ok {
		return nil, errors.New("the recovery key must be an RSA key")
	}
	digest := sha256.Sum256(secret)
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing the recovery secret: %w", err)
	}
	return sig, nil
}

// Recover signs a plain recovery secret with key and uploads both to a
// Coordinator in recovery mode.
func Recover(ctx context.Context, endpoint string, trustedRoot *x509.Certificate, secret []byte, key crypto.Signer) (*RecoveryResult, error) {
	sig, err := SignRecoverySecret(secret, key)
	if err != nil {
		return nil, err
	}
	return RecoverWithSignature(ctx, endpoint, trustedRoot, secret, sig)
}

// RecoverWithSignature uploads a recovery secret (plain, or encrypted for
// the Coordinator's ephemeral recovery key) and the signature of the plain
// secret. Recovery only exists in the v2 API.
func RecoverWithSignature(ctx context.Context, endpoint string, trustedRoot *x509.Certificate, secret, signature []byte) (*RecoveryResult, error) {
	if len(secret) == 0 {
		return nil, errors.New("the recovery secret is empty")
	}
	if len(signature) == 0 {
		return nil, errors.New("the recovery secret's signature is empty")
	}
	c, err := newTrustedClient(endpoint, trustedRoot, nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	resp, err := c.do(ctx, request{
		method: http.MethodPost, path: "recover", v2Only: true,
		v2Body: wire.RecoverRequest{Secret: secret, Signature: signature},
	})
	if err != nil {
		return nil, fmt.Errorf("uploading the recovery secret: %w", err)
	}
	var d wire.RecoverV2
	if err := decode(resp.data, "recovery answer", &d); err != nil {
		return nil, err
	}
	return &RecoveryResult{Remaining: d.Remaining, Message: d.Message}, nil
}

// RecoveryPublicKey returns the ephemeral RSA key of a Coordinator in
// recovery mode, for encrypting recovery secrets in transit.
func RecoveryPublicKey(ctx context.Context, endpoint string, trustedRoot *x509.Certificate) (*rsa.PublicKey, error) {
	c, err := newTrustedClient(endpoint, trustedRoot, nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "recover/public-key", v2Only: true})
	if err != nil {
		return nil, fmt.Errorf("getting the recovery public key: %w", err)
	}
	var d wire.RecoveryKey
	if err := decode(resp.data, "recovery public key", &d); err != nil {
		return nil, err
	}
	if d.Algorithm != "RSA" {
		return nil, fmt.Errorf("the recovery public key has algorithm %q, expected RSA", d.Algorithm)
	}
	pub, err := x509.ParsePKIXPublicKey(d.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("parsing the recovery public key: %w", err)
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the recovery public key is a %T, expected RSA", pub)
	}
	return rsaPub, nil
}
