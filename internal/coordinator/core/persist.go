package core

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"

	"github.com/marblemesh/marblemesh/internal/coordinator/pki"
	"github.com/marblemesh/marblemesh/internal/manifest"
)

// Keys of the stored state.
const (
	keyRootCert           = "ca/root/cert"
	keyRootKey            = "ca/root/key"
	keyIntermediateCert   = "ca/intermediate/cert"
	keyIntermediateKey    = "ca/intermediate/key"
	keyMarbleRootCert     = "ca/marbleroot/cert"
	keyManifest           = "manifest/raw"
	keyManifestSignature  = "manifest/signature"
	keyPackageSVN         = "manifest/packagesvn"
	keyPendingUpdate      = "update/pending"
	keyRootSecret         = "rootsecret/current" //nolint:gosec // G101: the name of a store key, not a credential
	keyPreviousRootSecret = "rootsecret/previous"
	prefixSecret          = "secret/"
	prefixPreviousSecret  = "previoussecret/"
	prefixActivations     = "activations/"
	prefixUpdateLog       = "updatelog/"
	prefixCounter         = "counter/"
)

// encodeCA returns the stored form of the deployment's certificates.
func encodeCA(d *deployment) map[string][]byte {
	return map[string][]byte{
		keyRootCert:         d.root.Cert.Raw,
		keyRootKey:          mustMarshalKey(d.root.Key),
		keyIntermediateCert: d.intermediate.Cert.Raw,
		keyIntermediateKey:  mustMarshalKey(d.intermediate.Key),
		keyMarbleRootCert:   d.marbleRoot.Raw,
	}
}

// encodeDeployment returns the whole stored form of a deployment.
func encodeDeployment(d *deployment) (map[string][]byte, error) {
	st := encodeCA(d)
	if d.manifest == nil {
		return st, nil
	}
	st[keyManifest] = d.manifestRaw
	st[keyManifestSignature] = d.manifestSig
	if len(d.packageSVN) > 0 {
		raw, err := json.Marshal(d.packageSVN)
		if err != nil {
			return nil, fmt.Errorf("encoding package security versions: %w", err)
		}
		st[keyPackageSVN] = raw
	}
	st[keyRootSecret] = d.rootSecret
	if d.previousRootSecret != nil {
		st[keyPreviousRootSecret] = d.previousRootSecret
	}
	for name, s := range d.secrets {
		raw, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("encoding secret %q: %w", name, err)
		}
		st[prefixSecret+name] = raw
	}
	for name, s := range d.previousSecrets {
		raw, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("encoding previous secret %q: %w", name, err)
		}
		st[prefixPreviousSecret+name] = raw
	}
	return st, nil
}

// storedState is everything the Coordinator persists.
type storedState struct {
	dep         *deployment
	activations map[string]uint64
	counters    map[string]uint64
	updateLog   []string
	updateSeq   uint64
	pending     *pendingUpdate
}

// encodeAll returns the complete stored form of st, as Reset needs it.
// Update log entries are numbered from 1 in order.
func encodeAll(st *storedState) (map[string][]byte, error) {
	out, err := encodeDeployment(st.dep)
	if err != nil {
		return nil, err
	}
	for typ, n := range st.activations {
		out[prefixActivations+typ] = []byte(strconv.FormatUint(n, 10))
	}
	for key, n := range st.counters {
		out[prefixCounter+key] = []byte(strconv.FormatUint(n, 10))
	}
	for i, entry := range st.updateLog {
		out[updateLogKey(uint64(i+1))] = []byte(entry)
	}
	if st.pending != nil {
		raw, err := json.Marshal(st.pending)
		if err != nil {
			return nil, fmt.Errorf("encoding pending update: %w", err)
		}
		out[keyPendingUpdate] = raw
	}
	return out, nil
}

// diffState returns the changes that turn the stored state old into cur:
// new or changed values, and nil for keys that cur lacks.
func diffState(old, cur map[string][]byte) map[string][]byte {
	changes := make(map[string][]byte)
	for k, v := range cur {
		if ov, ok := old[k]; !ok || !bytes.Equal(ov, v) {
			changes[k] = v
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			changes[k] = nil
		}
	}
	return changes
}

func updateLogKey(seq uint64) string {
	return fmt.Sprintf("%s%020d", prefixUpdateLog, seq)
}

// mustMarshalKey encodes an ECDSA key the Coordinator generated itself;
// PKCS#8 encoding of a valid P-256 key cannot fail.
func mustMarshalKey(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(fmt.Sprintf("encoding a generated ECDSA key: %v", err))
	}
	return der
}

