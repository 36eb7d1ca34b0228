package core

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// casState is one stored state shared by several casStores, with a
// version that every write raises.
type casState struct {
	mu      sync.Mutex
	mem     *store.Memory
	version uint64
}

func newCASState() *casState { return &casState{mem: store.NewMemory()} }

// casStore is a store.Store on a casState that behaves like a store shared
// by several Coordinators: a write fails with store.ErrConflict when
// another casStore wrote since this one last loaded or wrote, and every
// write fails so until Load. Tests can also make the next writes lose a
// race on purpose: each of them first runs before (another Coordinator's
// write that comes first), then fails.
type casStore struct {
	shared *casState

	mu      sync.Mutex
	seen    uint64
	stale   bool
	loads   int
	lose    int
	before  func()
	refused int
	// breakNext makes the next writes fail with an unknown outcome
	// (store.ErrBroken), applied or not as applyBroken says; broken
	// refuses writes until Load.
	breakNext   int
	applyBroken bool
	broken      bool
}

var _ store.Store = (*casStore)(nil)

func (s *casState) open() *casStore { return &casStore{shared: s} }

// breakNextWrite makes the next write fail with an unknown outcome; it
// happens when applied is true.
func (s *casStore) breakNextWrite(applied bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breakNext, s.applyBroken = 1, applied
}

// loseNext makes the next n writes lose a race to before.
func (s *casStore) loseNext(n int, before func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lose, s.before = n, before
}

func (s *casStore) counts() (loads, refused int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loads, s.refused
}

// writing runs a write of the shared memory store under the CAS rule.
func (s *casStore) writing(w func(*store.Memory) error) error {
	s.mu.Lock()
	if s.lose > 0 {
		s.lose--
		before := s.before
		s.stale = true
		s.refused++
		s.mu.Unlock()
		if before != nil {
			before()
		}
		return fmt.Errorf("cas store: %w (injected)", store.ErrConflict)
	}
	defer s.mu.Unlock()
	s.shared.mu.Lock()
	defer s.shared.mu.Unlock()
	if s.broken {
		return fmt.Errorf("cas store: %w", store.ErrBroken)
	}
	if s.breakNext > 0 {
		s.breakNext--
		s.broken = true
		if s.applyBroken && s.seen == s.shared.version && !s.stale {
			if err := w(s.shared.mem); err != nil {
				return err
			}
			s.shared.version++
		}
		return fmt.Errorf("cas store: %w (injected)", store.ErrBroken)
	}
	if s.stale || s.seen != s.shared.version {
		s.stale = true
		s.refused++
		return fmt.Errorf("cas store: %w", store.ErrConflict)
	}
	if err := w(s.shared.mem); err != nil {
		return err
	}
	s.shared.version++
	s.seen = s.shared.version
	return nil
}

func (s *casStore) Load(ctx context.Context) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shared.mu.Lock()
	defer s.shared.mu.Unlock()
	s.loads++
	s.seen, s.stale, s.broken = s.shared.version, false, false
	return s.shared.mem.Load(ctx)
}

func (s *casStore) Commit(ctx context.Context, changes map[string][]byte) error {
	return s.writing(func(m *store.Memory) error { return m.Commit(ctx, changes) })
}

func (s *casStore) Reset(ctx context.Context, state map[string][]byte) ([]byte, error) {
	return s.ResetWith(ctx, state, store.ResetOptions{})
}

func (s *casStore) ResetWith(ctx context.Context, state map[string][]byte, opts store.ResetOptions) ([]byte, error) {
	var key []byte
	err := s.writing(func(m *store.Memory) (err error) {
		key, err = m.ResetWith(ctx, state, opts)
		return err
	})
	return key, err
}

func (s *casStore) SetSealMode(ctx context.Context, mode seal.Mode) error {
	if s.SealMode() == mode {
		return nil
	}
	return s.writing(func(m *store.Memory) error { return m.SetSealMode(ctx, mode) })
}

func (s *casStore) Unlock(ctx context.Context, dataKey []byte) (map[string][]byte, error) {
	var out map[string][]byte
	err := s.writing(func(m *store.Memory) (err error) {
		out, err = m.Unlock(ctx, dataKey)
		return err
	})
	return out, err
}

