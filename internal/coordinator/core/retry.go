package core

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/marblemesh/marblemesh/internal/coordinator/store"
)

// maxWriteAttempts bounds how often one operation runs when its store
// write keeps losing races to other Coordinators sharing the store.
const maxWriteAttempts = 12

// Bounds of the pause after a lost race: up to retryPauseBase before the
// second attempt, doubling with each further attempt up to
// retryPauseMax. The pause is drawn at random within that bound, so that
// Coordinators that lost to each other do not try again in step; the
// pauses of all attempts add up to well under a second.
const (
	retryPauseBase = time.Millisecond
	retryPauseMax  = 32 * time.Millisecond
)

// retryPauseBound is the longest pause before attempt (2 or later).
func retryPauseBound(attempt int) time.Duration {
	d := retryPauseBase
	for i := 2; i < attempt && d < retryPauseMax; i++ {
		d *= 2
	}
	return min(d, retryPauseMax)
}

// pauseBeforeRetry waits a random time up to retryPauseBound(attempt),
// or until ctx is done.
func pauseBeforeRetry(ctx context.Context, attempt int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	//nolint:gosec // G404: the pause only spreads retries over time; it protects nothing
	d := time.Duration(rand.Int64N(int64(retryPauseBound(attempt)) + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// write runs op with c.mu held. When op fails because its store write
// lost a race (store.ErrConflict: another Coordinator sharing the store
// wrote first), the stored state is read again, becomes c's state and
// view, and op runs again from the start, so that it checks the request
// against the newer state: a request that is no longer valid fails as it
// would have, had it arrived after the other write. After
// maxWriteAttempts lost races write gives up with an error of
// KindUnavailable. Between attempts it pauses a random time that grows
// with each attempt (pauseBeforeRetry). A write whose outcome the store cannot tell is not run
// again (see unknownOutcome). A write that the store could not even begin
// (store.ErrUnavailable) fails with KindUnavailable; one refused because
// an earlier failed read left the store without open state
// (store.ErrNotOpen) reads the stored state first and runs again.
//
// op must read everything it checks from c on every call and change
// nothing in c when it fails.
//
// A Coordinator whose Config.Freshness says that its state is not current
// refuses the write at once with KindUnavailable: its checks would run
// against a state that may be behind the stored one.
func (c *Core) write(ctx context.Context, what string, op func() error) error {
	if f := c.cfg.Freshness; f != nil {
		if ok, reason := f.Current(); !ok {
			return newError(KindUnavailable, nil, "%s: this Coordinator is not current with the shared state (%s); it takes no writes until it is: try again, or through another Coordinator", what, reason)
		}
	}
	return c.writeAt(ctx, what, op)
}

// writeAt is write without the freshness check, for the start.
func (c *Core) writeAt(ctx context.Context, what string, op func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rb := c.rollback.Load(); rb != nil {
		// Read again: the newer state may be back.
		if err := c.load(ctx, false); err != nil {
			return newError(KindUnavailable, *rb, "%s: the stored state is older than state this Coordinator has served (rolled back); writes are refused until the newer state is back", what)
		}
	}
	for attempt := 1; ; attempt++ {
		err := op()
		switch {
		case errors.Is(err, store.ErrBroken):
			return c.unknownOutcome(ctx, what, err)
		case errors.Is(err, store.ErrUnavailable):
			return newError(KindUnavailable, err, "%s: the store cannot be reached; nothing was written; try again", what)
		case errors.Is(err, store.ErrNotOpen) && !errors.Is(err, store.ErrUnseal):
			// An earlier reading of the stored state failed (the store
			// was unreachable) and left the store without open state:
			// read it again before the write can run.
			if rerr := c.load(ctx, false); rerr != nil {
				return newError(KindUnavailable, rerr, "%s: the stored state cannot be read; try again", what)
			}
			if attempt == maxWriteAttempts {
				return newError(KindUnavailable, err, "%s: the stored state could not be kept open; try again", what)
			}
			continue
		case !errors.Is(err, store.ErrConflict):
			return err
		}
		if attempt == maxWriteAttempts {
			c.log.Warn("a write lost every race with other Coordinators; giving up", "operation", what, "attempts", attempt)
			return newError(KindUnavailable, err, "%s: the stored state was changed by other Coordinators during each of %d attempts; try again", what, attempt)
		}
		if cerr := pauseBeforeRetry(ctx, attempt+1); cerr != nil {
			return newError(KindUnavailable, cerr, "%s: the stored state was changed by another Coordinator, and the request ended before it could be tried again", what)
		}
		c.log.Info("a write lost a race with another Coordinator; reading the stored state again", "operation", what, "attempt", attempt)
		if rerr := c.load(ctx, false); rerr != nil {
			return newError(KindUnavailable, rerr, "%s: the stored state was changed by another Coordinator and cannot be read again; try again", what)
		}
	}
}

// unknownOutcome answers a write whose effect the store cannot tell (err
// wraps store.ErrBroken: it failed after it may have reached the store).
// Running it again could apply it twice, so the caller gets a retryable
// error; the stored state is read again, which tells what happened and
// lets the store take writes again. While it cannot be read, writes stay
// refused and each one tries again.
func (c *Core) unknownOutcome(ctx context.Context, what string, err error) error {
	if rerr := c.load(ctx, false); rerr != nil {
		c.log.Warn("a write's outcome is unknown and the stored state cannot be read again; writes are refused until it can", "operation", what, "error", err, "readError", rerr)
	} else {
		c.log.Warn("a write's outcome is unknown; the stored state was read again", "operation", what, "error", err)
	}
	return newError(KindUnavailable, err, "%s: the store did not confirm the write, which may or may not have happened; check and try again", what)
}

// Reload reads the stored state again and serves it: what other
// Coordinators sharing the store wrote becomes visible here. A Coordinator
// whose stored state cannot be unsealed stays in recovery; one that has
// opened the state does not go back to recovery or to an empty state, and
// keeps serving what it had when the stored state cannot be read. When
// only activation counts, monotonic counters or update log entries
// changed, only they are taken over and the rest is not parsed again
// (see serve).
func (c *Core) Reload(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.load(ctx, false); err != nil {
		return newError(KindUnavailable, err, "reading the stored state again")
	}
	return nil
}

// errNoStoredState is returned by load at boot when there is nothing
// stored yet.
var errNoStoredState = errors.New("nothing is stored yet")

// load reads the stored state and serves it: the path both of the start
// (boot true) and of a reload after another Coordinator wrote. The
// one-time work of the start (checking the recovery data against the
// manifest, sealing the data key in the manifest's seal mode) is done at
// boot only; a reload only takes over what is stored, the seal mode
// included. c.mu must be held or c unshared.
func (c *Core) load(ctx context.Context, boot bool) (err error) {
	if f := c.cfg.Freshness; f != nil && !boot {
		done := f.BeginLoad()
		defer func() { done(err) }()
	}
	stored, err := c.cfg.Store.Load(ctx)
	switch {
	case errors.Is(err, store.ErrNoState):
		if boot || c.view.Load().state == StateUninitialized {
			return errNoStoredState
		}
		return fmt.Errorf("the stored state has disappeared: %w", err)
	case errors.Is(err, store.ErrUnseal):
		return c.loadSealed(err)
	case errors.Is(err, store.ErrRollback):
		return c.refuseRollback(err)
	case err != nil:
		return fmt.Errorf("loading stored state: %w", err)
	}
	return c.serve(ctx, stored, boot, "")
}

// serve takes over stored, just read, as c's state (see load); via names
// how it was opened, for the log, when not by the store's own means. A
// reload that finds only activation counts, monotonic counters or update
// log entries changed takes over just those (see serveChanges); anything
// else is read in full. c.mu must be held or c unshared.
func (c *Core) serve(ctx context.Context, stored map[string][]byte, boot bool, via string) error {
	d := c.diffStored(stored)
	if d.cheap && c.incremental(boot, via) {
		kind := reloadUnchanged
		if !d.empty() {
			if err := c.serveChanges(stored, d); err != nil {
				return err
			}
			kind = reloadIncremental
			c.log.Debug("took over counters written by another Coordinator", "changed", len(d.changed), "removed", len(d.removed))
		}
		c.noteSealMode()
		c.metrics.reload(kind)
		return nil
	}
	st, err := restore(stored)
	if err != nil {
		return fmt.Errorf("stored state is inconsistent: %w", err)
	}
	state := StateAcceptingManifest
	if st.dep.manifest != nil {
		state = StateAcceptingMarbles
	}
	if boot {
		if st.dep.manifest != nil {
			c.checkRecoveryData(st.dep.manifest)
		}
		c.enforceSealMode(ctx, st.dep.manifest)
	}
	if err := c.publish(state, st.dep); err != nil {
		return err
	}
	c.adopt(st)
	c.rememberRestored(stored, d)
	if !boot {
		c.metrics.reload(reloadFull)
	}
	c.noteSealMode()
	c.needKey.Store(false)
	if c.rollback.Swap(nil) != nil {
		c.metrics.setRollback(false)
		c.log.Info("the stored state is no longer older than state seen before; writes are accepted again")
	}
	if c.unsealErr != nil || c.recovery != nil {
		c.unsealErr = nil
		c.endRecovery()
	}
	switch {
	case via != "":
		c.log.Info("opened the stored state "+via, "state", state.String(), "sealMode", string(c.cfg.Store.SealMode()))
	case boot:
		c.log.Info("resumed from stored state", "state", state.String(), "sealMode", string(c.cfg.Store.SealMode()))
	default:
		c.log.Info("took over the stored state written by another Coordinator", "state", state.String(), "sealMode", string(c.cfg.Store.SealMode()))
	}
	return nil
}

// refuseRollback handles stored state older than state seen before (err
// wraps store.ErrRollback): c keeps serving what it has in memory, or
// stays where it is, and refuses writes until a read finds state at least
// as new again.
func (c *Core) refuseRollback(err error) error {
	if c.rollback.Swap(&err) == nil {
		c.metrics.setRollback(true)
	}
	c.log.Error("the stored state is older than state this Coordinator has seen: it was rolled back; serving the state in memory and refusing writes", "error", err)
	return fmt.Errorf("loading stored state: %w", err)
}

// loadSealed handles stored state that cannot be unsealed (err): a
// Coordinator that is starting, or already in recovery, is in recovery
// with the stored recovery data; one that serves opened state refuses to
// go back.
func (c *Core) loadSealed(err error) error {
	v := c.view.Load()
	if v.state != StateUninitialized && v.state != StateRecovery {
		c.noteSealMode()
		return fmt.Errorf("the stored state was changed by another Coordinator and cannot be unsealed here: %w", err)
	}
	c.unsealErr = err
	_, sharer := c.cfg.Store.(store.KeySharer)
	c.needKey.Store(sharer && errors.Is(err, store.ErrNeedKey))
	c.noteSealMode()
	blob := c.cfg.Store.RecoveryData()
	if c.recovery == nil || !c.recovery.sameData(blob) {
		if c.recovery != nil {
			c.log.Warn("the stored recovery data changed; recovery secrets uploaded before are discarded")
		}
		c.recovery = newRecoverySession(blob)
		if c.recovery.dataErr != nil {
			c.log.Error("the stored recovery data is unusable; the state cannot be recovered, only replaced by a new manifest", "error", c.recovery.dataErr)
		}
	}
	if v.state == StateRecovery {
		return nil
	}
	c.log.Warn("stored state cannot be unsealed; entering recovery mode", "error", err, "sealMode", string(c.cfg.Store.SealMode()))
	dep, derr := c.newCA()
	if derr != nil {
		return derr
	}
	// What recovery serves is not the stored state.
	c.stored = nil
	return c.publish(StateRecovery, dep)
}

// writeResult is write for an operation with a result.
func writeResult[T any](ctx context.Context, c *Core, what string, op func() (T, error)) (T, error) {
	var out T
	err := c.write(ctx, what, func() error {
		var err error
		out, err = op()
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}
