package keyapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// OIDEvidence is the certificate extension that carries a replica's
// evidence over SHA-256 of the certificate's SubjectPublicKeyInfo.
func OIDEvidence() asn1.ObjectIdentifier { return asn1.ObjectIdentifier{1, 3, 9903, 2, 2} }

// MaxEvidenceSize bounds the evidence a peer's certificate may carry; an
// SGX DCAP quote with its certificate chain is far smaller.
const MaxEvidenceSize = 64 << 10

// ErrPeerRefused is wrapped by every refusal of a peer's certificate or
// evidence.
var ErrPeerRefused = errors.New("key API peer refused")

// verifyTimeout bounds the verification of one peer's evidence, which may
// fetch collateral.
const verifyTimeout = 30 * time.Second

// maxVerifying bounds the verifications of peers' evidence in progress; a
// handshake beyond it is refused at once.
const maxVerifying = 8

// identity is a replica's side of the mutually attested TLS: an ephemeral
// key, a self-signed certificate carrying evidence that binds the key,
// and what the replica's own evidence says about it.
type identity struct {
	cert     tls.Certificate
	evidence []byte
	verifier attestation.Verifier
	// insecure is simulation: no evidence is issued or checked.
	insecure bool
	sealMode func() seal.Mode
	log      *slog.Logger
	// verifying holds a token per verification in progress.
	verifying chan struct{}

	mu  sync.Mutex
	own *attestation.Claims // own claims, once verified
}

// newIdentity creates the ephemeral key and certificate. Outside
// simulation, iss issues evidence over SHA-256 of the public key, and v
// later checks peers' evidence and the replica's own.
func newIdentity(ctx context.Context, iss attestation.Issuer, v attestation.Verifier, sealMode func() seal.Mode, log *slog.Logger) (*identity, error) {
	insecure := iss == nil || iss.Insecure()
	if !insecure && v == nil {
		return nil, errors.New("key API: an evidence issuer without a verifier cannot check peers")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("key API: generating the ephemeral key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("key API: encoding the ephemeral public key: %w", err)
	}
	var evidence []byte
	if !insecure {
		if evidence, err = iss.Issue(ctx, attestation.BindHash(spki)); err != nil {
			return nil, fmt.Errorf("key API: issuing evidence for the ephemeral key: %w", err)
		}
		if len(evidence) == 0 || len(evidence) > MaxEvidenceSize {
			return nil, fmt.Errorf("key API: the issuer returned %d bytes of evidence, want 1 to %d", len(evidence), MaxEvidenceSize)
		}
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("key API: a certificate serial number: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "marblemesh coordinator key API"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if evidence != nil {
		val, err := asn1.Marshal(evidence)
		if err != nil {
			return nil, fmt.Errorf("key API: encoding evidence: %w", err)
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: OIDEvidence(), Value: val}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("key API: creating the ephemeral certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("key API: parsing the ephemeral certificate: %w", err)
	}
	return &identity{
		cert:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		evidence: evidence, verifier: v, insecure: insecure, sealMode: sealMode, log: log,
		verifying: make(chan struct{}, maxVerifying),
	}, nil
}

// ownClaims verifies the replica's own evidence once: its claims are the
// identity peers are held to. A failure (such as an unreachable
// collateral service) is not cached.
func (id *identity) ownClaims(ctx context.Context) (*attestation.Claims, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.own != nil {
		return id.own, nil
	}
	c, err := id.verifier.Verify(ctx, id.evidence)
	if err != nil {
		return nil, fmt.Errorf("key API: verifying the replica's own evidence: %w", err)
	}
	if c.ReportData != attestation.BindHash(id.cert.Leaf.RawSubjectPublicKeyInfo) {
		return nil, errors.New("key API: the replica's own evidence does not bind its ephemeral key")
	}
	id.own = c
	return c, nil
}

// PeerPolicy returns what a peer must be, given the replica's own claims
// and the seal mode of the state: in ProductKey mode the same SignerID and
// ProductID and at least the same SecurityVersion (the enclaves that can
// derive the same seal key); in UniqueKey mode, and when nothing is sealed
// (Disabled), the same UniqueID. Either way the same Debug attribute and
// a TCB status of attestation.DefaultAcceptedTCBStatuses.
func PeerPolicy(own *attestation.Claims, mode seal.Mode) attestation.Policy {
	p := attestation.Policy{Debug: attestation.DebugRefused}
	if own.Debug {
		p.Debug = attestation.DebugRequired
	}
	if mode == seal.ModeProductKey || mode == "" {
		pid, svn := own.ProductID, own.SecurityVersion
		p.SignerID, p.ProductID, p.SecurityVersion = own.SignerID, &pid, &svn
	} else {
		p.UniqueID = own.UniqueID
	}
	return p
}

// verifyPeer checks the certificates a peer presented in the TLS
// handshake (also of a resumed session): one certificate, whose evidence binds its public key and
// satisfies PeerPolicy. The handshake itself proves that the peer holds
// the certificate's private key. In simulation no evidence is checked.
func (id *identity) verifyPeer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) != 1 {
		return fmt.Errorf("%w: expected one certificate, found %d", ErrPeerRefused, len(cs.PeerCertificates))
	}
	cert := cs.PeerCertificates[0]
	if id.insecure {
		return nil
	}
	var evidence []byte
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(OIDEvidence()) {
			if len(ext.Value) > MaxEvidenceSize+8 {
				return fmt.Errorf("%w: its evidence exceeds %d bytes", ErrPeerRefused, MaxEvidenceSize)
			}
			rest, err := asn1.Unmarshal(ext.Value, &evidence)
			if err != nil || len(rest) != 0 {
				return fmt.Errorf("%w: its evidence extension is malformed", ErrPeerRefused)
			}
		}
	}
	if len(evidence) == 0 {
		return fmt.Errorf("%w: its certificate carries no evidence (a simulated replica?)", ErrPeerRefused)
	}
	select {
	case id.verifying <- struct{}{}:
		defer func() { <-id.verifying }()
	default:
		return fmt.Errorf("%w: %d verifications of evidence are in progress already", ErrPeerRefused, maxVerifying)
	}
	ctx, cancel := context.WithTimeout(context.Background(), verifyTimeout)
	defer cancel()
	own, err := id.ownClaims(ctx)
	if err != nil {
		return err
	}
	claims, err := id.verifier.Verify(ctx, evidence)
	if err != nil {
		return fmt.Errorf("%w: verifying its evidence: %w", ErrPeerRefused, err)
	}
	if claims.ReportData != attestation.BindHash(cert.RawSubjectPublicKeyInfo) {
		return fmt.Errorf("%w: its evidence does not bind its certificate's public key", ErrPeerRefused)
	}
	if err := PeerPolicy(own, id.sealMode()).Check(claims); err != nil {
		return fmt.Errorf("%w: %w", ErrPeerRefused, err)
	}
	return nil
}

// serverTLS is the key API server's TLS configuration: it presents the
// ephemeral certificate and requires and checks the requester's.
func (id *identity) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		ClientAuth:   tls.RequireAnyClientCert,
		// Every connection is attested afresh.
		SessionTicketsDisabled: true,
		VerifyConnection:       id.verifyPeer,
	}
}

// clientTLS is the requester's TLS configuration: it presents the
// ephemeral certificate and checks the server's evidence instead of a
// certificate chain, which a self-signed ephemeral certificate has not.
func (id *identity) clientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.cert},
		InsecureSkipVerify: true, //nolint:gosec // G402: the peer is authenticated by its evidence in VerifyConnection, not by a CA
		VerifyConnection:   id.verifyPeer,
	}
}
