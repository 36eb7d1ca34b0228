package marble

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"time"
)

// selfSignedCommonName is the subject of the certificate a marble presents
// while it activates.
const selfSignedCommonName = "marblemesh marble"

// identity is the key pair a marble activates with: a self-signed
// certificate presented on the TLS connection to the Coordinator, and a
// CSR with the same key and names.
type identity struct {
	key     *ecdsa.PrivateKey
	certDER []byte
	csrDER  []byte
}

// newIdentity creates a key on curve, a self-signed certificate and a CSR,
// both naming dnsNames and ips.
func newIdentity(curve elliptic.Curve, commonName string, dnsNames []string, ips []net.IP) (*identity, error) {
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the marble key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: selfSignedCommonName},
		NotBefore:    now.Add(-time.Hour),
		// The certificate lives only for one activation; the far end
		// keeps clock skew from ever making it invalid.
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating the self-signed certificate: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: commonName},
		DNSNames:    dnsNames,
		IPAddresses: ips,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("creating the certificate request: %w", err)
	}
	return &identity{key: key, certDER: certDER, csrDER: csrDER}, nil
}

// tlsCertificate is the self-signed certificate with its key, as presented
// on the activation connection.
func (id *identity) tlsCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{id.certDER}, PrivateKey: id.key}
}
