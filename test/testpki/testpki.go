// Package testpki issues throw-away certificates for tests and benchmarks of
// the injector: a CA and serving certificates for loopback addresses.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority held in memory.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is the CA certificate, for a client's root pool or a caBundle.
	PEM []byte
}

// NewCA creates a CA valid for a day.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Pool returns a certificate pool holding the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Leaf is an issued serving certificate.
type Leaf struct {
	CertPEM, KeyPEM []byte
	// Serial identifies the certificate, e.g. to tell which one a server
	// presented.
	Serial *big.Int
}

// Issue creates a serving certificate for 127.0.0.1, ::1 and localhost,
// with the given common name.
func (ca *CA) Issue(commonName string) (*Leaf, error) {
	return ca.IssueFor(commonName)
}

// IssueFor is Issue for the loopback names and also extraIPs, e.g. a
// Service's cluster IP that clients dial.
func (ca *CA) IssueFor(commonName string, extraIPs ...net.IP) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  append([]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, extraIPs...),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return &Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		Serial:  serial,
	}, nil
}

// WriteFiles writes the pair to certFile and keyFile the way kubelet and
// cert-manager do: each file is written beside its target and renamed into
// place, so a reader sees either the old or the new file.
func (l *Leaf) WriteFiles(certFile, keyFile string) error {
	if err := writeAtomic(keyFile, l.KeyPEM); err != nil {
		return err
	}
	return writeAtomic(certFile, l.CertPEM)
}

func writeAtomic(name string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name)+"-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", name, errors.Join(werr, cerr))
	}
	if err := os.Rename(tmp, name); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, fmt.Errorf("generating serial: %w", err)
	}
	return s, nil
}

// SecretDir is a folder updated the way kubelet updates a Secret volume:
// each version of the files goes into a new hidden folder, the ..data
// symlink is switched to it by a rename, and each visible name is a symlink
// through ..data. Readers see all files of one version change at once.
type SecretDir struct {
	Dir     string
	version int
}

// Publish makes files the folder's content.
func (s *SecretDir) Publish(files map[string][]byte) error {
	s.version++
	name := fmt.Sprintf("..%s_%d", time.Now().UTC().Format("2006_01_02_15_04_05.000000000"), s.version)
	vdir := filepath.Join(s.Dir, name)
	if err := os.Mkdir(vdir, 0o755); err != nil {
		return fmt.Errorf("publishing secret files: %w", err)
	}
	for f, data := range files {
		if err := os.WriteFile(filepath.Join(vdir, f), data, 0o600); err != nil {
			return fmt.Errorf("publishing secret files: %w", err)
		}
	}
	dataLink := filepath.Join(s.Dir, "..data")
	old, _ := os.Readlink(dataLink)
	tmp := filepath.Join(s.Dir, "..data_tmp")
	if err := os.Symlink(name, tmp); err != nil {
		return fmt.Errorf("publishing secret files: %w", err)
	}
	if err := os.Rename(tmp, dataLink); err != nil {
		return fmt.Errorf("publishing secret files: %w", err)
	}
	for f := range files {
		link := filepath.Join(s.Dir, f)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", f), link); err != nil {
			return fmt.Errorf("publishing secret files: %w", err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(s.Dir, old)); err != nil {
			return fmt.Errorf("removing the previous secret version: %w", err)
		}
	}
	return nil
}

// Publish writes the pair as tls.crt and tls.key into the secret folder.
func (l *Leaf) Publish(s *SecretDir) error {
	return s.Publish(map[string][]byte{"tls.crt": l.CertPEM, "tls.key": l.KeyPEM})
}

// ServingFiles creates a CA, issues a serving certificate for the
// injector and writes its pair to tls.crt and tls.key in a new temporary
// folder. It returns the CA (for the client's pool) and the two paths.
func ServingFiles(t testing.TB) (ca *CA, certFile, keyFile string) {
	t.Helper()
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("injector")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := leaf.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	return ca, certFile, keyFile
}
