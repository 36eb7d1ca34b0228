// Package manifest holds the MarbleRun-compatible manifest: its JSON schema,
// validation (Check), secret generation and derivation, the templates that
// render a marble's files and environment, and the transparent-TLS
// configuration handed to marbles.
//
// The package is pure: it performs no I/O besides reading randomness.
//
// JSON field names are the Go field names and are matched
// case-insensitively; unknown fields are ignored. Parse only decodes a
// manifest; Check validates it.
package manifest

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Manifest describes a deployment: enclave packages, marble types, users,
// roles, secrets, recovery keys, TLS tags and global configuration.
type Manifest struct {
	Packages        map[string]Package
	Infrastructures map[string]Infrastructure
	Marbles         map[string]Marble
	Users           map[string]User
	Secrets         map[string]Secret
	// RecoveryKeys maps a name to a PEM "PUBLIC KEY" block holding a PKIX
	// RSA public key.
	RecoveryKeys map[string]string
	Roles        map[string]Role
	TLS          map[string]TLSTag
	Config       Config
}

// Package is the identity an enclave must prove to run as a marble.
type Package struct {
	Debug bool
	// UniqueID is the hex-encoded MRENCLAVE (32 bytes).
	UniqueID string
	// SignerID is the hex-encoded MRSIGNER (32 bytes).
	SignerID  string
	ProductID *uint64
	// SecurityVersion is the minimum accepted ISV SVN.
	SecurityVersion *uint
	// AcceptedTCBStatuses defaults to UpToDate and SWHardeningNeeded when empty.
	AcceptedTCBStatuses []string
	// AcceptedAdvisories lists advisory IDs tolerated; empty accepts all.
	AcceptedAdvisories []string
}

// Infrastructure describes accepted platform TCB values.
type Infrastructure struct {
	CPUSVN []byte
	QESVN  *uint16
	PCESVN *uint16
	RootCA []byte
}

// Marble is a service type.
type Marble struct {
	Package string
	// MaxActivations limits how often the type may activate; 0 is unlimited.
	MaxActivations       uint
	Parameters           Parameters
	TLS                  []string
	DisableSecretBinding bool
}

// Parameters are what an activated marble receives. Files and Env are
// templates (see Compile); Argv is passed through verbatim.
type Parameters struct {
	Files map[string]File
	Env   map[string]File
	Argv  []string
}

// User is a client identified by its TLS certificate.
type User struct {
	// Certificate is a PEM "CERTIFICATE" block.
	Certificate string
	Roles       []string
}

// Role grants Actions on the named resources of one ResourceType.
type Role struct {
	ResourceType  string
	ResourceNames []string
	Actions       []string
}

// TLSTag lists transparent-TLS endpoints of the marbles that carry the tag.
type TLSTag struct {
	Outgoing []TLSEntry
	Incoming []TLSEntry
}

// TLSEntry is one transparent-TLS endpoint. Outgoing entries need Addr and
// Port; incoming entries need Port and may name a certificate secret in Cert,
// in which case DisableClientAuth must be true.
type TLSEntry struct {
	Port              string
	Addr              string
	Cert              string
	DisableClientAuth bool
}

// Config holds deployment-wide settings.
type Config struct {
	SealMode     string
	FeatureGates []string
	// UpdateThreshold is the number of acknowledgements a full update needs;
	// 0 means every user allowed to UpdateManifest.
	UpdateThreshold uint
	// RecoveryThreshold is the number of recovery keys needed; 0 means all.
	RecoveryThreshold uint
	RotateRootSecret  bool
}

// Secret types.
const (
	SecretTypeSymmetricKey = "symmetric-key" //nolint:gosec // G101: names of secret types, not credentials
	SecretTypeCertRSA      = "cert-rsa"
	SecretTypeCertECDSA    = "cert-ecdsa"   //nolint:gosec // G101: as above
	SecretTypeCertED25519  = "cert-ed25519" //nolint:gosec // G101: as above
	SecretTypePlain        = "plain"
)

