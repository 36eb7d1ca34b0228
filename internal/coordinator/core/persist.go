package core

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"maps"
	"sort"
	"strconv"
	"strings"

	"github.com/marblemesh/marblemesh/internal/coordinator/pki"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
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
	if out.updateLog, out.updateSeq, err = loadUpdateLog(st, logKeys); err != nil {
		return nil, err
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

// loadUpdateLog returns the update log entries stored under logKeys (all
// the keys of st with prefixUpdateLog, in any order), oldest first, and
// the sequence number of the last one.
func loadUpdateLog(st map[string][]byte, logKeys []string) ([]string, uint64, error) {
	if len(logKeys) == 0 {
		return nil, 0, nil
	}
	sort.Strings(logKeys)
	last := logKeys[len(logKeys)-1]
	seq, err := strconv.ParseUint(strings.TrimPrefix(last, prefixUpdateLog), 10, 64)
	if err != nil {
		return nil, 0, fmt.Errorf("update log key %q: %w", last, err)
	}
	entries := make([]string, len(logKeys))
	for i, k := range logKeys {
		entries[i] = string(st[k])
	}
	return entries, seq, nil
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

// The served state follows the stored one. c.stored remembers a hash of
// every value of the stored state that c's state was read from or written
// as, so that a reload can tell which keys another Coordinator changed
// without keeping a copy of the values. When only activation counts,
// monotonic counters and update log entries changed (the writes of marbles
// at run time), a reload takes over just those (see serveChanges) instead
// of parsing the whole state again; any other change is read in full by
// restore. The hashes are keyed by a seed made at random for each Core, so
// that no one who chooses stored values can make two of them collide.

// storedDiff is how a stored state differs from the one c remembers.
type storedDiff struct {
	// changed holds the hash of every new or changed value, by key.
	changed map[string]uint64
	// removed lists the keys that are no longer stored.
	removed []string
	// cheap is true when every changed or removed key holds an activation
	// count, a monotonic counter or an update log entry.
	cheap bool
	// log is true when an update log entry was added, changed or removed.
	log bool
}

func (d *storedDiff) empty() bool { return len(d.changed) == 0 && len(d.removed) == 0 }

// note records that key k changed.
func (d *storedDiff) note(k string) {
	switch {
	case strings.HasPrefix(k, prefixUpdateLog):
		d.log = true
	case strings.HasPrefix(k, prefixActivations), strings.HasPrefix(k, prefixCounter):
	default:
		d.cheap = false
	}
}

func (c *Core) hashValue(v []byte) uint64 { return maphash.Bytes(c.hashSeed, v) }

// diffStored compares st, just read, with the remembered stored state.
// When nothing is remembered, every key of st is new. c.mu must be held
// or c unshared.
func (c *Core) diffStored(st map[string][]byte) storedDiff {
	d := storedDiff{cheap: true}
	if c.stored == nil {
		d.changed = make(map[string]uint64, len(st))
	} else {
		d.changed = make(map[string]uint64)
	}
	kept := 0
	for k, v := range st {
		h := c.hashValue(v)
		old, ok := c.stored[k]
		if ok {
			kept++
			if old == h {
				continue
			}
		}
		d.changed[k] = h
		d.note(k)
	}
	if kept < len(c.stored) {
		for k := range c.stored {
			if _, ok := st[k]; !ok {
				d.removed = append(d.removed, k)
				d.note(k)
			}
		}
	}
	return d
}

// rememberDiff makes the stored state whose differences from the
// remembered one (there is one) are d the remembered one. c.mu must be
// held.
func (c *Core) rememberDiff(d storedDiff) {
	maps.Copy(c.stored, d.changed)
	for _, k := range d.removed {
		delete(c.stored, k)
	}
}

// rememberRestored makes st, just restored in full, whose differences
// from the remembered stored state are d, the remembered one. It is keyed
// by the keys of st, which the restored state shares, so that the keys of
// earlier reads are not kept alive as well. c.mu must be held or c
// unshared.
func (c *Core) rememberRestored(st map[string][]byte, d storedDiff) {
	if c.stored == nil {
		c.stored = d.changed
		return
	}
	next := make(map[string]uint64, len(st))
	for k := range st {
		h, ok := d.changed[k]
		if !ok {
			h = c.stored[k]
		}
		next[k] = h
	}
	c.stored = next
}

// rememberStored makes st, which the store now holds as a whole, the
// remembered stored state. c.mu must be held or c unshared.
func (c *Core) rememberStored(st map[string][]byte) {
	c.stored = make(map[string]uint64, len(st))
	for k, v := range st {
		if v != nil {
			c.stored[k] = c.hashValue(v)
		}
	}
}

// commit durably applies changes to the store (a nil value deletes its
// key), as Store.Commit, and remembers them as stored. c.mu must be held.
func (c *Core) commit(ctx context.Context, changes map[string][]byte) error {
	if err := c.cfg.Store.Commit(ctx, changes); err != nil {
		return err
	}
	if c.stored == nil {
		return nil
	}
	for k, v := range changes {
		if v == nil {
			delete(c.stored, k)
		} else {
			c.stored[k] = c.hashValue(v)
		}
	}
	return nil
}

// resetStore replaces the stored state with state, as Store.ResetWith
// (whose data key the Core does not keep), and remembers it as stored.
// c.mu must be held or c unshared.
func (c *Core) resetStore(ctx context.Context, state map[string][]byte, opts store.ResetOptions) error {
	if _, err := c.cfg.Store.ResetWith(ctx, state, opts); err != nil {
		return err
	}
	c.rememberStored(state)
	return nil
}

// incremental reports whether a stored state read again may be taken over
// by serveChanges: c serves opened state that it read or wrote itself and
// remembers, and the read is a plain reload (not the start, and not an
// opening by other means). Leaving recovery or a refused rollback always
// reads the state in full. c.mu must be held.
func (c *Core) incremental(boot bool, via string) bool {
	if boot || via != "" || c.stored == nil || c.unsealErr != nil || c.recovery != nil || c.needKey.Load() || c.rollback.Load() != nil {
		return false
	}
	s := c.view.Load().state
	return s == StateAcceptingManifest || s == StateAcceptingMarbles
}

// serveChanges takes over the changes d of activation counts, monotonic
// counters and update log entries (d.cheap) from st, the stored state just
// read, leaving everything else as served: the outcome is what restore
// would make of st. An unreadable value fails the reload as restore would,
// with nothing changed. c.mu must be held.
func (c *Core) serveChanges(st map[string][]byte, d storedDiff) error {
	type count struct {
		name string
		n    uint64
	}
	var acts, counters []count
	for k := range d.changed {
		var err error
		var n uint64
		switch {
		case strings.HasPrefix(k, prefixActivations):
			n, err = parseStoredCount(k, st[k])
			acts = append(acts, count{strings.TrimPrefix(k, prefixActivations), n})
		case strings.HasPrefix(k, prefixCounter):
			n, err = parseStoredCount(k, st[k])
			counters = append(counters, count{strings.TrimPrefix(k, prefixCounter), n})
		}
		if err != nil {
			return fmt.Errorf("stored state is inconsistent: %w", err)
		}
	}
	var (
		log []string
		seq uint64
	)
	if d.log {
		var logKeys []string
		for k := range st {
			if strings.HasPrefix(k, prefixUpdateLog) {
				logKeys = append(logKeys, k)
			}
		}
		var err error
		if log, seq, err = loadUpdateLog(st, logKeys); err != nil {
			return fmt.Errorf("stored state is inconsistent: %w", err)
		}
	}

	for _, a := range acts {
		c.activations[a.name] = a.n
	}
	for _, n := range counters {
		c.counters[n.name] = n.n
	}
	for _, k := range d.removed {
		switch {
		case strings.HasPrefix(k, prefixActivations):
			delete(c.activations, strings.TrimPrefix(k, prefixActivations))
		case strings.HasPrefix(k, prefixCounter):
			delete(c.counters, strings.TrimPrefix(k, prefixCounter))
		}
	}
	if d.log {
		c.updateLog, c.updateSeq = log, seq
	}
	c.rememberDiff(d)
	return nil
}
