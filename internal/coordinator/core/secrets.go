package core

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/marblemesh/marblemesh/internal/manifest"
)

// UserSecret is the value of a user-defined secret as its owner uploads
// it: Key for symmetric-key and plain secrets; Cert (DER) and optionally
// Private (a PKCS#8, PKCS#1 or SEC 1 DER private key) for certificate
// secrets.
type UserSecret struct {
	Cert    []byte
	Private []byte
	Key     []byte
}

// ReadSecrets returns the values of the named shared or user-defined
// secrets. The user needs ReadSecret on every one of them.
func (c *Core) ReadSecrets(userCert *x509.Certificate, names []string) (map[string]manifest.Secret, error) {
	v := c.view.Load()
	if v.state != StateAcceptingMarbles {
		return nil, newError(KindFailedPrecondition, nil, "secrets are only available once a manifest is set (state: %s)", v.state)
	}
	dep := v.dep
	user, err := authenticateUser(dep, userCert)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, newError(KindInvalidArgument, nil, "no secret names given")
	}
	names = slices.Clone(names)
	sort.Strings(names)
	names = slices.Compact(names)
	for _, n := range names {
		if n == "" {
			return nil, newError(KindInvalidArgument, nil, "a secret name is empty")
		}
		if _, ok := dep.manifest.Secrets[n]; !ok {
			return nil, newError(KindInvalidArgument, nil, "secret %q is not defined in the manifest", n)
		}
	}
	if err := authorize(dep, user, manifest.ActionReadSecret, manifest.ResourceSecrets, names...); err != nil {
		return nil, err
	}
	out := make(map[string]manifest.Secret, len(names))
	var unset []string
	for _, n := range names {
		s, ok := dep.secrets[n]
		if !ok {
			unset = append(unset, n)
			continue
		}
		out[n] = s
	}
	if len(unset) > 0 {
		return nil, newError(KindNotFound, nil, "secret %s has no value yet: user-defined secrets must be uploaded first", quoteList(unset))
	}
	c.log.Info("secrets read", "user", user, "secrets", names)
	return out, nil
}

// WriteSecrets stores values of user-defined secrets. The user needs
// WriteSecret on every one of them; every value must match its definition
// and fit the templates that use it. Marbles that activate afterwards
// receive the new values. Either all secrets are stored or none.
func (c *Core) WriteSecrets(ctx context.Context, userCert *x509.Certificate, values map[string]UserSecret) error {
	return c.write(ctx, "writing secrets", func() error {
		v := c.view.Load()
		if v.state != StateAcceptingMarbles {
			return newError(KindFailedPrecondition, nil, "secrets can only be set once a manifest is set (state: %s)", v.state)
		}
		dep := v.dep
		user, err := authenticateUser(dep, userCert)
		if err != nil {
			return err
		}
		if len(values) == 0 {
			return newError(KindInvalidArgument, nil, "no secrets given")
		}
		names := make([]string, 0, len(values))
		for n := range values {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			def, ok := dep.manifest.Secrets[n]
			switch {
			case n == "":
				return newError(KindInvalidArgument, nil, "a secret name is empty")
			case !ok:
				return newError(KindInvalidArgument, nil, "secret %q is not defined in the manifest", n)
			case !def.UserDefined:
				return newError(KindInvalidArgument, nil, "secret %q is not user-defined: the Coordinator generates its value", n)
			}
		}
		if err := authorize(dep, user, manifest.ActionWriteSecret, manifest.ResourceSecrets, names...); err != nil {
			return err
		}
		parsed := make(map[string]manifest.Secret, len(values))
		for _, n := range names {
			s, err := userSecretValue(dep.manifest.Secrets[n], values[n])
			if err != nil {
				return newError(KindInvalidArgument, err, "secret %q", n)
			}
			parsed[n] = s
		}
		secrets := maps.Clone(dep.secrets)
		maps.Copy(secrets, parsed)
		if err := dep.manifest.CheckWithValues(userDefinedValues(dep.manifest, secrets)); err != nil {
			return newError(KindInvalidArgument, err, "the secrets do not fit the manifest's templates")
		}

		changes := make(map[string][]byte, 2*len(parsed))
		var entries []string
		now := c.cfg.Now()
		for _, n := range names {
			raw, err := json.Marshal(parsed[n])
			if err != nil {
				return fmt.Errorf("encoding secret %q: %w", n, err)
			}
			changes[prefixSecret+n] = raw
			entry, err := updateLogEntry(now, logSecretSet, map[string]any{"user": user, "secret": n, "type": parsed[n].Type})
			if err != nil {
				return err
			}
			entries = append(entries, entry)
		}
		nd := *dep
		nd.secrets = secrets
		if err := c.commitWithLog(ctx, changes, entries...); err != nil {
			return err
		}
		if err := c.publish(StateAcceptingMarbles, &nd); err != nil {
			return err
		}
		c.log.Info("user-defined secrets set", "user", user, "secrets", names)
		return nil
	})
}

