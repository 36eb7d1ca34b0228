package core

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"time"

	"github.com/marblemesh/marblemesh/internal/coordinator/pki"
	"github.com/marblemesh/marblemesh/internal/manifest"
)

// pendingUpdate is a full manifest update that waits for acknowledgements.
// It is stored as JSON under keyPendingUpdate.
type pendingUpdate struct {
	// Manifest is the new manifest exactly as uploaded.
	Manifest []byte `json:"manifest"`
	// Initiator is the user who uploaded it.
	Initiator string `json:"initiator"`
	// Acknowledged lists, sorted, the users who agreed, the initiator
	// included.
	Acknowledged []string `json:"acknowledged"`
	// Required is how many acknowledgements apply the update: the current
	// manifest's UpdateThreshold, or all users allowed to UpdateManifest.
	Required int       `json:"required"`
	Started  time.Time `json:"started"`
}

func (p *pendingUpdate) fingerprint() string {
	sum := sha256.Sum256(p.Manifest)
	return hex.EncodeToString(sum[:])
}

// missingUsers returns, sorted, the users allowed to UpdateManifest by m
// who have not acknowledged p.
func (p *pendingUpdate) missingUsers(m *manifest.Manifest) []string {
	out := []string{}
	for _, u := range m.UsersAllowed(manifest.ActionUpdateManifest, manifest.ResourceManifest, "") {
		if !slices.Contains(p.Acknowledged, u) {
			out = append(out, u)
		}
	}
	return out
}

func (p *pendingUpdate) missing() int { return max(p.Required-len(p.Acknowledged), 0) }

// UpdateResult is the state of a manifest update after a request.
type UpdateResult struct {
	// Applied tells whether the update took effect with this request.
	Applied bool
	// MissingAcknowledgments is how many more users must acknowledge.
	MissingAcknowledgments int
	// MissingUsers are the users who may still acknowledge.
	MissingUsers []string
	// RecoverySecrets are the owners' new encrypted recovery secrets, set
	// when the applied update changed the recovery keys or threshold.
	RecoverySecrets map[string][]byte
}

// PendingUpdate describes the manifest update waiting for
// acknowledgements.
type PendingUpdate struct {
	Manifest               []byte
	Initiator              string
	MissingAcknowledgments int
	MissingUsers           []string
}

// UpdateManifest handles an update uploaded by a user. A manifest with
// nothing but Packages is a package update: it raises security versions
// and takes effect at once (the user needs UpdateSecurityVersion on every
// listed package). Any other manifest is a full update (the user needs
// UpdateManifest): it becomes the pending update, acknowledged by its
// uploader, and takes effect once enough users have acknowledged it.
func (c *Core) UpdateManifest(ctx context.Context, userCert *x509.Certificate, raw []byte) (*UpdateResult, error) {
	if len(raw) == 0 {
		return nil, newError(KindInvalidArgument, nil, "the manifest is empty")
	}
	if len(raw) > MaxManifestSize {
		return nil, newError(KindInvalidArgument, nil, "the manifest is %d bytes, more than the limit of %d", len(raw), MaxManifestSize)
	}
	// Who may update is decided before any work on the manifest: the
	// caller must be a user of the running deployment.
	if v := c.view.Load(); v.state != StateAcceptingMarbles {
		return nil, newError(KindFailedPrecondition, nil, "updates need a manifest to update (state: %s)", v.state)
	} else if _, err := authenticateUser(v.dep, userCert); err != nil {
		return nil, err
	}
	upd, err := manifest.Parse(raw)
	if err != nil {
		return nil, newError(KindInvalidArgument, err, "invalid manifest")
	}
	var compiled map[string]*manifest.Compiled
	if !upd.IsPackageUpdate() {
		// Checking a manifest takes long: it runs outside c.mu, and only
		// for a user who may update the manifest now.
		if _, err := c.updater(c.view.Load(), userCert); err != nil {
			return nil, err
		}
		if err := upd.Check(); err != nil {
			return nil, newError(KindInvalidArgument, err, "invalid manifest")
		}
		if compiled, err = upd.Compile(); err != nil {
			return nil, newError(KindInvalidArgument, err, "invalid manifest templates")
		}
	}
	return writeResult(ctx, c, "updating the manifest", func() (*UpdateResult, error) {
		v := c.view.Load()
		if upd.IsPackageUpdate() {
			if v.state != StateAcceptingMarbles {
				return nil, newError(KindFailedPrecondition, nil, "updates need a manifest to update (state: %s)", v.state)
			}
			user, err := authenticateUser(v.dep, userCert)
			if err != nil {
				return nil, err
			}
			return c.updatePackages(ctx, v.dep, user, upd)
		}
		user, err := c.updater(v, userCert)
		if err != nil {
			return nil, err
		}
		return c.initiateUpdate(ctx, v.dep, user, upd, raw, compiled)
	})
}

