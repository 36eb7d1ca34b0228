package core

import (
	"crypto/x509"
	"fmt"
	"sort"
	"strings"

	"github.com/google/uuid"

	"github.com/marblemesh/marblemesh/internal/coordinator/pki"
	"github.com/marblemesh/marblemesh/internal/manifest"
)

// userIndex maps the DER encoding of every user's certificate to the
// user's name.
func userIndex(m *manifest.Manifest) (map[string]string, error) {
	idx := make(map[string]string, len(m.Users))
	for name, u := range m.Users {
		cert, err := u.ParseCertificate()
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", name, err)
		}
		idx[string(cert.Raw)] = name
	}
	return idx, nil
}

// authenticateUser returns the manifest user whose certificate is exactly
// cert. Like MarbleRun, it compares encodings only: the TLS handshake has
// proven possession of the key, and validity dates and issuers are the
// owners' business.
func authenticateUser(dep *deployment, cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", newError(KindUnauthenticated, nil, "no client certificate was presented; this endpoint needs the certificate of a manifest user")
	}
	if dep.manifest == nil {
		return "", newError(KindUnauthenticated, nil, "no manifest is set, so there are no users")
	}
	name, ok := dep.users[string(cert.Raw)]
	if !ok {
		return "", newError(KindUnauthenticated, nil, "the client certificate is not the certificate of any manifest user")
	}
	return name, nil
}

// authorize checks that user may perform action on every one of names of
// resourceType, and names those it may not touch.
func authorize(dep *deployment, user, action, resourceType string, names ...string) error {
	if strings.EqualFold(resourceType, manifest.ResourceManifest) {
		if !dep.manifest.Allowed(user, action, resourceType, "") {
			return newError(KindPermissionDenied, nil, "user %q has no role that allows %s", user, action)
		}
		return nil
	}
	var denied []string
	for _, n := range names {
		if !dep.manifest.Allowed(user, action, resourceType, n) {
			denied = append(denied, n)
		}
	}
	if len(denied) > 0 {
		sort.Strings(denied)
		return newError(KindPermissionDenied, nil, "user %q has no role that allows %s on %s %s", user, action, strings.ToLower(resourceType), quoteList(denied))
	}
	return nil
}

// marbleIdentity is a marble authenticated by the certificate the
// Coordinator issued to it.
type marbleIdentity struct {
	marbleType string
	uuid       string
}

// authenticateMarble accepts a client certificate that chains to the
// current marble root, names a UUID as its common name and carries the
// marble-type extension. Marbles activated before the last update hold
// certificates of an older marble root and must activate again.
func authenticateMarble(dep *deployment, cert *x509.Certificate) (marbleIdentity, error) {
	if cert == nil {
		return marbleIdentity{}, newError(KindUnauthenticated, nil, "no client certificate was presented; this endpoint needs a marble certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(dep.marbleRoot)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return marbleIdentity{}, newError(KindUnauthenticated, nil, "the client certificate was not issued to a marble by the current marble root")
	}
	id, err := uuid.Parse(cert.Subject.CommonName)
	if err != nil {
		return marbleIdentity{}, newError(KindUnauthenticated, nil, "the marble certificate's common name is not a UUID")
	}
	typ, err := pki.MarbleType(cert)
	if err != nil || typ == "" {
		return marbleIdentity{}, newError(KindUnauthenticated, err, "the marble certificate names no marble type")
	}
	return marbleIdentity{marbleType: typ, uuid: id.String()}, nil
}

// quoteList renders names as "a", "b", "c".
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}
