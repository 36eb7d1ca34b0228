package core

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/store"
)

// unreachableStore is a Memory store whose Kubernetes API can be taken
// away, failing the way a KubeStore fails: while the API is down, Commit
// fails with store.ErrUnavailable and Load fails; a failed Load leaves the
// store without open state (Commit: store.ErrNotOpen) until a Load
// succeeds.
type unreachableStore struct {
	*store.Memory
	mu             sync.Mutex
	down, unloaded bool
}

func (s *unreachableStore) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *unreachableStore) Load(ctx context.Context) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		s.unloaded = true
		return nil, errors.New("store: load: dial tcp 127.0.0.1:6443: connect: connection refused")
	}
	s.unloaded = false
	return s.Memory.Load(ctx)
}

func (s *unreachableStore) Commit(ctx context.Context, changes map[string][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.unloaded:
		return fmt.Errorf("store: commit: %w", store.ErrNotOpen)
	case s.down:
		return fmt.Errorf("store: commit: create chunk: %w: connection refused", store.ErrUnavailable)
	}
	return s.Memory.Commit(ctx, changes)
}

// TestWritesWhileTheStoreIsUnreachable: while the store's API is down,
// writes fail with KindUnavailable (retryable), also once a failed reading
// of the stored state has left the store without open state; once the API
// is back, the next write reads the stored state again and succeeds.
func TestWritesWhileTheStoreIsUnreachable(t *testing.T) {
	ctx := context.Background()
	u := newGovUsers(t)
	st := &unreachableStore{Memory: store.NewMemory()}
	c := newSimCore(t, st)
	if _, err := c.SetManifest(ctx, encodeManifest(t, govManifest(u, nil))); err != nil {
		t.Fatal(err)
	}
	write := func(value string) error {
		return c.WriteSecrets(ctx, u.alice.Cert, map[string]UserSecret{"userPlain": {Key: []byte(value)}})
	}
	if err := write("before"); err != nil {
		t.Fatal(err)
	}

	st.setDown(true)
	if err := write("down"); KindOf(err) != KindUnavailable {
		t.Fatalf("a write while the store is unreachable: %v (kind %v), want Unavailable", err, KindOf(err))
	}
	if err := c.Reload(ctx); KindOf(err) != KindUnavailable {
		t.Fatalf("a reload while the store is unreachable: %v (kind %v), want Unavailable", err, KindOf(err))
	}
	if err := write("down after a failed reload"); KindOf(err) != KindUnavailable {
		t.Fatalf("a write after a failed reload: %v (kind %v), want Unavailable", err, KindOf(err))
	}

	st.setDown(false)
	if err := write("after"); err != nil {
		t.Fatalf("a write once the store is back: %v (kind %v)", err, KindOf(err))
	}
	got, err := c.ReadSecrets(u.alice.Cert, []string{"userPlain"})
	if err != nil {
		t.Fatal(err)
	}
	if string(got["userPlain"].Private) != "after" {
		t.Errorf("userPlain = %q, want %q", got["userPlain"].Private, "after")
	}
	restarted := newSimCore(t, st)
	if got, err := restarted.ReadSecrets(u.alice.Cert, []string{"userPlain"}); err != nil || string(got["userPlain"].Private) != "after" {
		t.Errorf("after a restart: userPlain = %q, %v; want %q", got["userPlain"].Private, err, "after")
	}
}
