package manifest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"runtime"
	"slices"
	"sync"
	"time"
)

// CA issues the certificates of cert-* secrets: the Coordinator's Marble
// root certificate and its key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

const (
	// DefaultValidForDays is the lifetime of a secret certificate whose
	// definition sets neither ValidFor nor Cert.NotAfter.
	DefaultValidForDays = 365
	// DefaultCommonName is the common name of a secret certificate whose
	// template names neither a common name nor a DNS name.
	DefaultCommonName = "MarbleRun Generated Certificate"
	// MaxSymmetricKeyBits is the largest symmetric-key size, the output
	// limit of HKDF-SHA256 (255 blocks of 32 bytes).
	MaxSymmetricKeyBits = 255 * sha256.Size * 8
	// MinRSABits is the smallest size of a cert-rsa key.
	MinRSABits = 2048
	// MaxRSABits is the largest size of a cert-rsa key.
	MaxRSABits = 8192
)

// GenerateSecret creates the value of the secret name from its definition:
// Size/8 random bytes for a symmetric key; for a certificate type a new key
// of the type and size and a certificate signed by ca from the def.Cert
// template. Template defaults: DNS name "localhost", IP addresses 127.0.0.1
// and ::1, key usage digitalSignature|certSign, extended key usage server and
// client auth; the common name is the template's, else its first DNS name,
// else DefaultCommonName; NotAfter is the template's, else now plus ValidFor
// days (DefaultValidForDays when 0); the serial number is random.
// User-defined and plain secrets are never generated. A nil rand means
// crypto/rand.
func GenerateSecret(name string, def Secret, ca CA, rand io.Reader, now time.Time) (Secret, error) {
	if rand == nil {
		rand = crand.Reader
	}
	if def.UserDefined {
		return Secret{}, fmt.Errorf("secret %q: user-defined secrets are not generated", name)
	}
	switch def.Type {
	case SecretTypeSymmetricKey:
		if err := checkSymmetricSize(def.Size); err != nil {
			return Secret{}, fmt.Errorf("secret %q: %w", name, err)
		}
		key := make([]byte, def.Size/8)
		if _, err := io.ReadFull(rand, key); err != nil {
			return Secret{}, fmt.Errorf("secret %q: reading random bytes: %w", name, err)
		}
		return keySecret(def, key), nil
	case SecretTypeCertRSA, SecretTypeCertECDSA, SecretTypeCertED25519:
		key, err := newKey(def.Type, def.Size, rand)
		if err != nil {
			return Secret{}, fmt.Errorf("secret %q: %w", name, err)
		}
		s, err := issueCertificate(def, key, ca, rand, now)
		if err != nil {
			return Secret{}, fmt.Errorf("secret %q: %w", name, err)
		}
		return s, nil
	case SecretTypePlain:
		return Secret{}, fmt.Errorf("secret %q: plain secrets must be user-defined", name)
	}
	return Secret{}, fmt.Errorf("secret %q: unknown type %q", name, def.Type)
}

