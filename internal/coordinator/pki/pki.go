// Package pki creates the Coordinator's certificate authorities and the
// certificates it issues to marbles.
//
// The chain has three CA certificates:
//
//   - the root CA, self-signed, the client API's TLS certificate and the
//     identity of the deployment; it never changes;
//   - the intermediate CA, signed by the root; it is replaced on every
//     manifest update;
//   - the marble root, a self-signed certificate over the intermediate's key
//     and subject, which marbles use as their trust anchor inside the mesh.
//
// Marble certificates are signed with the intermediate key and chain to
// either of the last two. Every key is ECDSA P-256: signatures on the
// activation path are then an order of magnitude cheaper than with P-384,
// and clients verify either curve.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Names of the Coordinator's certificates, as clients expect them.
const (
	RootCommonName         = "MarbleRun Coordinator"
	IntermediateCommonName = "MarbleRun Coordinator - Intermediate CA"
)

// OIDMarbleType is the certificate extension that carries a marble's type.
var OIDMarbleType = asn1.ObjectIdentifier{1, 3, 9903, 2, 1}

// noExpiry is the RFC 5280 value for certificates without a defined end.
var noExpiry = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// CA is a certificate with its signing key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Signer returns the CA's key as a crypto.Signer.
func (c CA) Signer() crypto.Signer { return c.Key }

// NewRoot creates the self-signed root CA for the given DNS names and IP
// addresses (loopback is always included).
func NewRoot(dnsNames []string, ips []net.IP, now time.Time) (CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CA{}, fmt.Errorf("generating root key: %w", err)
	}
	tmpl, err := caTemplate(RootCommonName, dnsNames, ips, now)
	if err != nil {
		return CA{}, err
	}
	cert, err := sign(tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return CA{}, fmt.Errorf("creating root certificate: %w", err)
	}
	return CA{Cert: cert, Key: key}, nil
}

// NewIntermediate creates a new intermediate CA signed by root, and the
// marble root: a self-signed certificate with the intermediate's key.
func NewIntermediate(root CA, dnsNames []string, ips []net.IP, now time.Time) (intermediate CA, marbleRoot *x509.Certificate, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CA{}, nil, fmt.Errorf("generating intermediate key: %w", err)
	}
	tmpl, err := caTemplate(IntermediateCommonName, dnsNames, ips, now)
	if err != nil {
		return CA{}, nil, err
	}
	cert, err := sign(tmpl, root.Cert, &key.PublicKey, root.Key)
	if err != nil {
		return CA{}, nil, fmt.Errorf("creating intermediate certificate: %w", err)
	}
	selfTmpl, err := caTemplate(IntermediateCommonName, dnsNames, ips, now)
	if err != nil {
		return CA{}, nil, err
	}
	marbleRoot, err = sign(selfTmpl, selfTmpl, &key.PublicKey, key)
	if err != nil {
		return CA{}, nil, fmt.Errorf("creating marble root certificate: %w", err)
	}
	return CA{Cert: cert, Key: key}, marbleRoot, nil
}

// MarbleCertRequest describes a marble certificate.
type MarbleCertRequest struct {
	UUID        string
	MarbleType  string
	DNSNames    []string
	IPAddresses []net.IP
	PublicKey   crypto.PublicKey
}

// IssueMarbleCert signs a marble certificate with the intermediate key,
// issued by the marble root. Loopback addresses are always included.
//
// intermediateKey must be an ECDSA P-256 key (see the package comment).
// The certificate is encoded directly rather than with
// x509.CreateCertificate, which verifies every signature it makes and so
// roughly triples the cost of this step of an activation. The result is
// what x509.CreateCertificate returns for the equivalent template
// (marble_test.go checks it byte for byte), parsed with
// x509.ParseCertificate.
func IssueMarbleCert(marbleRoot *x509.Certificate, intermediateKey crypto.Signer, req MarbleCertRequest, now time.Time) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	der, err := marbleCertDER(marbleRoot, intermediateKey, req, now, serial)
	if err != nil {
		return nil, fmt.Errorf("signing marble certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("signing marble certificate: %w", err)
	}
	return cert, nil
}

// MarbleType returns the marble type recorded in a marble certificate.
func MarbleType(cert *x509.Certificate) (string, error) {
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(OIDMarbleType) {
			return string(ext.Value), nil
		}
	}
	return "", errors.New("certificate has no marble type extension")
}

func caTemplate(cn string, dnsNames []string, ips []net.IP, now time.Time) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              noExpiry,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              dnsNames,
		IPAddresses:           withLoopback(ips),
	}, nil
}

func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return serial, nil
}

func withLoopback(ips []net.IP) []net.IP {
	out := make([]net.IP, 0, len(ips)+2)
	out = append(out, ips...)
	for _, lo := range []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback} {
		found := false
		for _, ip := range ips {
			if ip.Equal(lo) {
				found = true
				break
			}
		}
		if !found {
			out = append(out, lo)
		}
	}
	return out
}

// SplitHosts separates a list of host names into DNS names and IP
// addresses; empty entries are dropped.
func SplitHosts(hosts []string) (dnsNames []string, ips []net.IP) {
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		dnsNames = append(dnsNames, h)
	}
	return dnsNames, ips
}
