package core

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/marblemesh/marblemesh/internal/coordinator/recovery"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/internal/manifest"
)

// Recovery data is kept unencrypted beside the sealed state (the store's
// recovery-data blob), so that a Coordinator that cannot unseal the state
// can still check the owners' recovery secrets one by one. It is JSON:
//
//	{"version": 1, "layout": "single"|"xor"|"shamir", "threshold": k,
//	 "keys": {"<recovery key name>": {"publicKey": <PKIX DER, base64>,
//	                                  "shareHash": <SHA-256, base64>}}}
//
// shareHash is SHA-256(shareHashContext ‖ share) of the plaintext share the
// key's owner received. Nothing in it is secret: public keys, and hashes of
// uniformly random 32- or 33-byte values. The blob is authenticated as part
// of the state's encryption, so a forged blob is only noticed once the data
// key is put together (Unlock then fails); before that it can at worst
// make the Coordinator refuse genuine secrets.
const (
	recoveryDataVersion = 1
	layoutSingle        = "single"
	layoutXOR           = "xor"
	layoutShamir        = "shamir"
	shareHashContext    = "marblemesh/recovery/share/v1\x00"
	// maxEncryptedShare bounds what is decrypted with the ephemeral key.
	maxEncryptedShare = 2048
)

type recoveryData struct {
	Version   int                        `json:"version"`
	Layout    string                     `json:"layout"`
	Threshold int                        `json:"threshold"`
	Keys      map[string]recoveryKeyInfo `json:"keys"`
}

type recoveryKeyInfo struct {
	PublicKey []byte `json:"publicKey"`
	ShareHash []byte `json:"shareHash"`
}

func shareHash(share []byte) []byte {
	h := sha256.New()
	h.Write([]byte(shareHashContext))
	h.Write(share)
	return h.Sum(nil)
}

// recoveryLayout returns the layout and the number of shares needed for n
// recovery keys and a manifest RecoveryThreshold.
func recoveryLayout(n int, threshold uint) (string, int) {
	switch {
	case n == 1:
		return layoutSingle, 1
	case threshold == 0 || int(threshold) == n:
		return layoutXOR, n
	}
	return layoutShamir, int(threshold)
}

// errNoRecoveryData is why a state without recovery data cannot be
// recovered.
var errNoRecoveryData = errors.New("no recovery data is stored beside the sealed state (the manifest had no recovery keys)")

// parseRecoveryData decodes and checks recovery data.
func parseRecoveryData(blob []byte) (*recoveryData, map[string]*rsa.PublicKey, error) {
	if len(blob) == 0 {
		return nil, nil, errNoRecoveryData
	}
	var rd recoveryData
	if err := json.Unmarshal(blob, &rd); err != nil {
		return nil, nil, fmt.Errorf("decoding recovery data: %w", err)
	}
	if rd.Version != recoveryDataVersion {
		return nil, nil, fmt.Errorf("recovery data has version %d, want %d", rd.Version, recoveryDataVersion)
	}
	n := len(rd.Keys)
	switch {
	case rd.Layout == layoutSingle && n == 1 && rd.Threshold == 1:
	case rd.Layout == layoutXOR && n >= 2 && rd.Threshold == n:
	case rd.Layout == layoutShamir && rd.Threshold >= 2 && rd.Threshold < n:
	default:
		return nil, nil, fmt.Errorf("recovery data has an invalid layout: %q with threshold %d for %d keys", rd.Layout, rd.Threshold, n)
	}
	pubs := make(map[string]*rsa.PublicKey, n)
	seen := make(map[string]string, n)
	for name, k := range rd.Keys {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			return nil, nil, fmt.Errorf("recovery data: key %q: %w", name, err)
		}
		rsaPub, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, nil, fmt.Errorf("recovery data: key %q is a %T, not an RSA key", name, pub)
		}
		if len(k.ShareHash) != sha256.Size {
			return nil, nil, fmt.Errorf("recovery data: key %q has a share hash of %d bytes", name, len(k.ShareHash))
		}
		if other, dup := seen[string(k.ShareHash)]; dup {
			return nil, nil, fmt.Errorf("recovery data: keys %q and %q have the same share", other, name)
		}
		seen[string(k.ShareHash)] = name
		pubs[name] = rsaPub
	}
	return &rd, pubs, nil
}