func (s *casStore) SetRecoveryData(ctx context.Context, data []byte) error {
	return s.writing(func(m *store.Memory) error { return m.SetRecoveryData(ctx, data) })
}

func (s *casStore) SealMode() seal.Mode         { return s.shared.mem.SealMode() }
func (s *casStore) CanSeal(mode seal.Mode) bool { return s.shared.mem.CanSeal(mode) }
func (s *casStore) RecoveryData() []byte        { return s.shared.mem.RecoveryData() }
func (s *casStore) Close() error                { return nil }

// limitedManifest is the governance manifest with a marble type limited
// to limit activations.
func limitedManifest(u govUsers, limit int) map[string]any {
	m := govManifest(u, nil)
	section(m, "Marbles")["limited"] = map[string]any{
		"Package":        "frontend",
		"MaxActivations": limit,
		"Parameters":     map[string]any{"Files": map[string]any{"/shared.hex": "{{ hex .Secrets.sharedKey }}"}},
	}
	return m
}

func activationCount(c *Core, typ string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.activations[typ]
}

// TestConflictRetriesAgainstNewerState makes writes of one core lose
// races to another core on the same state, and checks that each write is
// checked again against what the other core stored before it is retried.
func TestConflictRetriesAgainstNewerState(t *testing.T) {
	u := newGovUsers(t)
	shared := newCASState()
	stA, stB := shared.open(), shared.open()
	a := newSimCore(t, stA)
	b := newSimCore(t, stB)
	if ra, _ := a.RootCertificate(); ra == nil {
		t.Fatal("no root certificate")
	} else if rb, _ := b.RootCertificate(); !ra.Equal(rb) {
		t.Fatal("the second core created its own certificate authority instead of serving the stored one")
	}
	raw := encodeManifest(t, limitedManifest(u, 3))
	if _, err := a.SetManifest(context.Background(), raw); err != nil {
		t.Fatalf("SetManifest on a: %v", err)
	}
	// b still believes it accepts a manifest: its write conflicts, and
	// against the newer state the manifest is already set.
	if _, err := b.SetManifest(context.Background(), raw); KindOf(err) != KindFailedPrecondition {
		t.Fatalf("SetManifest on b after a set one: %v (kind %v), want FailedPrecondition", err, KindOf(err))
	}
	if got, _, ok := b.ManifestInfo(); !ok || string(got) != string(raw) {
		t.Fatal("b does not serve the manifest a set")
	}
	if s, _ := b.Status(); s != StateAcceptingMarbles {
		t.Fatalf("b is in state %v", s)
	}

	// a's activation count is 0 in memory; b stored 1 meanwhile.
	if _, err := activate(b, newMarbleID(t), "limited", uuid.NewString(), nil); err != nil {
		t.Fatalf("activation on b: %v", err)
	}
	// Two lost races in a row, each to another activation on b: a must
	// count against 3 and refuse.
	stA.loseNext(2, func() {
		if _, err := activate(b, newMarbleID(t), "limited", uuid.NewString(), nil); err != nil && KindOf(err) != KindResourceExhausted {
			t.Errorf("activation on b: %v", err)
		}
	})
	loadsBefore, _ := stA.counts()
	if _, err := activate(a, newMarbleID(t), "limited", uuid.NewString(), nil); KindOf(err) != KindResourceExhausted {
		t.Fatalf("activation on a after b used the limit: %v (kind %v), want ResourceExhausted", err, KindOf(err))
	}
	if loads, _ := stA.counts(); loads-loadsBefore != 2 {
		t.Fatalf("a read the state %d times, want 2 (once per lost race)", loads-loadsBefore)
	}
	if n := activationCount(a, "limited"); n != 3 {
		t.Fatalf("a counts %d activations, want 3", n)
	}

	// A user's write that becomes unauthorized: the other core applies an
	// update that takes alice's right to write secrets.
	upd := limitedManifest(u, 3)
	section(upd, "Users")["alice"] = map[string]any{"Certificate": u.alice.CertPEM, "Roles": []string{"updater", "svn"}}
	updRaw := encodeManifest(t, upd)
	stA.loseNext(1, func() {
		if _, err := b.UpdateManifest(context.Background(), u.alice.Cert, updRaw); err != nil {
			t.Errorf("UpdateManifest on b: %v", err)
		}
		if res, err := b.AcknowledgeUpdate(context.Background(), u.bob.Cert, updRaw); err != nil || !res.Applied {
			t.Errorf("AcknowledgeUpdate on b: %v, %+v", err, res)
		}
	})
	if err := a.WriteSecrets(context.Background(), u.alice.Cert, validUserSecrets(t)); KindOf(err) != KindPermissionDenied {
		t.Fatalf("WriteSecrets on a after alice lost the right: %v (kind %v), want PermissionDenied", err, KindOf(err))
	}
	if got, _, _ := a.ManifestInfo(); string(got) != string(updRaw) {
		t.Fatal("a does not serve the update b applied")
	}
	msgsA, _ := logMessages(t, a)
	msgsB, _ := logMessages(t, b)
	if fmt.Sprint(msgsA) != fmt.Sprint(msgsB) {
		t.Fatalf("update logs differ:\na: %v\nb: %v", msgsA, msgsB)
	}
	// The update kept the limited type's count.
	if n := activationCount(a, "limited"); n != 3 {
		t.Fatalf("a counts %d activations after the update, want 3", n)
	}
}

