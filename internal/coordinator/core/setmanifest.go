package core

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/marblemesh/marblemesh/internal/manifest"
)

// MaxManifestSize bounds the size of a manifest.
const MaxManifestSize = 16 << 20

// SetManifest sets the first manifest (state 2), or replaces state that
// cannot be unsealed (state 1, discarding it). It returns the owners'
// encrypted recovery secrets, by recovery key name.
func (c *Core) SetManifest(ctx context.Context, raw []byte) (map[string][]byte, error) {
	if len(raw) == 0 {
		return nil, newError(KindInvalidArgument, nil, "the manifest is empty")
	}
	if len(raw) > MaxManifestSize {
		return nil, newError(KindInvalidArgument, nil, "the manifest is %d bytes, more than the limit of %d", len(raw), MaxManifestSize)
	}
	// The state decides first whether a manifest may be set at all, so a
	// caller who may not set one (anyone, once one is set) costs nothing.
	if err := canSetManifest(c.view.Load().state); err != nil {
		return nil, err
	}
	m, err := manifest.Parse(raw)
	if err != nil {
		return nil, newError(KindInvalidArgument, err, "invalid manifest")
	}
	if err := m.Check(); err != nil {
		return nil, newError(KindInvalidArgument, err, "invalid manifest")
	}
	compiled, err := m.Compile()
	if err != nil {
		return nil, newError(KindInvalidArgument, err, "invalid manifest templates")
	}

	return writeResult(ctx, c, "setting the manifest", func() (map[string][]byte, error) {
		v := c.view.Load()
		if err := canSetManifest(v.state); err != nil {
			return nil, err
		}
		users, err := userIndex(m)
		if err != nil {
			return nil, newError(KindInvalidArgument, err, "invalid manifest")
		}
		if err := c.checkSealMode(m); err != nil {
			return nil, err
		}
		now := c.cfg.Now()
		old := v.dep
		dep := &deployment{
			root: old.root, intermediate: old.intermediate, marbleRoot: old.marbleRoot,
			manifest: m, manifestRaw: append([]byte(nil), raw...), compiled: compiled, users: users,
		}
		dep.fillDerived()
		dep.rootSecret = make([]byte, 32)
		if _, err := rand.Read(dep.rootSecret); err != nil {
			return nil, fmt.Errorf("generating root secret: %w", err)
		}
		shared, err := manifest.GenerateShared(m.Secrets, dep.marbleCA(), now)
		if err != nil {
			return nil, newError(KindInvalidArgument, err, "generating secrets")
		}
		dep.secrets = shared
		digest := sha256.Sum256(raw)
		if dep.manifestSig, err = ecdsa.SignASN1(rand.Reader, dep.root.Key, digest[:]); err != nil {
			return nil, fmt.Errorf("signing manifest: %w", err)
		}
		entry, err := updateLogEntry(now, logInitialManifest, map[string]any{"manifestFingerprint": hex.EncodeToString(digest[:])})
		if err != nil {
			return nil, err
		}
		st := &storedState{
			dep: dep, activations: map[string]uint64{}, counters: map[string]uint64{},
			updateLog: []string{entry}, updateSeq: 1,
		}
		encoded, err := encodeAll(st)
		if err != nil {
			return nil, err
		}
		// The deployment and its recovery data are stored in one step, under a
		// new data key sealed in the manifest's seal mode.
		secrets, err := c.resetWithRecovery(ctx, encoded, m)
		if err != nil {
			return nil, fmt.Errorf("storing the new deployment: %w", err)
		}
		// The store now holds the new deployment; what is served must match it
		// whatever happens next.
		c.adopt(st)
		c.unsealErr = nil
		c.endRecovery()
		if err := c.publish(StateAcceptingMarbles, dep); err != nil {
			return nil, err
		}
		c.log.Info("manifest set", "fingerprint", hex.EncodeToString(digest[:]), "marbles", len(m.Marbles), "secrets", len(m.Secrets), "recoveryKeys", len(m.RecoveryKeys), "sealMode", string(c.cfg.Store.SealMode()))
		if note := m.TTLSNote(); note != "" {
			c.log.Warn("transparent TLS: "+note, "marbles", m.TTLSMarbles())
		}
		return secrets, nil
	})
}

// canSetManifest refuses to set a manifest in a state that has one.
func canSetManifest(state State) error {
	if state != StateAcceptingManifest && state != StateRecovery {
		return newError(KindFailedPrecondition, nil, "a manifest is already set (state: %s); change it with a manifest update", state)
	}
	return nil
}