// recoverySession collects the owners' recovery secrets in state 1. It is
// kept in memory only: after a restart the owners upload their secrets
// again.
type recoverySession struct {
	// blob is the recovery data the session was made from.
	blob    []byte
	data    *recoveryData
	pubs    map[string]*rsa.PublicKey
	dataErr error
	// shares are the verified plaintext shares by recovery key name, and
	// sigs the owners' signatures over them, which let a peer verify a
	// share it is handed (RecoveryShares).
	shares map[string][]byte
	sigs   map[string][]byte
}

func newRecoverySession(blob []byte) *recoverySession {
	rd, pubs, err := parseRecoveryData(blob)
	return &recoverySession{blob: bytes.Clone(blob), data: rd, pubs: pubs, dataErr: err, shares: map[string][]byte{}, sigs: map[string][]byte{}}
}

// sameData reports whether the session was made from the recovery data
// blob.
func (s *recoverySession) sameData(blob []byte) bool {
	return bytes.Equal(s.blob, blob)
}

// usable explains why recovery is impossible, or returns nil. s may be nil.
func (s *recoverySession) usable() error {
	if s != nil && s.data != nil {
		return nil
	}
	reason := errNoRecoveryData
	if s != nil && s.dataErr != nil {
		reason = s.dataErr
	}
	return newError(KindFailedPrecondition, reason, "the stored state cannot be recovered; set a new manifest to start over")
}

// owner returns the recovery key whose share is share.
func (s *recoverySession) owner(share []byte) (string, bool) {
	h := shareHash(share)
	for name, k := range s.data.Keys {
		if bytes.Equal(k.ShareHash, h) {
			return name, true
		}
	}
	return "", false
}

// combine puts the data key together from the collected shares.
func (s *recoverySession) combine() ([]byte, error) {
	names := make([]string, 0, len(s.shares))
	for n := range s.shares {
		names = append(names, n)
	}
	sort.Strings(names)
	shares := make([][]byte, len(names))
	for i, n := range names {
		shares[i] = s.shares[n]
	}
	switch s.data.Layout {
	case layoutSingle:
		return slices.Clone(shares[0]), nil
	case layoutXOR:
		return recovery.CombineXOR(shares)
	default:
		return recovery.CombineShamir(shares)
	}
}

// resetWithRecovery replaces the stored state with encoded under a new
// data key sealed in the manifest's seal mode, together with the recovery
// data for m's recovery keys, in one store step: a crash leaves either the
// earlier state or the new one with its recovery data. It returns each
// owner's share of the new data key encrypted with the owner's key. c.mu
// must be held.
func (c *Core) resetWithRecovery(ctx context.Context, encoded map[string][]byte, m *manifest.Manifest) (map[string][]byte, error) {
	var secrets map[string][]byte
	err := c.resetStore(ctx, encoded, store.ResetOptions{
		Mode: c.sealModeOf(m),
		RecoveryData: func(dataKey []byte) ([]byte, error) {
			defer clear(dataKey)
			blob, s, err := recoveryFor(dataKey, m)
			secrets = s
			return blob, err
		},
	})
	if err != nil {
		return nil, err
	}
	c.noteSealMode()
	return secrets, nil
}

