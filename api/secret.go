package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"

	"github.com/marblemesh/marblemesh/api/wire"
)

// Secret is a secret's value as the Coordinator returns it. Its JSON form
// uses the Go field names; Cert, Private and Public are base64.
type Secret struct {
	Type        string
	Size        uint
	Shared      bool
	UserDefined bool
	// Cert is the DER certificate of certificate secrets.
	Cert     []byte
	ValidFor uint
	// Private is the PKCS#8 DER key of certificate secrets, or the value
	// of symmetric-key and plain secrets.
	Private []byte
	// Public is the PKIX DER public key of certificate secrets, or the
	// value of symmetric-key and plain secrets.
	Public []byte
}

// Certificate parses Cert; it returns nil and no error if there is none.
func (s Secret) Certificate() (*x509.Certificate, error) {
	if len(s.Cert) == 0 {
		return nil, nil
	}
	return x509.ParseCertificate(s.Cert)
}

// String describes the secret without its key material.
func (s Secret) String() string {
	return fmt.Sprintf("{Type:%s Size:%d Shared:%t UserDefined:%t}", s.Type, s.Size, s.Shared, s.UserDefined)
}

// UserSecret is the value of a user-defined secret to upload: Cert and
// Private for certificate secrets, Key for symmetric-key and plain secrets.
// Its JSON form is MarbleRun's (Cert, Private and Key, base64).
type UserSecret struct {
	// Cert is a DER certificate.
	Cert []byte `json:",omitempty"`
	// Private is the certificate's DER private key (PKCS#8 preferred).
	Private []byte `json:",omitempty"`
	// Key is the value of a symmetric-key or plain secret.
	Key []byte `json:",omitempty"`
}

// String describes the secret without its key material.
func (s UserSecret) String() string {
	return fmt.Sprintf("{Cert:%d bytes Private:%d bytes Key:%d bytes}", len(s.Cert), len(s.Private), len(s.Key))
}

// ParseUserSecrets decodes a JSON object of secret name to UserSecret.
// Unknown fields are refused: a misspelt field would otherwise upload an
// empty secret.
func ParseUserSecrets(data []byte) (map[string]UserSecret, error) {
	var secrets map[string]UserSecret
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&secrets); err != nil {
		return nil, fmt.Errorf("decoding secrets (a JSON object of name to {\"Cert\", \"Private\", \"Key\"}): %w", err)
	}
	if dec.More() {
		return nil, errors.New("decoding secrets: unexpected data after the JSON object")
	}
	if len(secrets) == 0 {
		return nil, errors.New("the secrets file names no secret")
	}
	for _, name := range sortedNames(secrets) {
		s := secrets[name]
		switch {
		case len(s.Cert) == 0 && len(s.Private) == 0 && len(s.Key) == 0:
			return nil, fmt.Errorf("secret %q has no value: set Cert and Private, or Key", name)
		case len(s.Key) > 0 && (len(s.Cert) > 0 || len(s.Private) > 0):
			return nil, fmt.Errorf("secret %q sets both Key and a certificate: set Cert and Private, or Key", name)
		case len(s.Cert) > 0:
			if _, err := x509.ParseCertificate(s.Cert); err != nil {
				return nil, fmt.Errorf("secret %q: Cert is not a base64 DER certificate: %w", name, err)
			}
		}
	}
	return secrets, nil
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// SecretGet reads secrets as a user allowed to ReadSecret them.
func SecretGet(ctx context.Context, endpoint string, trustedRoot *x509.Certificate, clientCert *tls.Certificate, names ...string) (map[string]Secret, error) {
	if len(names) == 0 {
		return nil, errors.New("no secret names given")
	}
	for _, n := range names {
		if n == "" {
			return nil, errors.New("a secret name is empty")
		}
	}
	c, err := newTrustedClient(endpoint, trustedRoot, clientCert)
	if err != nil {
		return nil, err
	}
	defer c.close()
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "secrets", query: url.Values{"s": names}})
	if err != nil {
		return nil, fmt.Errorf("getting secrets: %w", err)
	}
	var secrets map[string]Secret
	if resp.legacy {
		err = decode(resp.data, "secrets", &secrets)
	} else {
		var d wire.SecretsV2[Secret]
		err = decode(resp.data, "secrets", &d)
		secrets = d.Secrets
	}
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := secrets[n]; !ok {
			return nil, fmt.Errorf("the Coordinator did not return secret %q", n)
		}
	}
	return secrets, nil
}

// SecretSet uploads user-defined secrets as a user allowed to WriteSecret
// them.
func SecretSet(ctx context.Context, endpoint string, trustedRoot *x509.Certificate, clientCert *tls.Certificate, secrets map[string]UserSecret) error {
	if len(secrets) == 0 {
		return errors.New("no secrets given")
	}
	c, err := newTrustedClient(endpoint, trustedRoot, clientCert)
	if err != nil {
		return err
	}
	defer c.close()
	legacy, err := json.Marshal(secrets)
	if err != nil {
		return fmt.Errorf("encoding secrets: %w", err)
	}
	_, err = c.do(ctx, request{
		method: http.MethodPost, path: "secrets",
		v2Body: wire.SecretsV2[UserSecret]{Secrets: secrets},
		v1Body: legacy,
	})
	if err != nil {
		return fmt.Errorf("setting secrets: %w", err)
	}
	return nil
}