// restore rebuilds everything from the stored state.
func restore(st map[string][]byte) (*storedState, error) {
	dep := &deployment{}
	var err error
	if dep.root, err = loadCA(st, keyRootCert, keyRootKey); err != nil {
		return nil, err
	}
	if dep.intermediate, err = loadCA(st, keyIntermediateCert, keyIntermediateKey); err != nil {
		return nil, err
	}
	if dep.marbleRoot, err = loadCert(st, keyMarbleRootCert); err != nil {
		return nil, err
	}
	dep.fillDerived()

	out := &storedState{dep: dep, activations: map[string]uint64{}, counters: map[string]uint64{}}
	var logKeys []string
	for k, v := range st {
		switch {
		case strings.HasPrefix(k, prefixActivations):
			n, perr := parseStoredCount(k, v)
			if perr != nil {
				return nil, perr
			}
			out.activations[strings.TrimPrefix(k, prefixActivations)] = n
		case strings.HasPrefix(k, prefixCounter):
			n, perr := parseStoredCount(k, v)
			if perr != nil {
				return nil, perr
			}
			out.counters[strings.TrimPrefix(k, prefixCounter)] = n
		case strings.HasPrefix(k, prefixUpdateLog):
			logKeys = append(logKeys, k)
		}
	}
	sort.Strings(logKeys)
	for _, k := range logKeys {
		out.updateLog = append(out.updateLog, string(st[k]))
	}
	if n := len(logKeys); n > 0 {
		out.updateSeq, err = strconv.ParseUint(strings.TrimPrefix(logKeys[n-1], prefixUpdateLog), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("update log key %q: %w", logKeys[n-1], err)
		}
	}

	raw, ok := st[keyManifest]
	if !ok {
		return out, nil
	}
	m, err := manifest.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("stored manifest: %w", err)
	}
	if svnRaw, ok := st[keyPackageSVN]; ok {
		if err := json.Unmarshal(svnRaw, &dep.packageSVN); err != nil {
			return nil, fmt.Errorf("stored package security versions: %w", err)
		}
		if m, err = withPackageSVN(m, dep.packageSVN); err != nil {
			return nil, fmt.Errorf("stored package security versions: %w", err)
		}
	}
	compiled, err := m.Compile()
	if err != nil {
		return nil, fmt.Errorf("stored manifest templates: %w", err)
	}
	dep.manifest, dep.manifestRaw, dep.compiled = m, raw, compiled
	if dep.users, err = userIndex(m); err != nil {
		return nil, fmt.Errorf("stored manifest: %w", err)
	}
	dep.manifestSig = st[keyManifestSignature]
	dep.rootSecret = st[keyRootSecret]
	if len(dep.rootSecret) == 0 {
		return nil, fmt.Errorf("stored state has a manifest but no root secret")
	}
	dep.previousRootSecret = st[keyPreviousRootSecret]
	if dep.secrets, err = loadSecrets(st, prefixSecret); err != nil {
		return nil, err
	}
	if dep.previousSecrets, err = loadSecrets(st, prefixPreviousSecret); err != nil {
		return nil, err
	}
	if raw, ok := st[keyPendingUpdate]; ok {
		var p pendingUpdate
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("stored pending update: %w", err)
		}
		if _, err := manifest.Parse(p.Manifest); err != nil {
			return nil, fmt.Errorf("stored pending update: %w", err)
		}
		out.pending = &p
	}
	return out, nil
}

// withPackageSVN returns a copy of m with the packages' security versions
// replaced by svn.
func withPackageSVN(m *manifest.Manifest, svn map[string]uint) (*manifest.Manifest, error) {
	out := *m
	out.Packages = maps.Clone(m.Packages)
	for name, v := range svn {
		pkg, ok := out.Packages[name]
		if !ok {
			return nil, fmt.Errorf("package %q is not in the manifest", name)
		}
		pkg.SecurityVersion = &v
		out.Packages[name] = pkg
	}
	return &out, nil
}

func loadSecrets(st map[string][]byte, prefix string) (map[string]manifest.Secret, error) {
	out := map[string]manifest.Secret{}
	for k, v := range st {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		var s manifest.Secret
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, fmt.Errorf("stored secret %q: %w", strings.TrimPrefix(k, prefix), err)
		}
		out[strings.TrimPrefix(k, prefix)] = s
	}
	return out, nil
}

func loadCert(st map[string][]byte, key string) (*x509.Certificate, error) {
	der, ok := st[key]
	if !ok {
		return nil, fmt.Errorf("stored state lacks %s", key)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("stored %s: %w", key, err)
	}
	return cert, nil
}

func loadCA(st map[string][]byte, certKey, keyKey string) (pki.CA, error) {
	cert, err := loadCert(st, certKey)
	if err != nil {
		return pki.CA{}, err
	}
	der, ok := st[keyKey]
	if !ok {
		return pki.CA{}, fmt.Errorf("stored state lacks %s", keyKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return pki.CA{}, fmt.Errorf("stored %s: %w", keyKey, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return pki.CA{}, fmt.Errorf("stored %s is not an ECDSA key", keyKey)
	}
	if !ek.PublicKey.Equal(cert.PublicKey) {
		return pki.CA{}, fmt.Errorf("stored %s does not match %s", keyKey, certKey)
	}
	return pki.CA{Cert: cert, Key: ek}, nil
}