// recoveryFor splits dataKey among the manifest's recovery keys and
// returns the recovery data to store beside the state and each owner's
// share encrypted with the owner's key. Without recovery keys there is no
// recovery data.
func recoveryFor(dataKey []byte, m *manifest.Manifest) ([]byte, map[string][]byte, error) {
	if len(m.RecoveryKeys) == 0 {
		return nil, nil, nil
	}
	names := make([]string, 0, len(m.RecoveryKeys))
	for n := range m.RecoveryKeys {
		names = append(names, n)
	}
	sort.Strings(names)
	shares, err := recovery.Shares(rand.Reader, dataKey, len(names), m.Config.RecoveryThreshold)
	if err != nil {
		return nil, nil, fmt.Errorf("splitting the data key: %w", err)
	}
	defer func() {
		for _, s := range shares {
			clear(s)
		}
	}()
	layout, threshold := recoveryLayout(len(names), m.Config.RecoveryThreshold)
	rd := recoveryData{Version: recoveryDataVersion, Layout: layout, Threshold: threshold, Keys: make(map[string]recoveryKeyInfo, len(names))}
	secrets := make(map[string][]byte, len(names))
	for i, name := range names {
		pub, err := manifest.ParseRecoveryKey(m.RecoveryKeys[name])
		if err != nil {
			return nil, nil, fmt.Errorf("recovery key %q: %w", name, err)
		}
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, nil, fmt.Errorf("recovery key %q: %w", name, err)
		}
		rd.Keys[name] = recoveryKeyInfo{PublicKey: der, ShareHash: shareHash(shares[i])}
		if secrets[name], err = recovery.EncryptShare(rand.Reader, m.RecoveryKeys[name], shares[i]); err != nil {
			return nil, nil, fmt.Errorf("recovery key %q: %w", name, err)
		}
	}
	blob, err := json.Marshal(rd)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding recovery data: %w", err)
	}
	return blob, secrets, nil
}

// checkRecoveryData compares the stored recovery data with the manifest's
// recovery keys at boot and reports a mismatch, which leaves the state
// unrecoverable. The store writes a new data key and its recovery data in
// one step, so this means the files were changed behind its back.
func (c *Core) checkRecoveryData(m *manifest.Manifest) {
	if len(m.RecoveryKeys) == 0 {
		return
	}
	rd, pubs, err := parseRecoveryData(c.cfg.Store.RecoveryData())
	if err == nil {
		err = recoveryDataMatches(rd, pubs, m)
	}
	if err != nil {
		c.log.Error("the recovery data does not match the manifest's recovery keys: this state cannot be recovered if it ever fails to unseal; change the recovery keys with a manifest update to get new recovery secrets", "error", err)
	}
}

// recoveryDataMatches checks recovery data against a manifest.
func recoveryDataMatches(rd *recoveryData, pubs map[string]*rsa.PublicKey, m *manifest.Manifest) error {
	layout, threshold := recoveryLayout(len(m.RecoveryKeys), m.Config.RecoveryThreshold)
	if rd.Layout != layout || rd.Threshold != threshold || len(rd.Keys) != len(m.RecoveryKeys) {
		return fmt.Errorf("recovery data has layout %s with %d of %d keys, the manifest %s with %d of %d", rd.Layout, rd.Threshold, len(rd.Keys), layout, threshold, len(m.RecoveryKeys))
	}
	for name, pemKey := range m.RecoveryKeys {
		want, err := manifest.ParseRecoveryKey(pemKey)
		if err != nil {
			return fmt.Errorf("recovery key %q: %w", name, err)
		}
		if got, ok := pubs[name]; !ok || !got.Equal(want) {
			return fmt.Errorf("recovery key %q differs from the recovery data", name)
		}
	}
	return nil
}

// endRecovery forgets collected shares and the ephemeral key. c.mu must be
// held.
func (c *Core) endRecovery() {
	c.recovery = nil
	c.ephMu.Lock()
	c.ephemeral = nil
	c.ephMu.Unlock()
}

// RecoveryPublicKey returns the PKIX DER encoding of the ephemeral RSA key
// owners may encrypt their recovery secrets with (RSA-OAEP, SHA-256). The
// key is created on first use and lives until recovery ends or the
// Coordinator restarts.
func (c *Core) RecoveryPublicKey() ([]byte, error) {
	c.mu.Lock()
	v, rs := c.view.Load(), c.recovery
	c.mu.Unlock()
	if v.state != StateRecovery {
		return nil, newError(KindFailedPrecondition, nil, "the Coordinator is not in recovery mode (state: %s)", v.state)
	}
	if err := rs.usable(); err != nil {
		return nil, err
	}
	c.ephMu.Lock()
	defer c.ephMu.Unlock()
	if c.ephemeral == nil {
		k, err := rsa.GenerateKey(rand.Reader, c.cfg.RecoveryKeyBits)
		if err != nil {
			return nil, fmt.Errorf("generating the ephemeral recovery key: %w", err)
		}
		c.ephemeral = k
	}
	der, err := x509.MarshalPKIXPublicKey(&c.ephemeral.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encoding the ephemeral recovery key: %w", err)
	}
	return der, nil
}

