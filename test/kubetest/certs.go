package kubetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/marblemesh/marblemesh/test/testpki"
)

// defaultServiceCIDR is the kube-apiserver's Service range when the test
// sets none (envtest's default).
const defaultServiceCIDR = "10.0.0.0/24"

// kubernetesServiceIP is the cluster IP the API server gives the
// `kubernetes` Service of namespace default: the first address of the
// Service range.
func kubernetesServiceIP(serviceCIDR string) (net.IP, error) {
	p, err := netip.ParsePrefix(serviceCIDR)
	if err != nil {
		return nil, fmt.Errorf("the Service range %q: %w", serviceCIDR, err)
	}
	first := p.Masked().Addr().Next()
	if !first.IsValid() || !p.Contains(first) {
		return nil, fmt.Errorf("the Service range %q has no first address", serviceCIDR)
	}
	return net.IP(first.AsSlice()), nil
}

// writeAPIServerCerts writes into certDir what envtest would otherwise
// generate there: the API server's serving pair (apiserver.crt/.key) and
// the service-account signing pair (sa-signer.key/.crt). Unlike envtest's,
// the serving certificate also names the `kubernetes` Service's cluster IP,
// so that a Pod's in-cluster client verifies it as in a real cluster. It
// returns the serving CA's PEM.
func writeAPIServerCerts(certDir, serviceCIDR string) ([]byte, error) {
	svcIP, err := kubernetesServiceIP(serviceCIDR)
	if err != nil {
		return nil, err
	}
	ca, err := testpki.NewCA("kubetest-apiserver-ca")
	if err != nil {
		return nil, err
	}
	leaf, err := ca.IssueFor("kube-apiserver", svcIP)
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the service-account signing key: %w", err)
	}
	saPriv, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return nil, fmt.Errorf("encoding the service-account signing key: %w", err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encoding the service-account public key: %w", err)
	}
	// The names are envtest's: it passes them to kube-apiserver and skips
	// its own generation when apiserver.crt exists.
	files := map[string][]byte{
		"apiserver.crt": leaf.CertPEM,
		"apiserver.key": leaf.KeyPEM,
		"sa-signer.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saPriv}),
		"sa-signer.crt": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(certDir, name), data, 0o600); err != nil {
			return nil, fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return ca.PEM, nil
}