// userDefinedValues returns the values among secrets of the manifest's
// user-defined secrets.
func userDefinedValues(m *manifest.Manifest, secrets map[string]manifest.Secret) map[string]manifest.Secret {
	out := make(map[string]manifest.Secret)
	for n, s := range secrets {
		if def, ok := m.Secrets[n]; ok && def.UserDefined {
			out[n] = s
		}
	}
	return out
}

// userSecretValue checks an uploaded value against its definition and
// returns the stored form.
func userSecretValue(def manifest.Secret, in UserSecret) (manifest.Secret, error) {
	out := manifest.Secret{Type: def.Type, Size: def.Size, Shared: def.Shared, UserDefined: true, ValidFor: def.ValidFor}
	switch def.Type {
	case manifest.SecretTypeSymmetricKey, manifest.SecretTypePlain:
		if len(in.Cert) > 0 || len(in.Private) > 0 {
			return manifest.Secret{}, fmt.Errorf("a %s secret takes only Key, not Cert or Private", def.Type)
		}
		if len(in.Key) == 0 {
			return manifest.Secret{}, errors.New("Key is empty")
		}
		if def.Type == manifest.SecretTypeSymmetricKey && uint(len(in.Key))*8 != def.Size {
			return manifest.Secret{}, fmt.Errorf("Key is %d bits, but the manifest declares %d", len(in.Key)*8, def.Size)
		}
		out.Private = slices.Clone(in.Key)
		out.Public = slices.Clone(in.Key)
		return out, nil
	case manifest.SecretTypeCertRSA, manifest.SecretTypeCertECDSA, manifest.SecretTypeCertED25519:
	default:
		return manifest.Secret{}, fmt.Errorf("unknown secret type %q", def.Type)
	}
	if len(in.Key) > 0 {
		return manifest.Secret{}, fmt.Errorf("a %s secret takes Cert and Private, not Key", def.Type)
	}
	if len(in.Cert) == 0 {
		return manifest.Secret{}, errors.New("Cert is empty")
	}
	cert, err := x509.ParseCertificate(in.Cert)
	if err != nil {
		return manifest.Secret{}, fmt.Errorf("parsing Cert: %w", err)
	}
	if err := checkKeyType(def, cert.PublicKey); err != nil {
		return manifest.Secret{}, fmt.Errorf("Cert: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		return manifest.Secret{}, fmt.Errorf("encoding the certificate's public key: %w", err)
	}
	out.Cert = manifest.Certificate(*cert)
	out.Public = pub
	if len(in.Private) > 0 {
		key, err := parsePrivateKey(in.Private)
		if err != nil {
			return manifest.Secret{}, fmt.Errorf("parsing Private: %w", err)
		}
		eq, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !eq.Equal(cert.PublicKey) {
			return manifest.Secret{}, errors.New("Private does not belong to Cert")
		}
		if out.Private, err = x509.MarshalPKCS8PrivateKey(key); err != nil {
			return manifest.Secret{}, fmt.Errorf("encoding Private: %w", err)
		}
	}
	return out, nil
}

// checkKeyType checks that a certificate's key has the type and size the
// secret declares; a Size of 0 accepts any size.
func checkKeyType(def manifest.Secret, pub crypto.PublicKey) error {
	switch def.Type {
	case manifest.SecretTypeCertRSA:
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("the key is a %T, but the secret is cert-rsa", pub)
		}
		if def.Size != 0 && uint(k.N.BitLen()) != def.Size {
			return fmt.Errorf("the RSA key has %d bits, but the manifest declares %d", k.N.BitLen(), def.Size)
		}
	case manifest.SecretTypeCertECDSA:
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return fmt.Errorf("the key is a %T, but the secret is cert-ecdsa", pub)
		}
		if def.Size != 0 && uint(k.Curve.Params().BitSize) != def.Size {
			return fmt.Errorf("the ECDSA key is on %s, but the manifest declares size %d", k.Curve.Params().Name, def.Size)
		}
	case manifest.SecretTypeCertED25519:
		if _, ok := pub.(ed25519.PublicKey); !ok {
			return fmt.Errorf("the key is a %T, but the secret is cert-ed25519", pub)
		}
	}
	return nil
}

// parsePrivateKey accepts PKCS#8, PKCS#1 (RSA) and SEC 1 (EC) DER.
func parsePrivateKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
		return s, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKCS#8, PKCS#1 or SEC 1 DER private key")
}
