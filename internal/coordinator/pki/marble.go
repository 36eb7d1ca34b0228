package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The constant parts of a marble certificate, DER-encoded once. They are
// what crypto/x509 emits for the fields of the marble certificate template
// (marble_test.go checks that the encodings agree).
var (
	derOIDCommonName     = oidDER(asn1.ObjectIdentifier{2, 5, 4, 3})
	derOIDAuthorityKeyID = oidDER(asn1.ObjectIdentifier{2, 5, 29, 35})
	derOIDSubjectAltName = oidDER(asn1.ObjectIdentifier{2, 5, 29, 17})
	derOIDMarbleType     = oidDER(OIDMarbleType)

	// AlgorithmIdentifier ecdsa-with-SHA256, without parameters (RFC 5758).
	derECDSAWithSHA256 = mustDER(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2})
		})
	})
	// AlgorithmIdentifier of an ECDSA P-256 public key (RFC 5480).
	derP256PublicKeyAlgorithm = mustDER(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1})
			b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7})
		})
	})
	// keyUsage = digitalSignature | keyAgreement, critical as crypto/x509
	// marks it: a BIT STRING with 3 unused bits, 0b1000_1000.
	derExtKeyUsage = mustDER(func(b *cryptobyte.Builder) {
		addExtension(b, oidDER(asn1.ObjectIdentifier{2, 5, 29, 15}), true, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) { b.AddBytes([]byte{3, 0x88}) })
		})
	})
	// extKeyUsage = serverAuth, clientAuth.
	derExtExtKeyUsage = mustDER(func(b *cryptobyte.Builder) {
		addExtension(b, oidDER(asn1.ObjectIdentifier{2, 5, 29, 37}), false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1})
				b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2})
			})
		})
	})
)

// ASN.1 tags of the fields crypto/x509 writes with context-specific tags.
var (
	tagVersion    = cbasn1.Tag(0).ContextSpecific().Constructed() // [0] EXPLICIT Version
	tagExtensions = cbasn1.Tag(3).ContextSpecific().Constructed() // [3] EXPLICIT Extensions
	tagKeyID      = cbasn1.Tag(0).ContextSpecific()               // [0] IMPLICIT KeyIdentifier
	tagDNSName    = cbasn1.Tag(2).ContextSpecific()               // GeneralName dNSName
	tagIPAddress  = cbasn1.Tag(7).ContextSpecific()               // GeneralName iPAddress
)

