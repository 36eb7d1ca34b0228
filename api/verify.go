package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/attestation"
)

// VerifyOptions is the expected identity of the Coordinator. Its JSON form
// is MarbleRun's era config (coordinator-era.json): field names are matched
// case-insensitively.
//
// Rules: without UniqueID, SignerID, ProductID and SecurityVersion are all
// required (Validate). The claims are then checked by the
// attestation.Policy that Policy returns, the same rules the Coordinator
// applies to marbles: UniqueID (MRENCLAVE) and SignerID (MRSIGNER) are
// compared when set, the reported security version must be at least
// SecurityVersion, a debug enclave is refused unless Debug is true, the TCB
// status must be in AcceptedTCBStatuses (default
// attestation.DefaultAcceptedTCBStatuses), and when AcceptedAdvisories is
// not empty, every advisory the quote reports must be listed.
type VerifyOptions struct {
	// InsecureSkipVerify skips the quote's verification: anyone could
	// impersonate the Coordinator. The certificates are still returned.
	InsecureSkipVerify bool
	// UniqueID is the hex MRENCLAVE.
	UniqueID string
	// SignerID is the hex MRSIGNER.
	SignerID string
	// SecurityVersion is the minimum ISVSVN.
	SecurityVersion *uint
	// ProductID is the expected ISVPRODID.
	ProductID *uint16
	// Debug accepts a debug enclave.
	Debug bool
	// AcceptedTCBStatuses lists acceptable TCB statuses.
	AcceptedTCBStatuses []string
	// AcceptedAdvisories lists acceptable Intel security advisory IDs;
	// empty accepts all.
	AcceptedAdvisories []string
	// Nonce, if set, makes the Coordinator issue a fresh quote over
	// SHA-256(root certificate DER ‖ Nonce). It needs the v2 API.
	Nonce []byte
	// Verifier checks the quote. Required unless InsecureSkipVerify.
	Verifier Verifier `json:"-"`
}

// ParseVerifyOptions decodes an era config. Unknown fields are refused, so
// that a misspelt requirement is not silently dropped.
func ParseVerifyOptions(data []byte) (VerifyOptions, error) {
	var o VerifyOptions
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return VerifyOptions{}, fmt.Errorf("decoding era config: %w", err)
	}
	if dec.More() {
		return VerifyOptions{}, errors.New("decoding era config: unexpected data after the JSON object")
	}
	return o, nil
}

// Validate checks that the options name a usable identity. It does not
// look at InsecureSkipVerify or Verifier.
func (o VerifyOptions) Validate() error {
	_, err := o.Policy()
	return err
}

// Policy returns the attestation.Policy the options describe, or the
// reason they do not name a usable identity. Debug: true accepts a debug
// enclave and a production one.
func (o VerifyOptions) Policy() (attestation.Policy, error) {
	if o.UniqueID == "" {
		var missing []string
		if o.SignerID == "" {
			missing = append(missing, "SignerID")
		}
		if o.ProductID == nil {
			missing = append(missing, "ProductID")
		}
		if o.SecurityVersion == nil {
			missing = append(missing, "SecurityVersion")
		}
		if len(missing) > 0 {
			return attestation.Policy{}, fmt.Errorf("the expected identity is incomplete: without UniqueID, SignerID, ProductID and SecurityVersion are required (missing: %s)", strings.Join(missing, ", "))
		}
	}
	if err := attestation.CheckTCBStatusNames(o.AcceptedTCBStatuses); err != nil {
		return attestation.Policy{}, err
	}
	debug := attestation.DebugRefused
	if o.Debug {
		debug = attestation.DebugAccepted
	}
	var productID *uint64
	if o.ProductID != nil {
		v := uint64(*o.ProductID)
		productID = &v
	}
	return attestation.NewPolicy(debug, o.UniqueID, o.SignerID, productID, o.SecurityVersion, o.AcceptedTCBStatuses, o.AcceptedAdvisories)
}

// Quote is what the Coordinator's quote endpoint returns, not yet verified.
type Quote struct {
	// Root and Intermediate are the Coordinator's CA certificates.
	Root, Intermediate *x509.Certificate
	// Evidence is the SGX quote (an Open Enclave remote report or a raw
	// DCAP quote); empty when the Coordinator runs in simulation.
	Evidence []byte
	// Nonce is the nonce the quote was requested with.
	Nonce []byte
}

// Attestation is the result of VerifyCoordinator.
type Attestation struct {
	// Root and Intermediate are the Coordinator's CA certificates. They
	// are trustworthy only if Claims is not nil.
	Root, Intermediate *x509.Certificate
	// Quote is the evidence the Coordinator sent.
	Quote []byte
	// Claims are the verified claims; nil when verification was skipped.
	Claims *Claims
}