// TestConflictRetryThenSuccess loses a few races, each to a counter write
// of another core, and then succeeds: nothing of either is lost.
func TestConflictRetryThenSuccess(t *testing.T) {
	u := newGovUsers(t)
	shared := newCASState()
	stA, stB := shared.open(), shared.open()
	a := newSimCore(t, stA)
	if _, err := a.SetManifest(context.Background(), encodeManifest(t, govManifest(u, nil))); err != nil {
		t.Fatal(err)
	}
	b := newSimCore(t, stB)
	cert := marbleCert(t, b, "backend", uuid.NewString())
	next := uint64(0)
	const n = maxWriteAttempts - 1
	stA.loseNext(n, func() {
		next++
		if _, err := b.SetMonotonicCounter(context.Background(), cert, fmt.Sprintf("b%d", next), next); err != nil {
			t.Errorf("counter on b: %v", err)
		}
	})
	if prev, err := a.SetMonotonicCounter(context.Background(), cert, "b3", 10); err != nil || prev != 3 {
		t.Fatalf("counter on a after %d lost races: %d, %v; want previous value 3 (written by b)", n, prev, err)
	}
	if _, refused := stA.counts(); refused != n {
		t.Fatalf("a's store refused %d writes, want %d", refused, n)
	}
	// b sees a's write once it reloads.
	if err := b.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= n; i++ {
		want := i
		if i == 3 {
			want = 10
		}
		if prev, err := b.SetMonotonicCounter(context.Background(), cert, fmt.Sprintf("b%d", i), 0); err != nil || prev != want {
			t.Fatalf("counter b%d on b: %d, %v; want %d", i, prev, err, want)
		}
	}
}

// TestConflictAlwaysLost gives up after maxWriteAttempts with a retryable
// error, having changed nothing.
func TestConflictAlwaysLost(t *testing.T) {
	u := newGovUsers(t)
	st := newCASState().open()
	c := newSimCore(t, st)
	if _, err := c.SetManifest(context.Background(), encodeManifest(t, limitedManifest(u, 3))); err != nil {
		t.Fatal(err)
	}
	st.loseNext(1000, nil)
	_, err := activate(c, newMarbleID(t), "limited", uuid.NewString(), nil)
	if KindOf(err) != KindUnavailable || !errors.Is(err, store.ErrConflict) {
		t.Fatalf("activation losing every race: %v (kind %v), want Unavailable wrapping ErrConflict", err, KindOf(err))
	}
	if _, refused := st.counts(); refused != maxWriteAttempts {
		t.Fatalf("%d attempts, want %d", refused, maxWriteAttempts)
	}
	if n := activationCount(c, "limited"); n != 0 {
		t.Fatalf("count = %d after a failed activation", n)
	}
	st.loseNext(0, nil)
	if _, err := activate(c, newMarbleID(t), "limited", uuid.NewString(), nil); err != nil {
		t.Fatalf("activation once races are won: %v", err)
	}
	// Activations without a limit write nothing, so they never conflict.
	st.loseNext(1000, nil)
	if _, err := activate(c, newMarbleID(t), "backend", uuid.NewString(), nil); err != nil {
		t.Fatalf("unlimited activation: %v", err)
	}
}

