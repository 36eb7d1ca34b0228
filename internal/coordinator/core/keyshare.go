package core

import (
	"context"
	"errors"

	"github.com/marblemesh/marblemesh/internal/coordinator/store"
)

// Key sharing between Coordinators that share a store on different
// platforms: one that has the state open hands the state's key-encryption
// key to one that cannot unseal it (store.ErrNeedKey), over a channel the
// caller has attested on both ends.

// KeyForPeer returns the key-encryption key of the state c serves and the
// highest generation of it c's store has seen, for a peer to open the
// state with (JoinWithKey). ok is false unless c serves opened state from
// a store that shares keys.
func (c *Core) KeyForPeer() (kek []byte, generation uint64, ok bool) {
	ks, sharer := c.cfg.Store.(store.KeySharer)
	if !sharer {
		return nil, 0, false
	}
	switch c.view.Load().state {
	case StateAcceptingManifest, StateAcceptingMarbles:
	default:
		return nil, 0, false
	}
	return ks.KeyEncryptionKey()
}

// NeedsKey reports whether c is in recovery because its store holds no key
// of this platform for the stored state, so that a peer's key-encryption
// key (JoinWithKey) can open it instead of the owners' recovery secrets.
func (c *Core) NeedsKey() bool {
	return c.needKey.Load() && c.view.Load().state == StateRecovery
}

// JoinWithKey opens the stored state with a key-encryption key handed over
// by a peer that serves it, refusing state older than generation (the
// peer's), and serves it exactly as after a successful load at start; the
// key is sealed for this platform, so later starts need no peer. It fails
// with KindFailedPrecondition unless c is waiting for a key (NeedsKey).
func (c *Core) JoinWithKey(ctx context.Context, kek []byte, generation uint64) error {
	ks, sharer := c.cfg.Store.(store.KeySharer)
	if !sharer {
		return newError(KindFailedPrecondition, nil, "this Coordinator's store does not share keys with other Coordinators")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.NeedsKey() {
		return newError(KindFailedPrecondition, nil, "this Coordinator is not waiting for a key (state: %s)", c.view.Load().state)
	}
	stored, err := ks.LoadWithKEK(ctx, kek, generation)
	switch {
	case errors.Is(err, store.ErrRollback):
		c.log.Error("a peer's key opens stored state older than the peer has seen: it was rolled back; staying in recovery", "error", err)
		return newError(KindFailedPrecondition, err, "the stored state is older than the generation %d the peer has seen (rolled back)", generation)
	case errors.Is(err, store.ErrUnseal):
		// The store is in the sealed phase again; so is c, still in
		// recovery and waiting for a key.
		return newError(KindInvalidArgument, err, "the key does not open the stored state")
	case err != nil:
		return newError(KindUnavailable, err, "reading the stored state with a peer's key")
	}
	return c.serve(ctx, stored, true, "with a key-encryption key from a peer")
}

// RaiseGenerationFloor makes c refuse stored state older than gen, the
// generation a peer has seen: when gen is above what c serves, c reads
// the stored state again, and fails with an error wrapping
// store.ErrRollback if it is older than gen (c then keeps serving what it
// has and refuses writes; see Reload).
func (c *Core) RaiseGenerationFloor(ctx context.Context, gen uint64) error {
	ks, sharer := c.cfg.Store.(store.KeySharer)
	if !sharer {
		return newError(KindFailedPrecondition, nil, "this Coordinator's store does not keep generations shared with other Coordinators")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, served, open := ks.KeyEncryptionKey()
	ks.RaiseGenerationFloor(gen)
	if open && served >= gen {
		return nil
	}
	if err := c.load(ctx, false); err != nil {
		return newError(KindUnavailable, err, "reading the stored state again after a peer reported generation %d", gen)
	}
	return nil
}

// RollbackRefused returns the error of the last read of the stored state
// when it was refused as rolled back (wrapping store.ErrRollback), nil
// when the last read was not. While it is set, c serves the state it has
// and refuses writes.
func (c *Core) RollbackRefused() error {
	if p := c.rollback.Load(); p != nil {
		return *p
	}
	return nil
}
