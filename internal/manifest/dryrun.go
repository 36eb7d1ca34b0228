package manifest

import (
	"bytes"
	"crypto"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// dummyPair is a certificate and key used in place of real ones when
// templates are dry-run.
type dummyPair struct {
	cert Certificate
	priv PrivateKey
	pub  PublicKey
}

// dummyKeys creates at most one key pair per key type and curve, on first
// use.
type dummyKeys struct {
	pairs map[string]dummyPair
}

// pair returns the dummy pair for a certificate secret type and size. All
// RSA sizes share one 2048-bit key; invalid sizes fall back to a valid one.
func (d *dummyKeys) pair(typ string, size uint) (dummyPair, error) {
	id := typ
	if typ == SecretTypeCertECDSA {
		if _, err := curveForSize(size); err != nil {
			size = 256
		}
		id = fmt.Sprintf("%s/%d", typ, size)
	}
	if p, ok := d.pairs[id]; ok {
		return p, nil
	}
	keySize := size
	switch typ {
	case SecretTypeCertRSA:
		keySize = MinRSABits
	case SecretTypeCertED25519:
		keySize = 0
	}
	key, err := newKey(typ, keySize, crand.Reader)
	if err != nil {
		return dummyPair{}, err
	}
	p, err := selfSigned(key)
	if err != nil {
		return dummyPair{}, err
	}
	d.pairs[id] = p
	return p, nil
}

// selfSigned certifies key by itself with fixed dates.
func selfSigned(key crypto.Signer) (dummyPair, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "dry run"},
		NotBefore:    time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return dummyPair{}, fmt.Errorf("creating dummy certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return dummyPair{}, fmt.Errorf("parsing dummy certificate: %w", err)
	}
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return dummyPair{}, fmt.Errorf("encoding dummy private key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return dummyPair{}, fmt.Errorf("encoding dummy public key: %w", err)
	}
	return dummyPair{cert: Certificate(*cert), priv: priv, pub: pub}, nil
}

// dummyTemplateData builds template data with a value of the right type for
// every secret definition (user-defined ones included) and for the reserved
// secrets. Keys are shared between secrets of one type and curve.
func dummyTemplateData(defs map[string]Secret) (*TemplateData, error) {
	keys := &dummyKeys{pairs: make(map[string]dummyPair)}
	symmetric := bytes.Repeat([]byte{0x5a}, MaxSymmetricKeyBits/8)
	secrets := make(map[string]Secret, len(defs))
	for name, def := range defs {
		s := Secret{Type: def.Type, Size: def.Size, Shared: def.Shared, UserDefined: def.UserDefined, ValidFor: def.ValidFor}
		switch def.Type {
		case SecretTypeSymmetricKey:
			n := min(def.Size, MaxSymmetricKeyBits) / 8
			if n == 0 {
				n = 16
			}
			s.Private, s.Public = symmetric[:n:n], symmetric[:n:n]
		case SecretTypeCertRSA, SecretTypeCertECDSA, SecretTypeCertED25519:
			p, err := keys.pair(def.Type, def.Size)
			if err != nil {
				return nil, err
			}
			s.Cert, s.Private, s.Public = p.cert, p.priv, p.pub
		default:
			s.Private, s.Public = []byte("dry-run value"), []byte("dry-run value")
		}
		secrets[name] = s
	}
	p, err := keys.pair(SecretTypeCertECDSA, 384)
	if err != nil {
		return nil, err
	}
	reserved := Secret{Type: SecretTypeCertECDSA, Size: 384, Cert: p.cert, Private: p.priv, Public: p.pub}
	data := &TemplateData{
		Secrets: secrets,
		MarbleRun: ReservedSecrets{
			RootCA:                  Secret{Type: reserved.Type, Size: reserved.Size, Cert: reserved.Cert},
			MarbleCert:              reserved,
			CoordinatorRoot:         Secret{Type: reserved.Type, Size: reserved.Size, Cert: reserved.Cert},
			CoordinatorIntermediate: Secret{Type: reserved.Type, Size: reserved.Size, Cert: reserved.Cert},
		},
	}
	data.Previous.Secrets = secrets
	return data, nil
}