// isPlainShareSize reports whether n is the size of a plaintext recovery
// secret: a 16-byte legacy key, a 32-byte data key or XOR share, or a
// 33-byte Shamir share.
func isPlainShareSize(n int) bool { return n == 16 || n == 32 || n == 33 }

// ErrForeignRecoveryKey marks a recovery secret encrypted for an ephemeral
// recovery key this Coordinator does not hold: one from before a restart,
// or another replica's when several serve one state.
var ErrForeignRecoveryKey = errors.New("encrypted for an ephemeral recovery key this Coordinator does not hold")

// decryptShare decrypts a recovery secret encrypted with the ephemeral key.
func (c *Core) decryptShare(ct []byte) ([]byte, error) {
	if len(ct) > maxEncryptedShare {
		return nil, newError(KindInvalidArgument, nil, "the recovery secret is %d bytes: neither a plaintext secret (16, 32 or 33 bytes) nor one encrypted with the ephemeral recovery key", len(ct))
	}
	c.ephMu.Lock()
	key := c.ephemeral
	c.ephMu.Unlock()
	if key == nil {
		return nil, newError(KindInvalidArgument, ErrForeignRecoveryKey, "the recovery secret is %d bytes, so it must be encrypted with the ephemeral recovery key, but this Coordinator has not created one since it started: fetch recover/public-key and encrypt the secret again", len(ct))
	}
	share, err := rsa.DecryptOAEP(sha256.New(), nil, key, ct, nil)
	if err != nil {
		return nil, newError(KindInvalidArgument, ErrForeignRecoveryKey, "the recovery secret cannot be decrypted with the current ephemeral recovery key (a key from before a restart?); fetch recover/public-key and encrypt it again")
	}
	if !isPlainShareSize(len(share)) {
		return nil, newError(KindInvalidArgument, nil, "the decrypted recovery secret is %d bytes, want 16, 32 or 33", len(share))
	}
	return share, nil
}

// DecryptRecoverySecret decrypts, for a peer replica that was handed it, a
// recovery secret encrypted with this Coordinator's ephemeral recovery key
// (recover/public-key may be answered by one replica and the upload reach
// another). It answers only in recovery, and only with a secret that
// belongs to a recovery key of the stored state; the caller must have
// attested the peer, which then learns no more than the owner's upload
// would have told it.
func (c *Core) DecryptRecoverySecret(ct []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.view.Load().state; st != StateRecovery {
		return nil, newError(KindFailedPrecondition, nil, "the Coordinator is not in recovery mode (state: %s)", st)
	}
	rs := c.recovery
	if err := rs.usable(); err != nil {
		return nil, err
	}
	share, err := c.decryptShare(ct)
	if err != nil {
		return nil, err
	}
	if _, ok := rs.owner(share); !ok {
		clear(share)
		return nil, newError(KindInvalidArgument, nil, "the decrypted recovery secret does not belong to any recovery key of the stored state")
	}
	return share, nil
}

// RecoveryShare is one owner's plaintext recovery secret with the owner's
// signature over it, as Recover verified it.
type RecoveryShare struct {
	Secret, Signature []byte
}

// RecoveryShares returns copies of the recovery secrets c has verified in
// the current recovery, sorted by recovery key name; nil outside
// recovery. Replicas that serve one state hand them to each other over
// attested channels (AddRecoveryShares), so that secrets uploaded to
// different replicas are put together.
func (c *Core) RecoveryShares() []RecoveryShare {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs := c.recovery
	if c.view.Load().state != StateRecovery || rs == nil {
		return nil
	}
	names := slices.Sorted(maps.Keys(rs.shares))
	out := make([]RecoveryShare, 0, len(names))
	for _, n := range names {
		out = append(out, RecoveryShare{Secret: slices.Clone(rs.shares[n]), Signature: slices.Clone(rs.sigs[n])})
	}
	return out
}