// TestBootRace starts two cores on an empty state whose first writes
// race: the loser serves the winner's certificate authority.
func TestBootRace(t *testing.T) {
	shared := newCASState()
	stA, stB := shared.open(), shared.open()
	var a *Core
	// b loads (nothing stored), then a starts and stores its CA before b
	// writes.
	stB.loseNext(1, func() { a = newSimCore(t, stA) })
	b := newSimCore(t, stB)
	if a == nil {
		t.Fatal("the race was not run")
	}
	ra, _ := a.RootCertificate()
	rb, _ := b.RootCertificate()
	if !ra.Equal(rb) {
		t.Fatal("the cores serve different certificate authorities")
	}
	if s, _ := b.Status(); s != StateAcceptingManifest {
		t.Fatalf("b is in state %v", s)
	}
	chainA, _, _ := a.Quote(context.Background(), nil)
	chainB, _, _ := b.Quote(context.Background(), nil)
	if string(chainA) != string(chainB) {
		t.Fatal("the cores serve different certificate chains")
	}
}

// TestConflictRecoveryByTwoCores recovers the state through one core
// while another, also in recovery, receives the same secret: the second
// is told that recovery is over and serves the recovered state.
func TestConflictRecoveryByTwoCores(t *testing.T) {
	u := newGovUsers(t)
	owner := testsupport.NewRecoveryKey(t)
	shared := newCASState()
	first := newSimCore(t, shared.open())
	encrypted, err := first.SetManifest(context.Background(), encodeManifest(t, govManifest(u, map[string]*testsupport.RecoveryKey{"owner": owner})))
	if err != nil {
		t.Fatal(err)
	}
	share := owner.Decrypt(t, encrypted["owner"])
	shared.mem.LoseSealKey()
	a, b := newSimCore(t, shared.open()), newSimCore(t, shared.open())
	for _, c := range []*Core{a, b} {
		if s, _ := c.Status(); s != StateRecovery {
			t.Fatalf("state after losing the seal key: %v", s)
		}
	}
	if left, err := a.Recover(context.Background(), share, owner.Sign(t, share)); err != nil || left != 0 {
		t.Fatalf("Recover on a: %d, %v", left, err)
	}
	if _, err := b.Recover(context.Background(), share, owner.Sign(t, share)); KindOf(err) != KindFailedPrecondition {
		t.Fatalf("Recover on b after a recovered: %v (kind %v), want FailedPrecondition", err, KindOf(err))
	}
	if s, _ := b.Status(); s != StateAcceptingMarbles {
		t.Fatalf("b is in state %v after a recovered", s)
	}
	ra, _ := a.RootCertificate()
	rb, _ := b.RootCertificate()
	rf, _ := first.RootCertificate()
	if !ra.Equal(rf) || !rb.Equal(rf) {
		t.Fatal("the cores do not serve the recovered certificate authority")
	}
	if _, err := b.RecoveryPublicKey(); KindOf(err) != KindFailedPrecondition {
		t.Fatalf("recovery key on b after recovery: %v", err)
	}
}

