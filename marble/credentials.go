package marble

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/marblemesh/marblemesh/marble/marbleenv"
)

// Environment variables that every activation returns.
const (
	// EnvRootCA holds the Marble root certificate (PEM): the trust anchor
	// inside the mesh.
	EnvRootCA = marbleenv.RootCA
	// EnvCertificateChain holds the marble's certificate followed by the
	// Coordinator's intermediate certificate (PEM).
	EnvCertificateChain = marbleenv.CertificateChain
	// EnvPrivateKey holds the marble's private key (PKCS#8 PEM).
	EnvPrivateKey = marbleenv.PrivateKey
	// EnvCoordinatorRootCA holds the Coordinator's root certificate (PEM).
	EnvCoordinatorRootCA = marbleenv.CoordinatorRootCA
)

// Credentials are a marble's mesh identity as issued by the Coordinator.
type Credentials struct {
	// Root is the Marble root certificate, which every marble certificate
	// of the current manifest chains to.
	Root *x509.Certificate
	// CoordinatorRoot is the Coordinator's root certificate, the anchor
	// for clients outside the mesh.
	CoordinatorRoot *x509.Certificate
	// Certificate is the marble's certificate chain with its private key.
	Certificate tls.Certificate
}

// LoadCredentials reads the MARBLE_PREDEFINED_* variables through getenv
// (os.Getenv after activation). All four must be set and valid, the key
// must match the marble certificate, and the certificate must chain to the
// Marble root.
func LoadCredentials(getenv func(string) string) (*Credentials, error) {
	root, err := envCertificate(getenv, EnvRootCA)
	if err != nil {
		return nil, err
	}
	coordRoot, err := envCertificate(getenv, EnvCoordinatorRootCA)
	if err != nil {
		return nil, err
	}
	chainPEM := getenv(EnvCertificateChain)
	if strings.TrimSpace(chainPEM) == "" {
		return nil, fmt.Errorf("%s is not set: is this process a marble activated by the Coordinator?", EnvCertificateChain)
	}
	keyPEM := getenv(EnvPrivateKey)
	if strings.TrimSpace(keyPEM) == "" {
		return nil, fmt.Errorf("%s is not set: is this process a marble activated by the Coordinator?", EnvPrivateKey)
	}
	cert, err := tls.X509KeyPair([]byte(chainPEM), []byte(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("loading the marble certificate (%s) and key (%s): %w", EnvCertificateChain, EnvPrivateKey, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parsing the marble certificate in %s: %w", EnvCertificateChain, err)
		}
		cert.Leaf = leaf
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:     roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("the marble certificate in %s does not chain to %s: %w", EnvCertificateChain, EnvRootCA, err)
	}
	return &Credentials{Root: root, CoordinatorRoot: coordRoot, Certificate: cert}, nil
}

// envCertificate parses the single certificate in the PEM held by the
// variable name.
func envCertificate(getenv func(string) string, name string) (*x509.Certificate, error) {
	data := getenv(name)
	if strings.TrimSpace(data) == "" {
		return nil, fmt.Errorf("%s is not set: is this process a marble activated by the Coordinator?", name)
	}
	block, _ := pem.Decode([]byte(data))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s does not hold a PEM certificate", name)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate in %s: %w", name, err)
	}
	return cert, nil
}

func (c *Credentials) rootPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(c.Root)
	return pool
}

// ServerTLSConfig returns a configuration for a server inside the mesh:
// it presents the marble certificate and requires a client certificate
// that chains to the Marble root.
func (c *Credentials) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{c.Certificate},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.rootPool(),
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientTLSConfig returns a configuration for a client inside the mesh:
// it accepts only servers whose certificate chains to the Marble root and
// names the dialled host, and presents the marble certificate.
func (c *Credentials) ClientTLSConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{c.Certificate},
		RootCAs:      c.rootPool(),
		MinVersion:   tls.VersionTLS12,
	}
}
