package core

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestMaxActivationsWhileSecretsAreWritten activates a marble type with
// MaxActivations while users keep writing user-defined secrets, some of
// which its templates render: every activation up to the limit succeeds
// without retrying, the next one is refused, and the count never exceeds
// the limit, also after the core restarts from its store.
func TestMaxActivationsWhileSecretsAreWritten(t *testing.T) {
	const limit = 8
	u := newGovUsers(t)
	m := govManifest(u, nil)
	section(m, "Marbles")["limited"] = map[string]any{
		"Package":        "frontend",
		"MaxActivations": limit,
		"Parameters": map[string]any{
			"Files": map[string]any{"/user.hex": "{{ hex .Secrets.userKey }}", "/shared.hex": "{{ hex .Secrets.sharedKey }}"},
		},
	}
	c, st, _ := govCore(t, u, m)

	// phase activates n marbles of type limited concurrently while three
	// writers upload secrets in a loop, and returns how many writes landed
	// while activations ran.
	phase := func(c *Core, n int) int64 {
		t.Helper()
		stop := make(chan struct{})
		var writes atomic.Int64
		var writers sync.WaitGroup
		for w := range 3 {
			writers.Add(1)
			go func() {
				defer writers.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					key := []byte(fmt.Sprintf("w%d-%013d", w, i))
					if err := c.WriteSecrets(context.Background(), u.alice.Cert, map[string]UserSecret{"userKey": {Key: key}, "userPlain": {Key: key}}); err != nil {
						t.Errorf("WriteSecrets: %v", err)
						return
					}
					writes.Add(1)
				}
			}()
		}
		// Let the writers get going before the activations start.
		for writes.Load() < 3 {
			time.Sleep(time.Millisecond)
		}
		var activations sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			activations.Add(1)
			go func() {
				defer activations.Done()
				id := newMarbleID(t)
				if _, err := activate(c, id, "limited", uuid.NewString(), nil); err != nil {
					errs <- err
				}
			}()
		}
		activations.Wait()
		during := writes.Load()
		close(stop)
		writers.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("activation under the limit failed: %v (kind %v)", err, KindOf(err))
		}
		return during
	}
	countOf := func(c *Core) uint64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.activations["limited"]
	}

	if w := phase(c, limit/2); w < 3 {
		t.Fatalf("only %d secret writes landed during the activations; the test did not exercise them", w)
	}
	if got := countOf(c); got != limit/2 {
		t.Fatalf("activation count = %d, want %d", got, limit/2)
	}

	restarted := newSimCore(t, st)
	if got := countOf(restarted); got != limit/2 {
		t.Fatalf("activation count after restart = %d, want %d", got, limit/2)
	}
	phase(restarted, limit-limit/2)
	if got := countOf(restarted); got != limit {
		t.Fatalf("activation count = %d, want %d", got, limit)
	}
	_, err := restarted.Activate(context.Background(), ActivationRequest{PeerCert: newMarbleID(t).cert, CSR: newMarbleID(t).csr, MarbleType: "limited", UUID: uuid.NewString()})
	if KindOf(err) != KindResourceExhausted {
		t.Fatalf("activation %d: %v (kind %v), want ResourceExhausted", limit+1, err, KindOf(err))
	}
	if got := countOf(restarted); got != limit {
		t.Fatalf("activation count after the refused activation = %d, want %d", got, limit)
	}
	stored, err := st.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if counts, err := StoredActivations(stored); err != nil || counts["limited"] != limit || len(counts) != 1 {
		t.Fatalf("StoredActivations = %v, %v; want limited=%d only", counts, err, limit)
	}
	stored[prefixActivations+"limited"] = []byte("many")
	if _, err := StoredActivations(stored); err == nil {
		t.Fatal("StoredActivations accepted a count that is not a number")
	}
	again := newSimCore(t, st)
	if _, err := activate(again, newMarbleID(t), "limited", uuid.NewString(), nil); KindOf(err) != KindResourceExhausted {
		t.Fatalf("activation after a second restart: %v, want ResourceExhausted", err)
	}
}