// TestConflictRequestEnded stops retrying once the request's context has
// ended.
func TestConflictRequestEnded(t *testing.T) {
	u := newGovUsers(t)
	st := newCASState().open()
	c := newSimCore(t, st)
	if _, err := c.SetManifest(context.Background(), encodeManifest(t, govManifest(u, nil))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st.loseNext(maxWriteAttempts, cancel)
	err := c.WriteSecrets(ctx, u.alice.Cert, validUserSecrets(t))
	if KindOf(err) != KindUnavailable || !errors.Is(err, context.Canceled) {
		t.Fatalf("write whose request ended: %v (kind %v), want Unavailable wrapping context.Canceled", err, KindOf(err))
	}
	if _, refused := st.counts(); refused != 1 {
		t.Fatalf("%d attempts, want 1", refused)
	}
}

// TestReloadInRecoveryKeepsShares reads the state again in recovery: the
// secrets uploaded so far stay while the recovery data is the same.
func TestReloadInRecoveryKeepsShares(t *testing.T) {
	u := newGovUsers(t)
	owners := map[string]*testsupport.RecoveryKey{"owner0": testsupport.NewRecoveryKey(t), "owner1": testsupport.NewRecoveryKey(t)}
	shared := newCASState()
	first := newSimCore(t, shared.open())
	encrypted, err := first.SetManifest(context.Background(), encodeManifest(t, govManifest(u, owners)))
	if err != nil {
		t.Fatal(err)
	}
	shared.mem.LoseSealKey()
	c := newSimCore(t, shared.open())
	upload := func(name string) (int, error) {
		share := owners[name].Decrypt(t, encrypted[name])
		return c.Recover(context.Background(), share, owners[name].Sign(t, share))
	}
	if left, err := upload("owner0"); err != nil || left != 1 {
		t.Fatalf("first secret: %d, %v", left, err)
	}
	if err := c.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s, _ := c.Status(); s != StateRecovery {
		t.Fatalf("state after a reload in recovery: %v", s)
	}
	if left, err := upload("owner1"); err != nil || left != 0 {
		t.Fatalf("second secret after a reload: %d, %v", left, err)
	}
	if s, _ := c.Status(); s != StateAcceptingMarbles {
		t.Fatalf("state after recovery: %v", s)
	}
}

// TestUnknownWriteOutcome: a write whose outcome the store cannot tell
// (store.ErrBroken) is answered with a retryable error and the stored
// state is read again, whether the write happened or not, so that the core
// serves what is stored and writes again instead of staying refused.
func TestUnknownWriteOutcome(t *testing.T) {
	for _, applied := range []bool{false, true} {
		t.Run(fmt.Sprintf("applied=%v", applied), func(t *testing.T) {
			u := newGovUsers(t)
			st := newCASState().open()
			c := newSimCore(t, st)
			if _, err := c.SetManifest(context.Background(), encodeManifest(t, govManifest(u, nil))); err != nil {
				t.Fatal(err)
			}
			cert := marbleCert(t, c, "backend", uuid.NewString())
			loads, _ := st.counts()
			st.breakNextWrite(applied)
			_, err := c.SetMonotonicCounter(context.Background(), cert, "n", 5)
			if KindOf(err) != KindUnavailable || !errors.Is(err, store.ErrBroken) {
				t.Fatalf("write of unknown outcome: %v (kind %v), want Unavailable wrapping ErrBroken", err, KindOf(err))
			}
			if after, _ := st.counts(); after != loads+1 {
				t.Fatalf("the stored state was read %d times after the failed write, want once", after-loads)
			}
			want := uint64(0)
			if applied {
				want = 5
			}
			prev, err := c.SetMonotonicCounter(context.Background(), cert, "n", 7)
			if err != nil || prev != want {
				t.Fatalf("the next write: previous value %d, %v; want %d (the write %s)", prev, err, want, map[bool]string{true: "happened", false: "did not happen"}[applied])
			}
		})
	}
}

// TestRetryPause: the pause after a lost race grows from
// retryPauseBase and stays within retryPauseMax, all of them together
// within a second, and ends with the request.
func TestRetryPause(t *testing.T) {
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{
		{2, time.Millisecond}, {3, 2 * time.Millisecond}, {4, 4 * time.Millisecond},
		{7, 32 * time.Millisecond}, {maxWriteAttempts, 32 * time.Millisecond}, {1000, 32 * time.Millisecond},
	} {
		if got := retryPauseBound(tc.attempt); got != tc.want {
			t.Errorf("retryPauseBound(%d) = %v, want %v", tc.attempt, got, tc.want)
		}
	}
	var total time.Duration
	for a := 2; a <= maxWriteAttempts; a++ {
		total += retryPauseBound(a)
	}
	if total >= time.Second {
		t.Errorf("the pauses of %d attempts add up to %v", maxWriteAttempts, total)
	}
	for range 20 {
		start := time.Now()
		if err := pauseBeforeRetry(t.Context(), 3); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > retryPauseBound(3)+50*time.Millisecond {
			t.Fatalf("a pause bounded by %v took %v", retryPauseBound(3), d)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := pauseBeforeRetry(ctx, maxWriteAttempts); !errors.Is(err, context.Canceled) {
		t.Fatalf("pause of an ended request: %v", err)
	}
}
