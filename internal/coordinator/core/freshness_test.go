package core

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/marblemesh/marblemesh/attestation"
)

// recordedFreshness records the reads a core reports and answers Current
// as told.
type recordedFreshness struct {
	mu      sync.Mutex
	loads   []error
	current bool
	reason  string
}

func (f *recordedFreshness) BeginLoad() func(error) {
	return func(err error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.loads = append(f.loads, err)
	}
}

func (f *recordedFreshness) Current() (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current, f.reason
}

func (f *recordedFreshness) set(current bool, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.current, f.reason = current, reason
}

func (f *recordedFreshness) recorded() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]error(nil), f.loads...)
}

// failingLoads is a casStore whose Load fails while fail is set.
type failingLoads struct {
	*casStore
	mu   sync.Mutex
	fail bool
}

func (s *failingLoads) setFail(fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = fail
}

func (s *failingLoads) Load(ctx context.Context) (map[string][]byte, error) {
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail {
		return nil, errors.New("the API server is unreachable (injected)")
	}
	return s.casStore.Load(ctx)
}

// TestFreshness checks what a core tells its Freshness and how it obeys
// it: the boot read is not reported, every later read is, with its
// outcome (a reload after another core's change that fails, then one that
// succeeds); while Current says no, writes are refused as Unavailable
// before they reach the store.
func TestFreshness(t *testing.T) {
	u := newGovUsers(t)
	shared := newCASState()
	st := &failingLoads{casStore: shared.open()}
	f := &recordedFreshness{current: true}
	c, err := New(Config{Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: st, DNSNames: []string{"localhost"}, RecoveryKeyBits: 2048, Freshness: f})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.recorded(); len(got) != 0 {
		t.Fatalf("the start reported reads: %v", got)
	}
	other := newSimCore(t, shared.open())
	raw := encodeManifest(t, govManifest(u, nil))
	if _, err := other.SetManifest(context.Background(), raw); err != nil {
		t.Fatal(err)
	}

	st.setFail(true)
	if err := c.Reload(context.Background()); KindOf(err) != KindUnavailable {
		t.Fatalf("Reload with failing reads: %v", err)
	}
	if got := f.recorded(); len(got) != 1 || got[0] == nil || !strings.Contains(got[0].Error(), "unreachable") {
		t.Fatalf("reported reads after a failed reload: %v", got)
	}

	f.set(false, "reading the stored state failed")
	loads, refused := st.counts()
	_, err = c.SetManifest(context.Background(), raw)
	if KindOf(err) != KindUnavailable || !strings.Contains(err.Error(), "not current with the shared state (reading the stored state failed)") {
		t.Fatalf("SetManifest while not current: %v (kind %v)", err, KindOf(err))
	}
	if l, r := st.counts(); l != loads || r != refused {
		t.Fatal("a write refused for freshness reached the store")
	}

	st.setFail(false)
	if err := c.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.recorded(); len(got) != 2 || got[1] != nil {
		t.Fatalf("reported reads after a successful reload: %v", got)
	}
	if m, _, ok := c.ManifestInfo(); !ok || string(m) != string(raw) {
		t.Fatal("the reload did not take over the other core's manifest")
	}

	// A write of unknown outcome is followed by a read; when that fails
	// too, the Freshness learns of it.
	f.set(true, "")
	st.breakNextWrite(true)
	st.setFail(true)
	if err := c.WriteSecrets(context.Background(), u.alice.Cert, validUserSecrets(t)); KindOf(err) != KindUnavailable {
		t.Fatalf("a write of unknown outcome: %v", err)
	}
	if got := f.recorded(); len(got) != 3 || got[2] == nil {
		t.Fatalf("reported reads after a write of unknown outcome: %v", got)
	}
}