// GenerateShared generates every shared secret of defs that is not
// user-defined, in parallel (at most GOMAXPROCS at once), using
// crypto/rand. All failures are reported together.
func GenerateShared(defs map[string]Secret, ca CA, now time.Time) (map[string]Secret, error) {
	var names []string
	for _, name := range sortedKeys(defs) {
		if def := defs[name]; def.Shared && !def.UserDefined {
			names = append(names, name)
		}
	}
	out := make(map[string]Secret, len(names))
	err := generateParallel(names, out, func(name string) (Secret, error) {
		return GenerateSecret(name, defs[name], ca, crand.Reader, now)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeriveForMarble returns the per-marble secrets (neither shared nor
// user-defined) among names, or among all of defs when names is nil.
// Symmetric keys are derived with HKDF-SHA256 from rootSecret, with salt
// marbleUUID ‖ name and info marbleType (empty when disableBinding), so
// they are stable for a marble UUID. Certificate secrets get a new key and
// certificate from ca on every call.
func DeriveForMarble(defs map[string]Secret, names []string, rootSecret []byte, marbleUUID [16]byte, marbleType string, disableBinding bool, ca CA, now time.Time) (map[string]Secret, error) {
	if len(rootSecret) == 0 {
		return nil, errors.New("deriving marble secrets: root secret is empty")
	}
	if names == nil {
		names = sortedKeys(defs)
	} else {
		names = slices.Clone(names)
		slices.Sort(names)
		names = slices.Compact(names)
	}
	info := marbleType
	if disableBinding {
		info = ""
	}
	out := make(map[string]Secret)
	var errs []error
	var certNames []string
	for _, name := range names {
		def, ok := defs[name]
		if !ok {
			errs = append(errs, fmt.Errorf("secret %q is not defined", name))
			continue
		}
		if def.Shared || def.UserDefined {
			continue
		}
		if def.Type != SecretTypeSymmetricKey {
			certNames = append(certNames, name)
			continue
		}
		key, err := deriveKey(rootSecret, marbleUUID, name, info, def.Size)
		if err != nil {
			errs = append(errs, fmt.Errorf("secret %q: %w", name, err))
			continue
		}
		out[name] = keySecret(def, key)
	}
	if err := generateParallel(certNames, out, func(name string) (Secret, error) {
		return GenerateSecret(name, defs[name], ca, crand.Reader, now)
	}); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("deriving marble secrets: %w", err)
	}
	return out, nil
}

// deriveKey derives a symmetric key of size bits for one marble.
func deriveKey(rootSecret []byte, marbleUUID [16]byte, name, info string, size uint) ([]byte, error) {
	if err := checkSymmetricSize(size); err != nil {
		return nil, err
	}
	salt := make([]byte, 0, len(marbleUUID)+len(name))
	salt = append(salt, marbleUUID[:]...)
	salt = append(salt, name...)
	key, err := hkdf.Key(sha256.New, rootSecret, salt, info, int(size/8))
	if err != nil {
		return nil, fmt.Errorf("HKDF: %w", err)
	}
	return key, nil
}

// generateParallel runs gen for every name with at most GOMAXPROCS workers
// and stores the results in out. Errors are joined in the order of names.
func generateParallel(names []string, out map[string]Secret, gen func(string) (Secret, error)) error {
	results := make([]Secret, len(names))
	errs := make([]error, len(names))
	workers := min(runtime.GOMAXPROCS(0), len(names))
	if workers <= 1 {
		for i, name := range names {
			results[i], errs[i] = gen(name)
		}
	} else {
		next := make(chan int)
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for i := range next {
					results[i], errs[i] = gen(names[i])
				}
			})
		}
		for i := range names {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	for i, name := range names {
		if errs[i] == nil {
			out[name] = results[i]
		}
	}
	return errors.Join(errs...)
}

// keySecret returns a symmetric-key or plain secret holding key.
func keySecret(def Secret, key []byte) Secret {
	return Secret{
		Type:        def.Type,
		Size:        def.Size,
		Shared:      def.Shared,
		UserDefined: def.UserDefined,
		ValidFor:    def.ValidFor,
		Private:     key,
		Public:      key,
	}
}

// checkSymmetricSize validates a symmetric-key size in bits.
func checkSymmetricSize(size uint) error {
	if size == 0 || size%8 != 0 {
		return fmt.Errorf("symmetric-key Size must be a positive multiple of 8 bits, got %d", size)
	}
	if size > MaxSymmetricKeyBits {
		return fmt.Errorf("symmetric-key Size must be at most %d bits, got %d", MaxSymmetricKeyBits, size)
	}
	return nil
}

// curveForSize maps a cert-ecdsa Size to its NIST curve.
func curveForSize(size uint) (elliptic.Curve, error) {
	switch size {
	case 224:
		return elliptic.P224(), nil
	case 256:
		return elliptic.P256(), nil
	case 384:
		return elliptic.P384(), nil
	case 521:
		return elliptic.P521(), nil
	}
	return nil, fmt.Errorf("cert-ecdsa Size must be 224, 256, 384 or 521, got %d", size)
}

// checkRSASize validates a cert-rsa size in bits.
func checkRSASize(size uint) error {
	if size < MinRSABits || size > MaxRSABits {
		return fmt.Errorf("cert-rsa Size must be between %d and %d bits, got %d", MinRSABits, MaxRSABits, size)
	}
	return nil
}

// newKey generates a private key for a certificate secret type.
func newKey(typ string, size uint, rand io.Reader) (crypto.Signer, error) {
	switch typ {
	case SecretTypeCertRSA:
		if err := checkRSASize(size); err != nil {
			return nil, err
		}
		key, err := rsa.GenerateKey(rand, int(size))
		if err != nil {
			return nil, fmt.Errorf("generating RSA key: %w", err)
		}
		return key, nil
	case SecretTypeCertECDSA:
		curve, err := curveForSize(size)
		if err != nil {
			return nil, err
		}
		key, err := ecdsa.GenerateKey(curve, rand)
		if err != nil {
			return nil, fmt.Errorf("generating ECDSA key: %w", err)
		}
		return key, nil
	case SecretTypeCertED25519:
		if size != 0 {
			return nil, fmt.Errorf("cert-ed25519 Size must be 0, got %d", size)
		}
		_, key, err := ed25519.GenerateKey(rand)
		if err != nil {
			return nil, fmt.Errorf("generating Ed25519 key: %w", err)
		}
		return key, nil
	}
	return nil, fmt.Errorf("type %q has no key pair", typ)
}

// certificateTemplate applies the secret certificate defaults to def.Cert.
func certificateTemplate(def Secret, rand io.Reader, now time.Time) (*x509.Certificate, error) {
	tmpl := x509.Certificate(def.Cert)
	if !tmpl.NotAfter.IsZero() && def.ValidFor != 0 {
		return nil, errors.New("Cert.NotAfter and ValidFor must not both be set")
	}
	tmpl.Raw, tmpl.RawTBSCertificate, tmpl.RawSubjectPublicKeyInfo = nil, nil, nil
	tmpl.RawSubject, tmpl.RawIssuer, tmpl.Signature, tmpl.PublicKey = nil, nil, nil, nil
	if tmpl.Subject.CommonName == "" {
		if len(tmpl.DNSNames) > 0 {
			tmpl.Subject.CommonName = tmpl.DNSNames[0]
		} else {
			tmpl.Subject.CommonName = DefaultCommonName
		}
	}
	if len(tmpl.DNSNames) == 0 {
		tmpl.DNSNames = []string{"localhost"}
	}
	if len(tmpl.IPAddresses) == 0 {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign
	}
	if len(tmpl.ExtKeyUsage) == 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now
	}
	if tmpl.NotAfter.IsZero() {
		days := def.ValidFor
		if days == 0 {
			days = DefaultValidForDays
		}
		if days > math.MaxInt32 {
			return nil, fmt.Errorf("ValidFor of %d days is too large", days)
		}
		tmpl.NotAfter = now.AddDate(0, 0, int(days))
	}
	serial, err := crand.Int(rand, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1))
	return &tmpl, nil
}

// issueCertificate certifies key with ca and returns the complete secret.
func issueCertificate(def Secret, key crypto.Signer, ca CA, rand io.Reader, now time.Time) (Secret, error) {
	if ca.Cert == nil || ca.Key == nil {
		return Secret{}, errors.New("no CA certificate and key to issue the certificate")
	}
	tmpl, err := certificateTemplate(def, rand, now)
	if err != nil {
		return Secret{}, err
	}
	der, err := x509.CreateCertificate(rand, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return Secret{}, fmt.Errorf("creating certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Secret{}, fmt.Errorf("parsing the new certificate: %w", err)
	}
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Secret{}, fmt.Errorf("encoding private key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return Secret{}, fmt.Errorf("encoding public key: %w", err)
	}
	return Secret{
		Type:        def.Type,
		Size:        def.Size,
		Shared:      def.Shared,
		UserDefined: def.UserDefined,
		ValidFor:    def.ValidFor,
		Cert:        Certificate(*cert),
		Private:     priv,
		Public:      pub,
	}, nil
}
