package manifest

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Secret is both a secret's definition in the manifest (Type, Size, Shared,
// UserDefined, the Cert template and ValidFor) and, once generated or
// uploaded, its value (Cert, Private, Public). Its JSON form uses the Go
// field names; Cert is base64 DER and the keys are base64.
//
// For certificate types Private is the PKCS#8 DER private key and Public the
// PKIX DER public key; for symmetric-key and plain secrets both hold the key.
type Secret struct {
	Type        string
	Size        uint
	Shared      bool
	UserDefined bool
	Cert        Certificate
	ValidFor    uint
	Private     PrivateKey
	Public      PublicKey
}

// String renders the secret for bare use in templates ({{.Secrets.name}}):
// a certificate secret yields its certificate as PEM, a symmetric key its
// base64 encoding and a plain secret its value unchanged. Logging through
// log/slog uses LogValue, which omits key material.
func (s Secret) String() string {
	switch s.Type {
	case SecretTypeSymmetricKey:
		return base64.StdEncoding.EncodeToString(s.Private)
	case SecretTypePlain:
		return string(s.Private)
	}
	if IsCertificateType(s.Type) {
		return s.Cert.String()
	}
	return ""
}

// LogValue describes the secret for log/slog without its key material.
func (s Secret) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("type", s.Type),
		slog.Uint64("size", uint64(s.Size)),
		slog.Bool("shared", s.Shared),
		slog.Bool("userDefined", s.UserDefined),
	)
}

// value returns what a bare secret stands for in template functions: the key
// of symmetric-key and plain secrets, the public key of certificate secrets.
func (s Secret) value() []byte {
	if IsCertificateType(s.Type) {
		return s.Public
	}
	return s.Private
}

// PrivateKey is PKCS#8 DER for certificate secrets and the raw key for
// symmetric-key and plain secrets. JSON: base64.
type PrivateKey []byte

// LogValue keeps the key out of log/slog output.
func (PrivateKey) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// PublicKey is PKIX DER for certificate secrets and the raw key for
// symmetric-key and plain secrets. JSON: base64.
type PublicKey []byte

// Certificate is an X.509 certificate, or a template for one in a secret
// definition. In JSON it is the base64 DER of the certificate; a JSON object
// of x509.Certificate fields (Subject, DNSNames, IPAddresses, NotAfter,
// KeyUsage, ExtKeyUsage, ...) is also accepted and becomes a template.
type Certificate x509.Certificate

// X509 returns c as an *x509.Certificate sharing its memory.
func (c *Certificate) X509() *x509.Certificate { return (*x509.Certificate)(c) }

// String returns the certificate as a PEM block, or "" if there is none.
func (c Certificate) String() string {
	if len(c.Raw) == 0 {
		return ""
	}
	return string(pemBlock("CERTIFICATE", c.Raw))
}

// MarshalJSON writes the base64 DER of the certificate, or null when c holds
// no encoded certificate (a template only exists in the manifest text).
func (c Certificate) MarshalJSON() ([]byte, error) {
	if len(c.Raw) == 0 {
		return []byte("null"), nil
	}
	return json.Marshal(c.Raw)
}

// UnmarshalJSON accepts null, a base64 DER string or a template object.
func (c *Certificate) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("null")) {
		*c = Certificate{}
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		if s == "" {
			*c = Certificate{}
			return nil
		}
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return errors.New("certificate is not valid base64")
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("parsing certificate: %w", err)
		}
		*c = Certificate(*cert)
		return nil
	}
	if len(data) == 0 || data[0] != '{' {
		return errors.New("certificate must be a base64 DER string or an object of certificate template fields")
	}
	var tmpl x509.Certificate
	if err := json.Unmarshal(data, &tmpl); err != nil {
		return describeTemplateError(err)
	}
	// Only template fields are meaningful here; encoded parts and parsed-only
	// fields would contradict them.
	tmpl.Raw, tmpl.RawTBSCertificate, tmpl.RawSubjectPublicKeyInfo = nil, nil, nil
	tmpl.RawSubject, tmpl.RawIssuer, tmpl.Signature = nil, nil, nil
	tmpl.PublicKey = nil
	*c = Certificate(tmpl)
	return nil
}

// describeTemplateError explains a certificate template decoding error
// without quoting the input.
func describeTemplateError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var timeErr *time.ParseError
	var ipErr *net.ParseError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Errorf("certificate template field %s must not be a JSON %s", typeErr.Field, jsonKind(typeErr.Value))
	case errors.As(err, &timeErr):
		return errors.New("certificate template has an invalid time (want RFC 3339)")
	case errors.As(err, &ipErr):
		return errors.New("certificate template has an invalid IP address")
	}
	return errors.New("certificate template is invalid")
}

// pemBlock encodes der as one PEM block of type typ.
func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
