package core

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
)

// kubeReplicas opens n KubeStores on one new namespace and state, all
// with the same sealing key, as replicas of one Coordinator would.
func kubeReplicas(t *testing.T, n int) []*store.KubeStore {
	t.Helper()
	env := kubeEnv(t)
	ns := env.Namespace(t)
	sealer, err := seal.NewAESGCMSealer(bytes.Repeat([]byte{7}, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*store.KubeStore, n)
	for i := range out {
		s, err := store.OpenKube(store.KubeOptions{
			Client: env.Clientset, Namespace: ns,
			Sealers: map[seal.Mode]seal.Sealer{seal.ModeProductKey: sealer, seal.ModeUniqueKey: sealer},
		})
		if err != nil {
			t.Fatalf("OpenKube: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		out[i] = s
	}
	return out
}

// raceCounter is a log handler that counts the writes that lost a race.
type raceCounter struct{ lost atomic.Int64 }

func (h *raceCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *raceCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *raceCounter) WithGroup(string) slog.Handler            { return h }
func (h *raceCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "lost a race") {
		h.lost.Add(1)
	}
	return nil
}

// startConcurrently starts a core on each store at the same time. The
// test logs how many writes lost a race.
func startConcurrently(t *testing.T, stores []*store.KubeStore) []*Core {
	t.Helper()
	cores := make([]*Core, len(stores))
	errs := make([]error, len(stores))
	races := &raceCounter{}
	t.Cleanup(func() { t.Logf("writes that lost a race: %d", races.lost.Load()) })
	var wg sync.WaitGroup
	for i, st := range stores {
		wg.Go(func() {
			cores[i], errs[i] = New(Config{Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: st, DNSNames: []string{"localhost"}, RecoveryKeyBits: 2048, Logger: slog.New(races)})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("starting core %d: %v", i, err)
		}
	}
	return cores
}

// retrying calls op until it returns something else than a retryable
// KindUnavailable error, as a client does.
func retrying(op func() error) error {
	var err error
	for range 100 {
		if err = op(); KindOf(err) != KindUnavailable {
			return err
		}
	}
	return fmt.Errorf("still unavailable after 100 attempts: %w", err)
}

// TestKubeReplicasSetManifest starts two fresh cores on one state at
// once and sets a different manifest on each at once: one state, one
// manifest, served by both.
func TestKubeReplicasSetManifest(t *testing.T) {
	u := newGovUsers(t)
	cores := startConcurrently(t, kubeReplicas(t, 2))
	ra, _ := cores[0].RootCertificate()
	rb, _ := cores[1].RootCertificate()
	if !ra.Equal(rb) {
		t.Fatal("the replicas serve different certificate authorities")
	}
	raws := [][]byte{encodeManifest(t, limitedManifest(u, 1)), encodeManifest(t, limitedManifest(u, 2))}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, c := range cores {
		wg.Go(func() { _, errs[i] = c.SetManifest(context.Background(), raws[i]) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner == -1:
			winner = i
		case err == nil:
			t.Fatal("both manifests were set")
		case KindOf(err) != KindFailedPrecondition:
			t.Fatalf("SetManifest on replica %d: %v (kind %v), want success or FailedPrecondition", i, err, KindOf(err))
		}
	}
	if winner == -1 {
		t.Fatalf("no manifest was set: %v", errs)
	}
	for i, c := range cores {
		if got, _, ok := c.ManifestInfo(); !ok || !bytes.Equal(got, raws[winner]) {
			t.Fatalf("replica %d does not serve the manifest that was set", i)
		}
		if s, _ := c.Status(); s != StateAcceptingMarbles {
			t.Fatalf("replica %d is in state %v", i, s)
		}
	}
	msgs0, _ := logMessages(t, cores[0])
	msgs1, _ := logMessages(t, cores[1])
	if len(msgs0) != 1 || fmt.Sprint(msgs0) != fmt.Sprint(msgs1) {
		t.Fatalf("update logs: %v and %v, want the initial manifest once", msgs0, msgs1)
	}
}

// TestKubeReplicasMaxActivations activates a limited marble type through
// two replicas at once, more often than allowed: exactly the limit
// succeeds.
func TestKubeReplicasMaxActivations(t *testing.T) {
	const limit, attempts = 5, 12
	u := newGovUsers(t)
	stores := kubeReplicas(t, 3)
	cores := startConcurrently(t, stores[:2])
	if _, err := cores[0].SetManifest(context.Background(), encodeManifest(t, limitedManifest(u, limit))); err != nil {
		t.Fatal(err)
	}
	// Replica 1 learns of the manifest when it reads the state again
	// (without a watch: here).
	if err := cores[1].Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok int
	for i := range attempts {
		c := cores[i%2]
		wg.Go(func() {
			_, err := activate(c, newMarbleID(t), "limited", uuid.NewString(), nil)
			switch {
			case err == nil:
				mu.Lock()
				ok++
				mu.Unlock()
			case KindOf(err) != KindResourceExhausted:
				t.Errorf("activation: %v (kind %v)", err, KindOf(err))
			}
		})
	}
	wg.Wait()
	if ok != limit {
		t.Fatalf("%d activations succeeded, want %d", ok, limit)
	}
	for i, c := range cores {
		if err := c.Reload(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := activationCount(c, "limited"); n != limit {
			t.Fatalf("replica %d counts %d activations, want %d", i, n, limit)
		}
	}
	third := newSimCore(t, stores[2])
	if n := activationCount(third, "limited"); n != limit {
		t.Fatalf("the stored count is %d, want %d", n, limit)
	}
	for i, c := range cores {
		if _, err := activate(c, newMarbleID(t), "limited", uuid.NewString(), nil); KindOf(err) != KindResourceExhausted {
			t.Fatalf("activation on replica %d after the limit: %v", i, err)
		}
	}
}

// TestKubeReplicasWrites writes monotonic counters and secrets through
// two replicas at once: every acknowledged write is stored, and an update
// through one replica is served by the other once it has read it.
func TestKubeReplicasWrites(t *testing.T) {
	const perReplica = 8
	u := newGovUsers(t)
	stores := kubeReplicas(t, 3)
	cores := startConcurrently(t, stores[:2])
	if _, err := cores[0].SetManifest(context.Background(), encodeManifest(t, govManifest(u, nil))); err != nil {
		t.Fatal(err)
	}
	if err := cores[1].Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	cert := marbleCert(t, cores[1], "backend", uuid.NewString())
	var wg sync.WaitGroup
	for r, c := range cores {
		wg.Go(func() {
			for i := 1; i <= perReplica; i++ {
				// Own counters, and one both raise: r=0 even, r=1 odd values.
				own := fmt.Sprintf("r%d-%d", r, i)
				if err := retrying(func() error {
					_, err := c.SetMonotonicCounter(context.Background(), cert, own, uint64(i))
					return err
				}); err != nil {
					t.Errorf("counter %s: %v", own, err)
				}
				if err := retrying(func() error {
					_, err := c.SetMonotonicCounter(context.Background(), cert, "both", uint64(2*i-r))
					return err
				}); err != nil {
					t.Errorf("counter both: %v", err)
				}
				key := []byte(fmt.Sprintf("r%d-%013d", r, i))
				if err := retrying(func() error {
					return c.WriteSecrets(context.Background(), u.alice.Cert, map[string]UserSecret{"userKey": {Key: key}})
				}); err != nil {
					t.Errorf("WriteSecrets: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	third := newSimCore(t, stores[2])
	for r := range 2 {
		for i := 1; i <= perReplica; i++ {
			if prev, err := third.SetMonotonicCounter(context.Background(), cert, fmt.Sprintf("r%d-%d", r, i), 0); err != nil || prev != uint64(i) {
				t.Errorf("counter r%d-%d = %d, %v; want %d", r, i, prev, err, i)
			}
		}
	}
	if prev, err := third.SetMonotonicCounter(context.Background(), cert, "both", 0); err != nil || prev != 2*perReplica {
		t.Errorf("counter both = %d, %v; want %d", prev, err, 2*perReplica)
	}
	msgs, _ := logMessages(t, third)
	var set int
	for _, m := range msgs {
		if m == logSecretSet {
			set++
		}
	}
	if set != 2*perReplica {
		t.Errorf("the update log records %d secret writes, want %d", set, 2*perReplica)
	}

	// A full update through replica 0; replica 1 serves it after a
	// reload, and the third core on its next write.
	upd := govManifest(u, nil)
	section(upd, "Secrets")["extra"] = map[string]any{"Type": "symmetric-key", "Size": 128, "Shared": true}
	updRaw := encodeManifest(t, upd)
	if _, err := cores[0].UpdateManifest(context.Background(), u.alice.Cert, updRaw); err != nil {
		t.Fatal(err)
	}
	if res, err := cores[0].AcknowledgeUpdate(context.Background(), u.bob.Cert, updRaw); err != nil || !res.Applied {
		t.Fatalf("AcknowledgeUpdate: %+v, %v", res, err)
	}
	if err := cores[1].Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := cores[1].ManifestInfo(); !bytes.Equal(got, updRaw) {
		t.Fatal("replica 1 does not serve the update after a reload")
	}
	r0, _ := cores[0].MarbleRoot()
	r1, _ := cores[1].MarbleRoot()
	if !r0.Equal(r1) {
		t.Fatal("the replicas serve different marble roots after the update")
	}
	if err := third.WriteSecrets(context.Background(), u.alice.Cert, map[string]UserSecret{"userKey": {Key: []byte("after the update")}}); err != nil {
		t.Fatalf("WriteSecrets on the third core: %v", err)
	}
	if got, _, _ := third.ManifestInfo(); !bytes.Equal(got, updRaw) {
		t.Fatal("the third core does not serve the update after its write")
	}
	if err := cores[0].Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if secrets, err := cores[0].ReadSecrets(u.bob.Cert, []string{"userKey"}); err != nil || string(secrets["userKey"].Private) != "after the update" {
		t.Fatalf("userKey on replica 0 after a reload: %q, %v", secrets["userKey"].Private, err)
	}
}