// Simulation reports whether the Coordinator sent an empty quote.
func (a *Attestation) Simulation() bool { return len(a.Quote) == 0 }

// FetchQuote gets the Coordinator's certificate chain and quote without
// verifying anything. With a nonce the quote is fresh and binds it.
func FetchQuote(ctx context.Context, endpoint string, nonce []byte) (*Quote, error) {
	c, err := newClient(endpoint, nil, nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	r := request{method: http.MethodGet, path: "quote"}
	if len(nonce) > 0 {
		r.query = url.Values{"nonce": {base64.RawURLEncoding.EncodeToString(nonce)}}
		r.v2Only = true
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("fetching the Coordinator's quote: %w", err)
	}
	// v2 names the fields cert and quote, v1 Cert and Quote; decoding is
	// case-insensitive, so the v2 shape reads both.
	var d wire.QuoteV2
	if err := decode(resp.data, "quote", &d); err != nil {
		return nil, err
	}
	root, inter, err := ParseCertificateChain([]byte(d.Cert))
	if err != nil {
		return nil, fmt.Errorf("the Coordinator's certificate chain: %w", err)
	}
	if leaf := c.peer.get(); leaf != nil {
		if err := verifyPeer([]*x509.Certificate{leaf}, root); err != nil {
			return nil, fmt.Errorf("the Coordinator's TLS certificate does not belong to the root certificate in its quote answer: %w", err)
		}
	}
	return &Quote{Root: root, Intermediate: inter, Evidence: d.Quote, Nonce: append([]byte(nil), nonce...)}, nil
}

// VerifyQuote checks q against opts: the evidence must bind SHA-256(root
// DER ‖ nonce) and prove the expected identity. opts.Nonce is not used; the
// nonce is the one q was fetched with. With InsecureSkipVerify nothing is
// checked and the claims are nil.
func VerifyQuote(ctx context.Context, q *Quote, opts VerifyOptions) (*Attestation, error) {
	att := &Attestation{Root: q.Root, Intermediate: q.Intermediate, Quote: q.Evidence}
	if opts.InsecureSkipVerify {
		return att, nil
	}
	if len(q.Evidence) == 0 {
		return nil, ErrSimulation
	}
	if opts.Verifier == nil {
		return nil, ErrNoVerifier
	}
	policy, err := opts.Policy()
	if err != nil {
		return nil, err
	}
	claims, err := opts.Verifier.Verify(ctx, q.Evidence)
	if err != nil {
		return nil, fmt.Errorf("%w: the quote is invalid: %w", ErrVerification, err)
	}
	if want := attestation.BindHash(q.Root.Raw, q.Nonce); claims.ReportData != want {
		what := "SHA-256 of the root certificate"
		if len(q.Nonce) > 0 {
			what = "SHA-256 of the root certificate and the nonce"
		}
		return nil, fmt.Errorf("%w: the quote's report data is not the %s: it was not made for this Coordinator or this request", ErrVerification, what)
	}
	if err := policy.Check(claims); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrVerification, err)
	}
	att.Claims = claims
	return att, nil
}

// VerifyCoordinator fetches the Coordinator's quote (with opts.Nonce, if
// set) and verifies it. The returned certificates are the trust anchor for
// every other call.
func VerifyCoordinator(ctx context.Context, endpoint string, opts VerifyOptions) (*Attestation, error) {
	q, err := FetchQuote(ctx, endpoint, opts.Nonce)
	if err != nil {
		return nil, err
	}
	return VerifyQuote(ctx, q, opts)
}

// ParseCertificateChain parses PEM certificates and returns the root (the
// self-signed one) and the intermediate (the one the root signed), in any
// order. The intermediate is nil if the chain has only the root.
func ParseCertificateChain(pemData []byte) (root, intermediate *x509.Certificate, err error) {
	var certs []*x509.Certificate
	rest := pemData
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("parsing certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, nil, errors.New("no PEM certificate found")
	}
	for _, c := range certs {
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			if root != nil && !root.Equal(c) {
				return nil, nil, errors.New("more than one self-signed root certificate")
			}
			root = c
		}
	}
	if root == nil {
		return nil, nil, errors.New("no self-signed root certificate")
	}
	for _, c := range certs {
		if c.Equal(root) {
			continue
		}
		if c.CheckSignatureFrom(root) != nil {
			return nil, nil, fmt.Errorf("certificate %q is not signed by the root certificate", c.Subject.CommonName)
		}
		if intermediate != nil && !intermediate.Equal(c) {
			return nil, nil, errors.New("more than one intermediate certificate")
		}
		intermediate = c
	}
	return root, intermediate, nil
}

// Fingerprint returns the hex SHA-256 of a certificate's DER.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