// updater returns the user of userCert if it may start a full update in
// the state v.
func (c *Core) updater(v *view, userCert *x509.Certificate) (string, error) {
	if v.state != StateAcceptingMarbles {
		return "", newError(KindFailedPrecondition, nil, "updates need a manifest to update (state: %s)", v.state)
	}
	user, err := authenticateUser(v.dep, userCert)
	if err != nil {
		return "", err
	}
	if err := authorize(v.dep, user, manifest.ActionUpdateManifest, manifest.ResourceManifest); err != nil {
		return "", err
	}
	return user, nil
}

// updatePackages applies a package update. c.mu must be held.
func (c *Core) updatePackages(ctx context.Context, dep *deployment, user string, upd *manifest.Manifest) (*UpdateResult, error) {
	names := make([]string, 0, len(upd.Packages))
	for n := range upd.Packages {
		if _, ok := dep.manifest.Packages[n]; !ok {
			return nil, newError(KindInvalidArgument, nil, "invalid package update: package %q is not defined in the manifest", n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	if err := authorize(dep, user, manifest.ActionUpdateSecurityVersion, manifest.ResourcePackages, names...); err != nil {
		return nil, err
	}
	if c.pending != nil {
		return nil, newError(KindFailedPrecondition, nil, "a full manifest update is pending (fingerprint %s); acknowledge or cancel it before updating packages", c.pending.fingerprint())
	}
	m, err := dep.manifest.ApplyPackageUpdate(upd)
	if err != nil {
		return nil, newError(KindInvalidArgument, err, "invalid package update")
	}
	now := c.cfg.Now()
	nd := *dep
	nd.manifest = m
	nd.packageSVN = maps.Clone(dep.packageSVN)
	if nd.packageSVN == nil {
		nd.packageSVN = map[string]uint{}
	}
	var entries []string
	for _, n := range names {
		svn := *upd.Packages[n].SecurityVersion
		nd.packageSVN[n] = svn
		entry, err := updateLogEntry(now, logSecurityVersion, map[string]any{"user": user, "package": n, "new version": svn})
		if err != nil {
			return nil, err
		}
		entries = append(entries, entry)
	}
	if err := c.rotateIntermediate(&nd, now); err != nil {
		return nil, err
	}
	// Shared certificates are signed by the marble root and must follow it;
	// everything else stays.
	gen := make(map[string]manifest.Secret)
	for n, def := range m.Secrets {
		if def.Shared && !def.UserDefined && manifest.IsCertificateType(def.Type) {
			gen[n] = def
		}
	}
	fresh, err := manifest.GenerateShared(gen, nd.marbleCA(), now)
	if err != nil {
		return nil, fmt.Errorf("regenerating shared certificates: %w", err)
	}
	nd.secrets = maps.Clone(dep.secrets)
	maps.Copy(nd.secrets, fresh)

	oldEnc, err := encodeDeployment(dep)
	if err != nil {
		return nil, err
	}
	newEnc, err := encodeDeployment(&nd)
	if err != nil {
		return nil, err
	}
	if err := c.commitWithLog(ctx, diffState(oldEnc, newEnc), entries...); err != nil {
		return nil, err
	}
	if err := c.publish(StateAcceptingMarbles, &nd); err != nil {
		return nil, err
	}
	c.log.Info("package update applied", "user", user, "packages", names)
	return &UpdateResult{Applied: true, MissingUsers: []string{}}, nil
}

// rotateIntermediate gives d a new intermediate CA and marble root.
func (c *Core) rotateIntermediate(d *deployment, now time.Time) error {
	dnsNames, ips := pki.SplitHosts(c.cfg.DNSNames)
	if err := d.rotateIntermediate(dnsNames, ips, now); err != nil {
		return fmt.Errorf("creating a new intermediate CA: %w", err)
	}
	return nil
}

// requiredAcknowledgements is how many users must agree to a full update of m.
func requiredAcknowledgements(m *manifest.Manifest) int {
	if t := m.Config.UpdateThreshold; t > 0 {
		return int(t)
	}
	return len(m.UsersAllowed(manifest.ActionUpdateManifest, manifest.ResourceManifest, ""))
}

// initiateUpdate starts a full update of the checked manifest upd. c.mu
// must be held.
func (c *Core) initiateUpdate(ctx context.Context, dep *deployment, user string, upd *manifest.Manifest, raw []byte, compiled map[string]*manifest.Compiled) (*UpdateResult, error) {
	if c.pending != nil {
		return nil, newError(KindFailedPrecondition, nil, "a manifest update is already pending (initiated by %q, fingerprint %s); acknowledge or cancel it first", c.pending.Initiator, c.pending.fingerprint())
	}
	if lowered := loweredVersions(dep.manifest, upd); len(lowered) > 0 {
		c.log.Warn("the manifest update lowers security versions; it needs the owners' acknowledgements like any full update", "user", user, "packages", lowered)
	}
	if err := upd.CheckWithValues(keptUserSecrets(dep, upd)); err != nil {
		return nil, newError(KindInvalidArgument, err, "the current values of user-defined secrets do not fit the new manifest")
	}
	if err := c.checkSealMode(upd); err != nil {
		return nil, err
	}
	p := &pendingUpdate{
		Manifest:     bytes.Clone(raw),
		Initiator:    user,
		Acknowledged: []string{user},
		Required:     requiredAcknowledgements(dep.manifest),
		Started:      c.cfg.Now().UTC(),
	}
	return c.advanceUpdate(ctx, dep, p, user, logUpdateInitiated, upd, compiled)
}

// advanceUpdate records an acknowledgement of p, the new pending update,
// and applies p once it has enough. c.mu must be held; c.pending changes
// only when the store has the change.
func (c *Core) advanceUpdate(ctx context.Context, dep *deployment, p *pendingUpdate, user, message string, upd *manifest.Manifest, compiled map[string]*manifest.Compiled) (*UpdateResult, error) {
	missingUsers := p.missingUsers(dep.manifest)
	entry, err := updateLogEntry(c.cfg.Now(), message, map[string]any{
		"user":                   user,
		"manifestFingerprint":    p.fingerprint(),
		"missingAcknowledgments": p.missing(),
		"missingUsers":           missingUsers,
	})
	if err != nil {
		return nil, err
	}
	if p.missing() == 0 {
		return c.applyUpdate(ctx, dep, p, user, entry, upd, compiled)
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encoding pending update: %w", err)
	}
	if err := c.commitWithLog(ctx, map[string][]byte{keyPendingUpdate: raw}, entry); err != nil {
		return nil, err
	}
	c.pending = p
	c.log.Info(message, "user", user, "fingerprint", p.fingerprint(), "missingAcknowledgments", p.missing())
	return &UpdateResult{MissingAcknowledgments: p.missing(), MissingUsers: missingUsers}, nil
}

// applyUpdate makes the update p the deployment, logging the last
// acknowledgement (ackEntry) and the update together. c.mu must be held.
func (c *Core) applyUpdate(ctx context.Context, dep *deployment, p *pendingUpdate, user, ackEntry string, upd *manifest.Manifest, compiled map[string]*manifest.Compiled) (*UpdateResult, error) {
	now := c.cfg.Now()
	nd, err := c.updatedDeployment(dep, upd, p.Manifest, compiled, now)
	if err != nil {
		return nil, err
	}
	if err := upd.CheckWithValues(userDefinedValues(upd, nd.secrets)); err != nil {
		return nil, newError(KindInvalidArgument, err, "the current values of user-defined secrets do not fit the new manifest")
	}
	fingerprint := p.fingerprint()
	appliedEntry, err := updateLogEntry(now, logUpdateApplied, map[string]any{"user": user, "manifestFingerprint": fingerprint})
	if err != nil {
		return nil, err
	}
	svnEntries, err := securityVersionEntries(now, user, dep.manifest, upd)
	if err != nil {
		return nil, err
	}
	logEntries := append([]string{ackEntry, appliedEntry}, svnEntries...)
	activations := make(map[string]uint64)
	for typ, n := range c.activations {
		if _, ok := upd.Marbles[typ]; ok {
			activations[typ] = n
		}
	}

	if !recoveryChanged(dep.manifest, upd) {
		oldEnc, err := encodeDeployment(dep)
		if err != nil {
			return nil, err
		}
		newEnc, err := encodeDeployment(nd)
		if err != nil {
			return nil, err
		}
		changes := diffState(oldEnc, newEnc)
		for typ := range c.activations {
			if _, ok := activations[typ]; !ok {
				changes[prefixActivations+typ] = nil
			}
		}
		if c.pending != nil {
			changes[keyPendingUpdate] = nil
		}
		if err := c.commitWithLog(ctx, changes, logEntries...); err != nil {
			return nil, err
		}
		c.activations = activations
		c.pending = nil
		// A new seal mode re-seals the same data key; a crash before it is
		// made good at the next start.
		c.enforceSealMode(ctx, upd)
		if err := c.publish(StateAcceptingMarbles, nd); err != nil {
			return nil, err
		}
		c.log.Info("manifest updated", "user", user, "fingerprint", fingerprint, "sealMode", string(c.cfg.Store.SealMode()))
		return &UpdateResult{Applied: true, MissingUsers: []string{}}, nil
	}

	// New recovery keys or threshold: the state moves to a new data key, so
	// that shares handed out before are worthless.
	st := &storedState{
		dep:         nd,
		activations: activations,
		counters:    c.counters,
		updateLog:   append(slices.Clone(c.updateLog), logEntries...),
	}
	st.updateSeq = uint64(len(st.updateLog))
	encoded, err := encodeAll(st)
	if err != nil {
		return nil, err
	}
	secrets, err := c.resetWithRecovery(ctx, encoded, upd)
	if err != nil {
		return nil, fmt.Errorf("storing the updated deployment under a new data key: %w", err)
	}
	c.adopt(st)
	if err := c.publish(StateAcceptingMarbles, nd); err != nil {
		return nil, err
	}
	c.log.Info("manifest updated with new recovery keys", "user", user, "fingerprint", fingerprint, "recoveryKeys", len(upd.RecoveryKeys))
	return &UpdateResult{Applied: true, MissingUsers: []string{}, RecoverySecrets: secrets}, nil
}

// securityVersionChange is a package whose enforced security version a
// full update changes.
type securityVersionChange struct {
	pkg      string
	old, new uint
}

// securityVersionChanges lists, by package name, the security versions
// (package updates included) that the full update upd changes.
func securityVersionChanges(current, upd *manifest.Manifest) []securityVersionChange {
	var out []securityVersionChange
	for _, name := range slices.Sorted(maps.Keys(upd.Packages)) {
		cur, ok := current.Packages[name]
		next := upd.Packages[name]
		if ok && cur.SecurityVersion != nil && next.SecurityVersion != nil && *cur.SecurityVersion != *next.SecurityVersion {
			out = append(out, securityVersionChange{pkg: name, old: *cur.SecurityVersion, new: *next.SecurityVersion})
		}
	}
	return out
}

// securityVersionEntries returns an update log entry for every security
// version the full update upd changes, raised or lowered, to follow the
// entry of the update itself: the log records every change of what is
// enforced.
func securityVersionEntries(now time.Time, user string, current, upd *manifest.Manifest) ([]string, error) {
	var out []string
	for _, ch := range securityVersionChanges(current, upd) {
		message := logSecurityVersion
		if ch.new < ch.old {
			message = logSecurityVersionLowered
		}
		entry, err := updateLogEntry(now, message, map[string]any{"user": user, "package": ch.pkg, "old version": ch.old, "new version": ch.new})
		if err != nil {
			return nil, err
		}
		out = append(out, entry)
	}
	return out, nil
}

// loweredVersions names the packages whose security version upd lowers.
// A full update may do that, for instance to roll back a broken release,
// but the version it lowers may come from a package update, which the
// manifest the owners set (and read back) does not show.
func loweredVersions(current, upd *manifest.Manifest) []string {
	var out []string
	for _, ch := range securityVersionChanges(current, upd) {
		if ch.new < ch.old {
			out = append(out, fmt.Sprintf("%s: %d to %d", ch.pkg, ch.old, ch.new))
		}
	}
	return out
}

// keptUserSecrets returns the values of dep's user-defined secrets that an
// update to upd keeps: those whose definition does not change.
func keptUserSecrets(dep *deployment, upd *manifest.Manifest) map[string]manifest.Secret {
	out := make(map[string]manifest.Secret)
	for n, def := range upd.Secrets {
		if old, ok := dep.manifest.Secrets[n]; ok && def.UserDefined && reflect.DeepEqual(old, def) {
			if v, ok := dep.secrets[n]; ok {
				out[n] = v
			}
		}
	}
	return out
}

// updatedDeployment builds the deployment of a full update of old to upd:
// a new intermediate CA and marble root; removed secrets dropped;
// user-defined values kept while their definition is unchanged; shared
// symmetric keys kept while unchanged unless RotateRootSecret; shared
// certificates always new (they are signed by the new marble root). With
// RotateRootSecret the root secret is replaced and the old one, with the
// old shared values, becomes the previous one that .Previous templates
// see.
func (c *Core) updatedDeployment(old *deployment, upd *manifest.Manifest, raw []byte, compiled map[string]*manifest.Compiled, now time.Time) (*deployment, error) {
	users, err := userIndex(upd)
	if err != nil {
		return nil, newError(KindInvalidArgument, err, "invalid manifest")
	}
	nd := &deployment{
		root: old.root, manifest: upd, manifestRaw: bytes.Clone(raw), compiled: compiled, users: users,
		rootSecret: old.rootSecret, previousRootSecret: old.previousRootSecret,
	}
	if err := c.rotateIntermediate(nd, now); err != nil {
		return nil, err
	}
	rotate := upd.Config.RotateRootSecret
	previousBase := old.previousSecrets
	if rotate {
		nd.rootSecret = make([]byte, 32)
		if _, err := rand.Read(nd.rootSecret); err != nil {
			return nil, fmt.Errorf("generating root secret: %w", err)
		}
		nd.previousRootSecret = old.rootSecret
		previousBase = old.secrets
	}
	if nd.previousRootSecret != nil {
		nd.previousSecrets = make(map[string]manifest.Secret)
		for n, s := range previousBase {
			if _, ok := upd.Secrets[n]; ok {
				nd.previousSecrets[n] = s
			}
		}
	}
	nd.secrets = make(map[string]manifest.Secret)
	gen := make(map[string]manifest.Secret)
	for n, def := range upd.Secrets {
		oldDef, existed := old.manifest.Secrets[n]
		same := existed && reflect.DeepEqual(oldDef, def)
		current, has := old.secrets[n]
		switch {
		case def.UserDefined:
			if same && has {
				nd.secrets[n] = current
			}
		case !def.Shared:
			// Derived per marble from the root secret at activation.
		case def.Type == manifest.SecretTypeSymmetricKey && same && has && !rotate:
			nd.secrets[n] = current
		default:
			gen[n] = def
		}
	}
	fresh, err := manifest.GenerateShared(gen, nd.marbleCA(), now)
	if err != nil {
		return nil, newError(KindInvalidArgument, err, "generating secrets")
	}
	maps.Copy(nd.secrets, fresh)
	digest := sha256.Sum256(raw)
	if nd.manifestSig, err = ecdsa.SignASN1(rand.Reader, nd.root.Key, digest[:]); err != nil {
		return nil, fmt.Errorf("signing manifest: %w", err)
	}
	return nd, nil
}

// recoveryChanged reports whether an update changes the recovery keys or
// the recovery threshold, which calls for a new data key.
func recoveryChanged(old, upd *manifest.Manifest) bool {
	if old.Config.RecoveryThreshold != upd.Config.RecoveryThreshold || len(old.RecoveryKeys) != len(upd.RecoveryKeys) {
		return true
	}
	for n, pemKey := range upd.RecoveryKeys {
		oldPEM, ok := old.RecoveryKeys[n]
		if !ok {
			return true
		}
		a, errA := manifest.ParseRecoveryKey(oldPEM)
		b, errB := manifest.ParseRecoveryKey(pemKey)
		if errA != nil || errB != nil || !a.Equal(b) {
			return true
		}
	}
	return false
}

// PendingUpdate returns the pending full update.
func (c *Core) PendingUpdate() (*PendingUpdate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.view.Load()
	if v.state != StateAcceptingMarbles || c.pending == nil {
		return nil, newError(KindNotFound, nil, "no manifest update is pending")
	}
	p := c.pending
	return &PendingUpdate{
		Manifest:               bytes.Clone(p.Manifest),
		Initiator:              p.Initiator,
		MissingAcknowledgments: p.missing(),
		MissingUsers:           p.missingUsers(v.dep.manifest),
	}, nil
}

// AcknowledgeUpdate records the user's agreement to the pending update,
// whose manifest raw must be byte for byte. The last acknowledgement
// applies the update.
func (c *Core) AcknowledgeUpdate(ctx context.Context, userCert *x509.Certificate, raw []byte) (*UpdateResult, error) {
	return writeResult(ctx, c, "acknowledging the manifest update", func() (*UpdateResult, error) {
		v := c.view.Load()
		if v.state != StateAcceptingMarbles {
			return nil, newError(KindNotFound, nil, "no manifest update is pending (state: %s)", v.state)
		}
		user, err := authenticateUser(v.dep, userCert)
		if err != nil {
			return nil, err
		}
		p := c.pending
		if p == nil {
			return nil, newError(KindNotFound, nil, "no manifest update is pending")
		}
		if err := authorize(v.dep, user, manifest.ActionUpdateManifest, manifest.ResourceManifest); err != nil {
			return nil, err
		}
		if !bytes.Equal(raw, p.Manifest) {
			sum := sha256.Sum256(raw)
			return nil, newError(KindInvalidArgument, nil, "the manifest differs from the pending update (fingerprint %s, uploaded %s); acknowledge by uploading exactly the same bytes", p.fingerprint(), hex.EncodeToString(sum[:]))
		}
		if slices.Contains(p.Acknowledged, user) {
			return nil, newError(KindInvalidArgument, nil, "user %q has already acknowledged the pending update", user)
		}
		upd, err := manifest.Parse(p.Manifest)
		if err != nil {
			return nil, fmt.Errorf("pending update: %w", err)
		}
		compiled, err := upd.Compile()
		if err != nil {
			return nil, fmt.Errorf("pending update: %w", err)
		}
		np := *p
		np.Acknowledged = append(slices.Clone(p.Acknowledged), user)
		sort.Strings(np.Acknowledged)
		return c.advanceUpdate(ctx, v.dep, &np, user, logUpdateAcknowledge, upd, compiled)
	})
}

// CancelUpdate drops the pending update; any user allowed to UpdateManifest
// may.
func (c *Core) CancelUpdate(ctx context.Context, userCert *x509.Certificate) error {
	return c.write(ctx, "cancelling the manifest update", func() error {
		v := c.view.Load()
		if v.state != StateAcceptingMarbles {
			return newError(KindNotFound, nil, "no manifest update is pending (state: %s)", v.state)
		}
		user, err := authenticateUser(v.dep, userCert)
		if err != nil {
			return err
		}
		p := c.pending
		if p == nil {
			return newError(KindNotFound, nil, "no manifest update is pending")
		}
		if err := authorize(v.dep, user, manifest.ActionUpdateManifest, manifest.ResourceManifest); err != nil {
			return err
		}
		entry, err := updateLogEntry(c.cfg.Now(), logUpdateCancelled, map[string]any{"user": user, "manifestFingerprint": p.fingerprint()})
		if err != nil {
			return err
		}
		if err := c.commitWithLog(ctx, map[string][]byte{keyPendingUpdate: nil}, entry); err != nil {
			return err
		}
		c.pending = nil
		c.log.Info("manifest update cancelled", "user", user, "fingerprint", p.fingerprint())
		return nil
	})
}