// AddRecoveryShares takes recovery secrets a peer replica holds, each
// verified as Recover verifies an upload; ones c holds already are
// skipped, and ones that do not verify are logged and left out. With
// complete set, c puts the data key together once it has enough and
// resumes as Recover does; otherwise it only keeps them, so that the
// replica an owner's upload reaches can collect them (a peer passing
// secrets on never unlocks the state itself, which would race the replica
// that asked). It returns how many secrets are still missing (0 once c
// has left recovery) and the error of the unlock, if one was tried.
func (c *Core) AddRecoveryShares(ctx context.Context, shares []RecoveryShare, complete bool) (int, error) {
	return writeResult(ctx, c, "taking recovery secrets from a peer", func() (int, error) {
		if c.view.Load().state != StateRecovery {
			return 0, nil
		}
		rs := c.recovery
		if err := rs.usable(); err != nil {
			return 0, err
		}
		for _, sh := range shares {
			if !isPlainShareSize(len(sh.Secret)) {
				c.log.Warn("refused a peer's recovery secret", "error", fmt.Sprintf("%d bytes, want 16, 32 or 33", len(sh.Secret)))
				continue
			}
			name, err := rs.verify(sh.Secret, sh.Signature)
			if err != nil {
				c.log.Warn("refused a peer's recovery secret", "error", err)
				continue
			}
			if _, dup := rs.shares[name]; dup {
				continue
			}
			rs.shares[name], rs.sigs[name] = slices.Clone(sh.Secret), slices.Clone(sh.Signature)
			c.log.Info("recovery secret taken from a peer", "recoveryKey", name)
		}
		missing := rs.data.Threshold - len(rs.shares)
		if missing > 0 || !complete {
			return max(missing, 0), nil
		}
		return 0, c.unlockWithShares(ctx, rs, "")
	})
}

// foreignOnlyIfPlausible keeps ErrForeignRecoveryKey in err, which makes
// a distributed Coordinator ask its peers to decrypt the secret, only when
// the upload could be genuine: a ciphertext of an ephemeral key's size
// and a signature of the size of one of the recovery keys. Anything else
// is refused here with the same reason, so that an unauthenticated upload
// cannot make every peer decrypt it.
func (s *recoverySession) foreignOnlyIfPlausible(err error, ctLen, sigLen, ephemeralBits int) error {
	var e *Error
	if !errors.Is(err, ErrForeignRecoveryKey) || !errors.As(err, &e) {
		return err
	}
	if ctLen == (ephemeralBits+7)/8 {
		for _, pub := range s.pubs {
			if pub.Size() == sigLen {
				return err
			}
		}
	}
	return newError(e.Kind, nil, "%s", e.Reason)
}

// verify returns the recovery key whose secret share is, checking the
// owner's PKCS#1 v1.5 SHA-256 signature over it.
func (s *recoverySession) verify(share, signature []byte) (string, error) {
	name, ok := s.owner(share)
	if !ok {
		return "", newError(KindInvalidArgument, nil, "the recovery secret does not belong to any recovery key of the stored state")
	}
	digest := sha256.Sum256(share)
	if err := rsa.VerifyPKCS1v15(s.pubs[name], crypto.SHA256, digest[:], signature); err != nil {
		return "", newError(KindUnauthenticated, nil, "the signature does not verify with recovery key %q (want PKCS#1 v1.5 with SHA-256 over the plaintext secret)", name)
	}
	return name, nil
}

