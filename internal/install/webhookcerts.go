package install

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Names of the Secrets an installation without cert-manager creates.
const (
	WebhookCASecret    = "marble-injector-webhook-ca"
	WebhookCertsSecret = "marble-injector-webhook-certs"
)

const (
	// caValidity is the lifetime of the installation's webhook CA.
	caValidity = 10 * 365 * 24 * time.Hour
	// leafValidity is the lifetime of the webhook's serving certificate.
	leafValidity = 5 * 365 * 24 * time.Hour
	// managedByLabel marks the Secrets the CLI creates.
	managedByLabel = "app.kubernetes.io/managed-by"
	managedByValue = "marblerun-cli"
)

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// webhookDNSNames are the names of the marble-injector Service in ns.
func webhookDNSNames(ns string) []string {
	return []string{
		"marble-injector." + ns + ".svc",
		"marble-injector." + ns + ".svc.cluster.local",
	}
}

// keyPair is a certificate with its key, in PEM.
type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func (k keyPair) certPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.cert.Raw})
}

func (k keyPair) keyPEM() ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// newCA makes a self-signed CA for the webhook of namespace ns.
func newCA(ns string, now time.Time) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	sn, err := serial()
	if err != nil {
		return keyPair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "marble-injector CA " + ns, Organization: []string{"MarbleRun"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return keyPair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{cert: cert, key: key}, nil
}

// issueServing signs a serving certificate for the webhook of ns with ca.
func issueServing(ca keyPair, ns string, now time.Time) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	sn, err := serial()
	if err != nil {
		return keyPair{}, err
	}
	names := webhookDNSNames(ns)
	notAfter := now.Add(leafValidity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"MarbleRun"}},
		DNSNames:     names,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return keyPair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{cert: cert, key: key}, nil
}

// parseKeyPair reads a PEM certificate and EC private key.
func parseKeyPair(certPEM, keyPEM []byte) (keyPair, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return keyPair{}, errors.New("no PEM certificate and key")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return keyPair{}, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return keyPair{}, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return keyPair{}, errors.New("the key does not belong to the certificate")
	}
	return keyPair{cert: cert, key: key}, nil
}

// tlsSecret is a Secret of type kubernetes.io/tls labelled as the CLI's.
func tlsSecret(ns, name string, kp keyPair) (*corev1.Secret, error) {
	keyPEM, err := kp.keyPEM()
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: ns,
			Labels: map[string]string{
				managedByLabel:              managedByValue,
				"app.kubernetes.io/part-of": "marblerun",
			},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       kp.certPEM(),
			corev1.TLSPrivateKeyKey: keyPEM,
		},
	}, nil
}

// ensureWebhookCerts makes sure the webhook CA Secret exists in ns
// (keeping a valid one that is there) and writes a fresh serving
// certificate to the webhook Secret. It returns the CA certificate's PEM.
func ensureWebhookCerts(ctx context.Context, cs kubernetes.Interface, ns string, now time.Time) ([]byte, error) {
	secrets := cs.CoreV1().Secrets(ns)
	var ca keyPair
	existing, err := secrets.Get(ctx, WebhookCASecret, metav1.GetOptions{})
	switch {
	case err == nil:
		ca, err = parseKeyPair(existing.Data[corev1.TLSCertKey], existing.Data[corev1.TLSPrivateKeyKey])
		if err != nil || !ca.cert.IsCA || now.After(ca.cert.NotAfter.Add(-24*time.Hour)) {
			return nil, withNext(fmt.Errorf("the Secret %s/%s does not hold a usable CA", ns, WebhookCASecret),
				fmt.Sprintf("Delete it (kubectl -n %s delete secret %s) and run the installation again; a new CA will be made.", ns, WebhookCASecret))
		}
	case apierrors.IsNotFound(err):
		if ca, err = newCA(ns, now); err != nil {
			return nil, fmt.Errorf("making the webhook CA: %w", err)
		}
		s, err := tlsSecret(ns, WebhookCASecret, ca)
		if err != nil {
			return nil, fmt.Errorf("encoding the webhook CA: %w", err)
		}
		if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("storing the webhook CA in Secret %s/%s: %w", ns, WebhookCASecret, err)
		}
	default:
		return nil, fmt.Errorf("reading Secret %s/%s: %w", ns, WebhookCASecret, err)
	}

	leaf, err := issueServing(ca, ns, now)
	if err != nil {
		return nil, fmt.Errorf("issuing the webhook's certificate: %w", err)
	}
	s, err := tlsSecret(ns, WebhookCertsSecret, leaf)
	if err != nil {
		return nil, fmt.Errorf("encoding the webhook's certificate: %w", err)
	}
	_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("storing the webhook's certificate in Secret %s/%s: %w", ns, WebhookCertsSecret, err)
	}
	return ca.certPEM(), nil
}

// deleteWebhookSecrets deletes both webhook Secrets of ns; missing ones
// are fine.
func deleteWebhookSecrets(ctx context.Context, cs kubernetes.Interface, ns string) error {
	var errs []error
	for _, name := range []string{WebhookCertsSecret, WebhookCASecret} {
		err := cs.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting Secret %s/%s: %w", ns, name, err))
		}
	}
	return errors.Join(errs...)
}