// marbleCertDER encodes and signs a marble certificate: byte for byte what
// x509.CreateCertificate produces for
//
//	&x509.Certificate{
//		SerialNumber:    serial,
//		Subject:         pkix.Name{CommonName: req.UUID},
//		NotBefore:       now.Add(-time.Minute),
//		NotAfter:        noExpiry,
//		KeyUsage:        x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
//		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
//		DNSNames:        req.DNSNames,
//		IPAddresses:     withLoopback(req.IPAddresses),
//		ExtraExtensions: []pkix.Extension{{Id: OIDMarbleType, Value: []byte(req.MarbleType)}},
//	}
//
// with parent marbleRoot, except that the signature is not verified again
// after signing. signer must hold an ECDSA P-256 key matching marbleRoot's.
func marbleCertDER(marbleRoot *x509.Certificate, signer crypto.Signer, req MarbleCertRequest, now time.Time, serial *big.Int) ([]byte, error) {
	signerPub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || signerPub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("marble certificates are signed with ECDSA P-256 keys, not %T", signer.Public())
	}
	if marbleRoot.PublicKey != nil && !signerPub.Equal(marbleRoot.PublicKey) {
		return nil, errors.New("the signing key does not match the marble root's public key")
	}
	if serial.Sign() < 0 {
		return nil, errors.New("serial number must be positive")
	}
	spki, err := subjectPublicKeyInfo(req.PublicKey)
	if err != nil {
		return nil, err
	}
	for _, name := range req.DNSNames {
		for i := 0; i < len(name); i++ {
			if name[i] >= utf8.RuneSelf {
				return nil, fmt.Errorf("DNS name %q cannot be encoded as an IA5String", name)
			}
		}
	}
	cnTag, err := commonNameTag(req.UUID)
	if err != nil {
		return nil, err
	}
	ips := withLoopback(req.IPAddresses)
	issuer := marbleRoot.RawSubject
	if len(issuer) == 0 {
		return nil, errors.New("marble root has no raw subject")
	}

	b := cryptobyte.NewBuilder(make([]byte, 0, 512+len(spki)+len(req.MarbleType)+len(req.UUID)+len(req.DNSNames)*32+len(ips)*18))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // TBSCertificate
		b.AddASN1(tagVersion, func(b *cryptobyte.Builder) { b.AddASN1Int64(2) })
		b.AddASN1BigInt(serial)
		b.AddBytes(derECDSAWithSHA256)
		b.AddBytes(issuer)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // Validity
			addTime(b, now.Add(-time.Minute))
			addTime(b, noExpiry)
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // Subject
			if req.UUID == "" {
				return
			}
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddBytes(derOIDCommonName)
					b.AddASN1(cnTag, func(b *cryptobyte.Builder) { b.AddBytes([]byte(req.UUID)) })
				})
			})
		})
		b.AddBytes(spki)
		b.AddASN1(tagExtensions, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddBytes(derExtKeyUsage)
				b.AddBytes(derExtExtKeyUsage)
				if len(marbleRoot.SubjectKeyId) > 0 {
					addExtension(b, derOIDAuthorityKeyID, false, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(tagKeyID, func(b *cryptobyte.Builder) { b.AddBytes(marbleRoot.SubjectKeyId) })
						})
					})
				}
				// ips always holds the loopback addresses, so the extension
				// is always present. RFC 5280 4.2.1.6 wants it critical if
				// the subject is empty.
				addExtension(b, derOIDSubjectAltName, req.UUID == "", func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						for _, name := range req.DNSNames {
							b.AddASN1(tagDNSName, func(b *cryptobyte.Builder) { b.AddBytes([]byte(name)) })
						}
						for _, ip := range ips {
							if ip4 := ip.To4(); ip4 != nil {
								ip = ip4
							}
							b.AddASN1(tagIPAddress, func(b *cryptobyte.Builder) { b.AddBytes(ip) })
						}
					})
				})
				addExtension(b, derOIDMarbleType, false, func(b *cryptobyte.Builder) {
					b.AddBytes([]byte(req.MarbleType))
				})
			})
		})
	})
	tbs, err := b.Bytes()
	if err != nil {
		return nil, err
	}

	digest := sha256.Sum256(tbs)
	var sig []byte
	if key, ok := signer.(*ecdsa.PrivateKey); ok {
		sig, err = ecdsa.SignASN1(rand.Reader, key, digest[:])
	} else {
		sig, err = signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	}
	if err != nil {
		return nil, err
	}

	c := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(derECDSAWithSHA256)+len(sig)+16))
	c.AddASN1(cbasn1.SEQUENCE, func(c *cryptobyte.Builder) {
		c.AddBytes(tbs)
		c.AddBytes(derECDSAWithSHA256)
		c.AddASN1BitString(sig)
	})
	return c.Bytes()
}

// subjectPublicKeyInfo is x509.MarshalPKIXPublicKey, without reflection for
// the P-256 keys the Coordinator issues.
func subjectPublicKeyInfo(pub crypto.PublicKey) ([]byte, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return x509.MarshalPKIXPublicKey(pub)
	}
	point, err := k.Bytes()
	if err != nil {
		return nil, err
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 4+len(derP256PublicKeyAlgorithm)+3+len(point)))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(derP256PublicKeyAlgorithm)
		b.AddASN1BitString(point)
	})
	return b.Bytes()
}

// commonNameTag returns the string type encoding/asn1 picks for a common
// name: PrintableString if every character allows it, else UTF8String.
func commonNameTag(cn string) (cbasn1.Tag, error) {
	for i := 0; i < len(cn); i++ {
		if !isPrintable(cn[i]) {
			if !utf8.ValidString(cn) {
				return 0, errors.New("common name is not valid UTF-8")
			}
			return cbasn1.UTF8String, nil
		}
	}
	return cbasn1.PrintableString, nil
}

// isPrintable reports whether c may appear in an ASN.1 PrintableString
// (without the '*' and '&' encoding/asn1 tolerates when parsing).
func isPrintable(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		'\'' <= c && c <= ')' || '+' <= c && c <= '/' ||
		c == ' ' || c == ':' || c == '=' || c == '?'
}

// addTime writes t as RFC 5280 4.1.2.5 requires: UTCTime for the years 1950
// through 2049, GeneralizedTime otherwise; whole seconds, in UTC.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
	} else {
		b.AddASN1GeneralizedTime(t)
	}
}

// addExtension writes an Extension with the DER-encoded OID oid; value
// writes the contents of its extnValue OCTET STRING.
func addExtension(b *cryptobyte.Builder, oid []byte, critical bool, value cryptobyte.BuilderContinuation) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

func oidDER(oid asn1.ObjectIdentifier) []byte {
	return mustDER(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oid) })
}

func mustDER(f cryptobyte.BuilderContinuation) []byte {
	b := cryptobyte.NewBuilder(nil)
	f(b)
	return b.BytesOrPanic()
}