// Recover takes one owner's recovery secret with the owner's PKCS#1 v1.5
// SHA-256 signature over the plaintext secret. A secret that is not 16, 32
// or 33 bytes long is first decrypted with the ephemeral recovery key.
// Each secret must belong to a recovery key of the stored state, carry
// that key's signature, and come only once. When enough have arrived, the
// data key is put together, the state is unlocked and sealed again for
// this machine, and the Coordinator resumes (state 3). It returns how many
// secrets are still missing.
func (c *Core) Recover(ctx context.Context, secret, signature []byte) (int, error) {
	return writeResult(ctx, c, "recovering the stored state", func() (int, error) {
		v := c.view.Load()
		if v.state != StateRecovery {
			return 0, newError(KindFailedPrecondition, nil, "the Coordinator is not in recovery mode (state: %s)", v.state)
		}
		rs := c.recovery
		if err := rs.usable(); err != nil {
			return 0, err
		}
		if len(secret) == 0 {
			return 0, newError(KindInvalidArgument, nil, "the recovery secret is empty")
		}
		share := secret
		if !isPlainShareSize(len(secret)) {
			var err error
			if share, err = c.decryptShare(secret); err != nil {
				return 0, rs.foreignOnlyIfPlausible(err, len(secret), len(signature), c.cfg.RecoveryKeyBits)
			}
		}
		name, err := rs.verify(share, signature)
		if err != nil {
			return 0, err
		}
		if _, dup := rs.shares[name]; dup {
			if rs.data.Threshold-len(rs.shares) <= 0 {
				// The set was complete, but unlocking lost a race with
				// another Coordinator's write (write runs this again).
				return 0, c.unlockWithShares(ctx, rs, "")
			}
			return 0, newError(KindInvalidArgument, nil, "the recovery secret of key %q has already been uploaded", name)
		}
		rs.shares[name], rs.sigs[name] = slices.Clone(share), slices.Clone(signature)
		if missing := rs.data.Threshold - len(rs.shares); missing > 0 {
			c.log.Info("recovery secret accepted", "recoveryKey", name, "missing", missing)
			return missing, nil
		}
		return 0, c.unlockWithShares(ctx, rs, name)
	})
}

// unlockWithShares puts the data key together from the shares rs holds,
// unlocks the stored state with it and resumes. last names the share that
// completed the set, forgotten again when the unlock fails for a reason
// other than the shares ("" if none). c.mu must be held.
func (c *Core) unlockWithShares(ctx context.Context, rs *recoverySession, last string) error {
	forget := func() {
		if last != "" {
			delete(rs.shares, last)
			delete(rs.sigs, last)
		}
	}
	dataKey, err := rs.combine()
	if err != nil {
		forget()
		return fmt.Errorf("combining recovery secrets: %w", err)
	}
	defer clear(dataKey)
	stored, err := c.cfg.Store.Unlock(ctx, dataKey)
	switch {
	case errors.Is(err, store.ErrWrongDataKey):
		// The shares matched the recovery data, so the recovery data does
		// not belong to the state: start over.
		rs.shares, rs.sigs = map[string][]byte{}, map[string][]byte{}
		return newError(KindFailedPrecondition, nil, "the recovery secrets do not open the stored state (the recovery data beside it does not match it); all uploaded secrets were discarded")
	case errors.Is(err, store.ErrCorrupt):
		rs.shares, rs.sigs = map[string][]byte{}, map[string][]byte{}
		c.log.Error("the recovery secrets open the data key, but the stored state is damaged", "error", err)
		return newError(KindDataLoss, nil, "the recovery secrets are right, but the stored state is damaged and cannot be opened with any key; set a new manifest to start over")
	case errors.Is(err, store.ErrConflict):
		// Another Coordinator sharing the store wrote it while it was
		// being unlocked here (perhaps a peer that unlocked it first with
		// the same secrets). The shares are kept: write reads the stored
		// state again and the operation runs again with the full set.
		return fmt.Errorf("unlocking the stored state: %w", err)
	case err != nil:
		forget()
		return fmt.Errorf("unlocking the stored state: %w", err)
	}
	st, err := restore(stored)
	if err != nil {
		return fmt.Errorf("the recovered state is inconsistent: %w", err)
	}
	if st.dep.manifest != nil {
		if err := recoveryDataMatches(rs.data, rs.pubs, st.dep.manifest); err != nil {
			c.log.Error("the recovery data does not match the recovered manifest", "error", err)
		}
	}
	c.adopt(st)
	c.rememberStored(stored)
	c.unsealErr = nil
	c.endRecovery()
	c.enforceSealMode(ctx, st.dep.manifest)
	state := StateAcceptingManifest
	if st.dep.manifest != nil {
		state = StateAcceptingMarbles
	}
	if err := c.publish(state, st.dep); err != nil {
		return fmt.Errorf("the state is unlocked and sealed for this machine, but cannot be served; restart the Coordinator: %w", err)
	}
	c.log.Info("recovered the stored state with the owners' recovery secrets", "state", state.String())
	return nil
}
