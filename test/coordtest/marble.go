package coordtest

import (
	"context"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/rpc"
)

// MarbleIdentity is what a simulated marble prepares before activating: a
// key, the self-signed certificate it presents and a CSR.
type MarbleIdentity struct {
	TLS  tls.Certificate
	CSR  []byte
	Cert *x509.Certificate
}

// NewMarbleIdentity creates an identity with a key on curve.
func NewMarbleIdentity(curve elliptic.Curve, dnsNames ...string) (*MarbleIdentity, error) {
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating marble key: %w", err)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "MarbleRun Marble"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating marble certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: tmpl.Subject, DNSNames: dnsNames, IPAddresses: ips,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("creating CSR: %w", err)
	}
	return &MarbleIdentity{TLS: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, CSR: csr, Cert: cert}, nil
}

// ClientTLS is the TLS configuration a marble activates with: it presents
// the identity's certificate and, like a marble, does not verify the
// Coordinator's certificate.
func (id *MarbleIdentity) ClientTLS() *tls.Config {
	return &tls.Config{
		Certificates:       []tls.Certificate{id.TLS},
		InsecureSkipVerify: true, // the marble's trust comes from the Coordinator's attestation, not this channel
		MinVersion:         tls.VersionTLS12,
	}
}

// Dial opens a mesh API connection with the identity's ClientTLS.
func Dial(addr string, id *MarbleIdentity) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(id.ClientTLS())))
}

// Activate sends an activation request with empty (simulation) evidence.
func Activate(ctx context.Context, conn *grpc.ClientConn, id *MarbleIdentity, marbleType, uuid string) (*rpc.Parameters, error) {
	return ActivateWithQuote(ctx, conn, id, marbleType, uuid, nil)
}

// ActivateWithQuote sends an activation request with the given evidence.
func ActivateWithQuote(ctx context.Context, conn *grpc.ClientConn, id *MarbleIdentity, marbleType, uuid string, quote []byte) (*rpc.Parameters, error) {
	resp, err := rpc.NewMarbleClient(conn).Activate(ctx, &rpc.ActivationReq{
		Quote: quote, CSR: id.CSR, MarbleType: marbleType, UUID: uuid,
	})
	if err != nil {
		return nil, err
	}
	return resp.GetParameters(), nil
}

// ReportData returns the report data a marble's evidence must bind.
func (id *MarbleIdentity) ReportData() [attestation.ReportDataSize]byte {
	return attestation.BindHash(id.Cert.Raw)
}