// Role actions; matched case-insensitively.
const (
	ActionReadSecret            = "ReadSecret"
	ActionWriteSecret           = "WriteSecret"
	ActionUpdateSecurityVersion = "UpdateSecurityVersion"
	ActionUpdateManifest        = "UpdateManifest"
)

// Role resource types; matched case-insensitively.
const (
	ResourcePackages = "Packages"
	ResourceSecrets  = "Secrets"
	ResourceManifest = "Manifest"
)

// Feature gates; matched case-insensitively.
const (
	FeatureSignQuoteEndpoint = "SignQuoteEndpoint"
	FeatureMonotonicCounter  = "MonotonicCounter"
	// FeatureAzureHSMSealing is MarbleRun's gate for Azure Managed HSM
	// sealing, which this Coordinator does not implement: Check refuses it.
	FeatureAzureHSMSealing = "AzureHSMSealing"
)

// Seal modes; matched case-insensitively. The empty mode is the default.
const (
	SealModeDefault    = ""
	SealModeProductKey = "ProductKey"
	SealModeUniqueKey  = "UniqueKey"
	SealModeDisabled   = "Disabled"
)

// canonical returns the member of known that equals s case-insensitively.
func canonical(s string, known ...string) (string, bool) {
	for _, k := range known {
		if strings.EqualFold(s, k) {
			return k, true
		}
	}
	return "", false
}

// FeatureEnabled reports whether the feature gate name is listed,
// comparing case-insensitively.
func (c Config) FeatureEnabled(name string) bool {
	for _, g := range c.FeatureGates {
		if strings.EqualFold(g, name) {
			return true
		}
	}
	return false
}

// CanonicalSealMode returns the seal mode in its canonical spelling and
// whether it is known.
func (c Config) CanonicalSealMode() (string, bool) {
	return canonical(c.SealMode, SealModeDefault, SealModeProductKey, SealModeUniqueKey, SealModeDisabled)
}

// IsCertificateType reports whether secrets of type t carry a certificate.
func IsCertificateType(t string) bool {
	switch t {
	case SecretTypeCertRSA, SecretTypeCertECDSA, SecretTypeCertED25519:
		return true
	}
	return false
}

// Allowed reports whether user may perform action on the resource
// resourceName of resourceType. Action and resource type are compared
// case-insensitively, resource names exactly. Roles of type Manifest carry
// no names, so resourceName is ignored for them.
func (m *Manifest) Allowed(user, action, resourceType, resourceName string) bool {
	u, ok := m.Users[user]
	if !ok {
		return false
	}
	for _, roleName := range u.Roles {
		role, ok := m.Roles[roleName]
		if !ok || !strings.EqualFold(role.ResourceType, resourceType) {
			continue
		}
		if !slices.ContainsFunc(role.Actions, func(a string) bool { return strings.EqualFold(a, action) }) {
			continue
		}
		if strings.EqualFold(resourceType, ResourceManifest) || slices.Contains(role.ResourceNames, resourceName) {
			return true
		}
	}
	return false
}

// UsersAllowed returns, sorted, the users that may perform action on the
// named resource (see Allowed).
func (m *Manifest) UsersAllowed(action, resourceType, resourceName string) []string {
	var users []string
	for name := range m.Users {
		if m.Allowed(name, action, resourceType, resourceName) {
			users = append(users, name)
		}
	}
	sort.Strings(users)
	return users
}

// UserForCertificate returns the user whose certificate has exactly the
// DER encoding der.
func (m *Manifest) UserForCertificate(der []byte) (string, bool) {
	for name, u := range m.Users {
		cert, err := u.ParseCertificate()
		if err == nil && bytes.Equal(cert.Raw, der) {
			return name, true
		}
	}
	return "", false
}

// ParseCertificate decodes the user's PEM certificate.
func (u User) ParseCertificate() (*x509.Certificate, error) {
	if strings.TrimSpace(u.Certificate) == "" {
		return nil, errors.New("certificate is empty")
	}
	block, _ := pem.Decode([]byte(u.Certificate))
	if block == nil {
		return nil, errors.New("certificate is not PEM-encoded")
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("certificate PEM block has type %q, want CERTIFICATE", block.Type)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	return cert, nil
}

// sortedKeys returns the keys of m in ascending order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
