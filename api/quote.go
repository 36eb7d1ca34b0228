package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"

	"github.com/marblemesh/marblemesh/api/wire"
)

// SignedQuote is the Coordinator's verdict on a quote it verified for a
// third party.
type SignedQuote struct {
	// TCBStatus is the platform's TCB status.
	TCBStatus string
	// Signature is the root key's ASN.1 ECDSA signature over
	// SHA-256(base64(quote) ‖ TCBStatus).
	Signature []byte
}

// SignQuote asks the Coordinator to verify an SGX quote and sign its
// verdict (feature gate SignQuoteEndpoint). The signature is checked
// against the trusted root before it is returned.
func SignQuote(ctx context.Context, endpoint string, trustedRoot *x509.Certificate, quote []byte) (*SignedQuote, error) {
	if len(quote) == 0 {
		return nil, errors.New("the quote is empty")
	}
	c, err := newTrustedClient(endpoint, trustedRoot, nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	resp, err := c.do(ctx, request{
		method: http.MethodPost, path: "sign-quote", v2Only: true,
		v2Body: wire.SignQuoteRequest{Quote: quote},
	})
	if err != nil {
		return nil, fmt.Errorf("signing the quote: %w", err)
	}
	var d wire.SignQuote
	if err := decode(resp.data, "signed quote", &d); err != nil {
		return nil, err
	}
	sq := &SignedQuote{TCBStatus: d.TCBStatus, Signature: d.Signature}
	if err := VerifySignedQuote(trustedRoot, quote, sq); err != nil {
		return nil, err
	}
	return sq, nil
}

// VerifySignedQuote checks that sq was signed by root's key for quote.
func VerifySignedQuote(root *x509.Certificate, quote []byte, sq *SignedQuote) error {
	pub, ok := root.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return errors.New("the root certificate has no ECDSA key")
	}
	h := sha256.New()
	h.Write([]byte(base64.StdEncoding.EncodeToString(quote)))
	h.Write([]byte(sq.TCBStatus))
	if !ecdsa.VerifyASN1(pub, h.Sum(nil), sq.Signature) {
		return errors.New("the quote verdict's signature was not made by the Coordinator's root key")
	}
	return nil
}

// SetMonotonicCounter raises a marble's monotonic counter (feature gate
// MonotonicCounter) and returns its previous value. marbleCert is the
// marble's certificate from its activation; a counter never decreases.
func SetMonotonicCounter(ctx context.Context, endpoint string, trustedRoot *x509.Certificate, marbleCert *tls.Certificate, name string, value uint64) (uint64, error) {
	if name == "" {
		return 0, errors.New("the counter name is empty")
	}
	if marbleCert == nil {
		return 0, errors.New("a marble certificate is required")
	}
	c, err := newTrustedClient(endpoint, trustedRoot, marbleCert)
	if err != nil {
		return 0, err
	}
	defer c.close()
	resp, err := c.do(ctx, request{
		method: http.MethodPost, path: "monotonic-counter", v2Only: true,
		v2Body: wire.CounterRequest{Name: name, Value: &value},
	})
	if err != nil {
		return 0, fmt.Errorf("setting monotonic counter %q: %w", name, err)
	}
	var d wire.Counter
	if err := decode(resp.data, "counter answer", &d); err != nil {
		return 0, err
	}
	return d.Value, nil
}
