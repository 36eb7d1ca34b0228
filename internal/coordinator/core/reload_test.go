package core

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

func newMeteredCore(t testing.TB, st store.Store) *Core {
	t.Helper()
	c, err := New(Config{
		Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: st, DNSNames: []string{"localhost"}, RecoveryKeyBits: 2048,
		Metrics: NewMetrics(prometheus.NewRegistry()),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func reloadCounts(c *Core) map[string]float64 {
	out := map[string]float64{}
	for _, kind := range []string{reloadUnchanged, reloadIncremental, reloadFull} {
		out[kind] = testutil.ToFloat64(c.metrics.reloads.WithLabelValues(kind))
	}
	return out
}

// reloadKind reloads c and returns the one kind of reload it counted.
func reloadKind(t testing.TB, c *Core) string {
	t.Helper()
	before := reloadCounts(c)
	if err := c.Reload(context.Background()); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	var kinds []string
	for kind, n := range reloadCounts(c) {
		if n != before[kind] {
			kinds = append(kinds, kind)
		}
	}
	if len(kinds) != 1 || reloadCounts(c)[kinds[0]] != before[kinds[0]]+1 {
		t.Fatalf("a reload counted %v (before %v)", reloadCounts(c), before)
	}
	return kinds[0]
}

// servedState is what a core serves of the stored state, comparable.
type servedState struct {
	state       State
	activations map[string]uint64
	counters    map[string]uint64
	updateLog   []string
	updateSeq   uint64
	pending     string
	deployment  map[string][]byte
	packages    string
	rootCert    []byte
}

func served(t testing.TB, c *Core) servedState {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.view.Load()
	enc, err := encodeDeployment(v.dep)
	if err != nil {
		t.Fatal(err)
	}
	out := servedState{
		state: v.state, activations: maps.Clone(c.activations), counters: maps.Clone(c.counters),
		updateLog: slices.Clone(c.updateLog), updateSeq: c.updateSeq, deployment: enc, rootCert: v.dep.root.Cert.Raw,
	}
	if c.pending != nil {
		out.pending = string(mustJSON(t, c.pending))
	}
	if v.dep.manifest != nil {
		out.packages = string(mustJSON(t, v.dep.manifest.Packages))
	}
	return out
}

// sameServed fails unless got serves what want serves.
func sameServed(t testing.TB, got, want servedState) {
	t.Helper()
	switch {
	case got.state != want.state:
		t.Fatalf("state %v, want %v", got.state, want.state)
	case !maps.Equal(got.activations, want.activations):
		t.Fatalf("activations %v, want %v", got.activations, want.activations)
	case !maps.Equal(got.counters, want.counters):
		t.Fatalf("counters %v, want %v", got.counters, want.counters)
	case !slices.Equal(got.updateLog, want.updateLog):
		t.Fatalf("update log\n%q\nwant\n%q", got.updateLog, want.updateLog)
	case got.updateSeq != want.updateSeq:
		t.Fatalf("update sequence %d, want %d", got.updateSeq, want.updateSeq)
	case got.pending != want.pending:
		t.Fatalf("pending update %s, want %s", got.pending, want.pending)
	case !maps.EqualFunc(got.deployment, want.deployment, func(a, b []byte) bool { return string(a) == string(b) }):
		t.Fatalf("deployments differ in %v", slices.Sorted(maps.Keys(diffState(want.deployment, got.deployment))))
	case got.packages != want.packages:
		t.Fatalf("packages %s, want %s", got.packages, want.packages)
	case string(got.rootCert) != string(want.rootCert):
		t.Fatal("root certificates differ")
	}
}

// sameAsRestarted fails unless c serves what a core started afresh on st
// (which restores the whole stored state) serves, and remembers exactly
// the stored state.
func sameAsRestarted(t testing.TB, c *Core, st store.Store) {
	t.Helper()
	sameServed(t, served(t, c), served(t, newMeteredCore(t, st)))
	stored, err := st.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.stored) != len(stored) {
		t.Fatalf("the core remembers %d stored keys, the store holds %d", len(c.stored), len(stored))
	}
	for k, v := range stored {
		if h, ok := c.stored[k]; !ok || h != c.hashValue(v) {
			t.Fatalf("the core does not remember the stored value of %s", k)
		}
	}
}

// replicaPair is two metered cores on one memory store, with the limited
// manifest set and the user-defined secrets written through a.
func replicaPair(t *testing.T, u govUsers) (a, b *Core, st *store.Memory) {
	t.Helper()
	st = store.NewMemory()
	a = newMeteredCore(t, st)
	b = newMeteredCore(t, st)
	if _, err := a.SetManifest(context.Background(), encodeManifest(t, limitedManifest(u, 1000))); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteSecrets(context.Background(), u.alice.Cert, validUserSecrets(t)); err != nil {
		t.Fatal(err)
	}
	if kind := reloadKind(t, b); kind != reloadFull {
		t.Fatalf("b took over the manifest with a %s reload", kind)
	}
	sameAsRestarted(t, b, st)
	return a, b, st
}

// fullUpdate initiates (alice) and, if ack, acknowledges (bob) a full
// update of c to m.
func fullUpdate(t testing.TB, c *Core, u govUsers, m map[string]any, ack bool) {
	t.Helper()
	raw := encodeManifest(t, m)
	if res, err := c.UpdateManifest(context.Background(), u.alice.Cert, raw); err != nil || res.Applied {
		t.Fatalf("UpdateManifest: %+v, %v", res, err)
	}
	if !ack {
		return
	}
	if res, err := c.AcknowledgeUpdate(context.Background(), u.bob.Cert, raw); err != nil || !res.Applied {
		t.Fatalf("AcknowledgeUpdate: %+v, %v", res, err)
	}
}

// TestReloadTakesOverCounters writes through one core and reloads another
// on the same store: changes of activation counts, monotonic counters and
// update log entries alone are taken over incrementally, any other change
// is read in full, and either way the reloaded core serves what a core
// started afresh on the store serves.
func TestReloadTakesOverCounters(t *testing.T) {
	u := newGovUsers(t)
	a, b, st := replicaPair(t, u)
	ctx := context.Background()
	cert := marbleCert(t, a, "backend", uuid.NewString())
	counterKeyOf := func(name string) string {
		a.mu.Lock()
		defer a.mu.Unlock()
		for k := range a.counters {
			if strings.HasSuffix(k, ":"+base64.RawURLEncoding.EncodeToString([]byte(name))) {
				return k
			}
		}
		t.Fatalf("no counter %s", name)
		return ""
	}
	tests := []struct {
		name string
		op   func(t *testing.T)
		want string
	}{
		{"nothing", func(*testing.T) {}, reloadUnchanged},
		{"limited activation", func(t *testing.T) {
			if _, err := activate(a, newMarbleID(t), "limited", uuid.NewString(), nil); err != nil {
				t.Fatal(err)
			}
		}, reloadIncremental},
		{"monotonic counter", func(t *testing.T) {
			if _, err := a.SetMonotonicCounter(ctx, cert, "c1", 5); err != nil {
				t.Fatal(err)
			}
		}, reloadIncremental},
		{"counters and activations", func(t *testing.T) {
			for i := range 3 {
				if _, err := a.SetMonotonicCounter(ctx, cert, fmt.Sprintf("c%d", i), uint64(10+i)); err != nil {
					t.Fatal(err)
				}
				if _, err := activate(a, newMarbleID(t), "limited", uuid.NewString(), nil); err != nil {
					t.Fatal(err)
				}
			}
		}, reloadIncremental},
		{"update log entry", func(t *testing.T) {
			a.mu.Lock()
			key := updateLogKey(a.updateSeq + 1)
			a.mu.Unlock()
			if err := st.Commit(ctx, map[string][]byte{key: []byte(`{"update":"written elsewhere"}`)}); err != nil {
				t.Fatal(err)
			}
		}, reloadIncremental},
		{"counter removed", func(t *testing.T) {
			if err := st.Commit(ctx, map[string][]byte{prefixCounter + counterKeyOf("c2"): nil}); err != nil {
				t.Fatal(err)
			}
		}, reloadIncremental},
		{"user secrets", func(t *testing.T) {
			if err := a.WriteSecrets(ctx, u.alice.Cert, validUserSecrets(t)); err != nil {
				t.Fatal(err)
			}
		}, reloadFull},
		{"user secret and counter", func(t *testing.T) {
			if _, err := a.SetMonotonicCounter(ctx, cert, "c1", 50); err != nil {
				t.Fatal(err)
			}
			if err := a.WriteSecrets(ctx, u.alice.Cert, map[string]UserSecret{"userPlain": {Key: []byte("other")}}); err != nil {
				t.Fatal(err)
			}
		}, reloadFull},
		{"package update", func(t *testing.T) {
			if _, err := a.UpdateManifest(ctx, u.alice.Cert, []byte(`{"Packages": {"backend": {"SecurityVersion": 7}}}`)); err != nil {
				t.Fatal(err)
			}
		}, reloadFull},
		{"update initiated", func(t *testing.T) { fullUpdate(t, a, u, limitedManifest(u, 500), false) }, reloadFull},
		{"update cancelled", func(t *testing.T) {
			if err := a.CancelUpdate(ctx, u.bob.Cert); err != nil {
				t.Fatal(err)
			}
		}, reloadFull},
		{"update applied", func(t *testing.T) { fullUpdate(t, a, u, limitedManifest(u, 500), true) }, reloadFull},
		{"unknown key", func(t *testing.T) {
			if err := st.Commit(ctx, map[string][]byte{"other/key": []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}, reloadFull},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.op(t)
			if kind := reloadKind(t, b); kind != tc.want {
				t.Fatalf("the reload was %s, want %s", kind, tc.want)
			}
			sameAsRestarted(t, b, st)
			// a takes over what was written to the store directly, and
			// remembers what it wrote itself.
			if err := a.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			sameAsRestarted(t, a, st)
		})
	}
	// The update log entry written to the store directly is served.
	if log, _ := b.UpdateLog(); !slices.Contains(log, `{"update":"written elsewhere"}`) {
		t.Fatal("b does not serve the update log entry written elsewhere")
	}
}

// TestReloadAfterOwnWrites: a core remembers what it writes itself, so
// that reading the stored state again finds nothing to take over.
func TestReloadAfterOwnWrites(t *testing.T) {
	u := newGovUsers(t)
	st := store.NewMemory()
	c := newMeteredCore(t, st)
	ctx := context.Background()
	check := func(what string) {
		t.Helper()
		if kind := reloadKind(t, c); kind != reloadUnchanged {
			t.Fatalf("after %s, a reload was %s, want %s", what, kind, reloadUnchanged)
		}
		sameAsRestarted(t, c, st)
	}
	check("the start")
	if _, err := c.SetManifest(ctx, encodeManifest(t, limitedManifest(u, 1000))); err != nil {
		t.Fatal(err)
	}
	check("setting the manifest")
	if err := c.WriteSecrets(ctx, u.alice.Cert, validUserSecrets(t)); err != nil {
		t.Fatal(err)
	}
	check("writing secrets")
	if _, err := activate(c, newMarbleID(t), "limited", uuid.NewString(), nil); err != nil {
		t.Fatal(err)
	}
	check("an activation")
	if _, err := c.SetMonotonicCounter(ctx, marbleCert(t, c, "backend", uuid.NewString()), "n", 3); err != nil {
		t.Fatal(err)
	}
	check("a monotonic counter")
	if _, err := c.UpdateManifest(ctx, u.alice.Cert, []byte(`{"Packages": {"backend": {"SecurityVersion": 7}}}`)); err != nil {
		t.Fatal(err)
	}
	check("a package update")
	fullUpdate(t, c, u, limitedManifest(u, 10), false)
	check("initiating an update")
	if err := c.CancelUpdate(ctx, u.bob.Cert); err != nil {
		t.Fatal(err)
	}
	check("cancelling an update")
	// Without the limited type, its activation count is deleted.
	fullUpdate(t, c, u, govManifest(u, nil), true)
	check("a full update")
}

// TestReloadRefusesUnreadableCounter: an unreadable counter fails the
// reload as it fails a full restore, and nothing served changes.
func TestReloadRefusesUnreadableCounter(t *testing.T) {
	u := newGovUsers(t)
	ctx := context.Background()
	tests := []struct {
		key       string
		bad, good []byte
		// activations is the count of limited once good is stored.
		activations uint64
	}{
		{prefixCounter + "x", []byte("not a number"), []byte("7"), 1},
		{prefixActivations + "limited", []byte("-1"), []byte("2"), 2},
		{prefixUpdateLog + "zzz", []byte(`{}`), nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			a, b, st := replicaPair(t, u)
			if _, err := activate(a, newMarbleID(t), "limited", uuid.NewString(), nil); err != nil {
				t.Fatal(err)
			}
			before, counts := served(t, b), reloadCounts(b)
			if err := st.Commit(ctx, map[string][]byte{tc.key: tc.bad}); err != nil {
				t.Fatal(err)
			}
			if _, err := New(Config{Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: st}); err == nil {
				t.Fatal("a core started on the store restored the unreadable value")
			}
			if err := b.Reload(ctx); KindOf(err) != KindUnavailable {
				t.Fatalf("reload with an unreadable value: %v (kind %v), want Unavailable", err, KindOf(err))
			}
			sameServed(t, served(t, b), before)
			if got := reloadCounts(b); !maps.Equal(got, counts) {
				t.Fatalf("a failed reload was counted: %v, before %v", got, counts)
			}
			// Once the value is readable or gone, the reload takes over
			// every change.
			if err := st.Commit(ctx, map[string][]byte{tc.key: tc.good}); err != nil {
				t.Fatal(err)
			}
			if kind := reloadKind(t, b); kind != reloadIncremental {
				t.Fatalf("the reload was %s, want %s", kind, reloadIncremental)
			}
			sameAsRestarted(t, b, st)
			if n := activationCount(b, "limited"); n != tc.activations {
				t.Fatalf("b counts %d activations, want %d", n, tc.activations)
			}
		})
	}
}

// TestReloadRandomInterleavings runs random writes of every kind through
// two cores on one store, each followed by a reload of the other: after
// each, both serve what a core started afresh on the store serves.
func TestReloadRandomInterleavings(t *testing.T) {
	u := newGovUsers(t)
	a, b, st := replicaPair(t, u)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(15, 2026))
	limit := 1000
	marbles := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	kinds := map[string]int{}
	whats := map[string]int{}
	for step := range 60 {
		writer, other := a, b
		if rng.IntN(2) == 1 {
			writer, other = b, a
		}
		var what string
		switch op := rng.IntN(10); {
		case op < 3:
			what = "activation"
			if _, err := activate(writer, newMarbleID(t), "limited", uuid.NewString(), nil); err != nil {
				t.Fatalf("step %d: activation: %v", step, err)
			}
		case op < 6:
			what = "counter"
			cert := marbleCert(t, writer, "backend", marbles[rng.IntN(len(marbles))])
			if _, err := writer.SetMonotonicCounter(ctx, cert, "n"+strconv.Itoa(rng.IntN(4)), rng.Uint64N(1000)); err != nil {
				t.Fatalf("step %d: counter: %v", step, err)
			}
		case op < 8:
			what = "secret"
			if err := writer.WriteSecrets(ctx, u.alice.Cert, map[string]UserSecret{"userPlain": {Key: []byte(strconv.Itoa(step))}}); err != nil {
				t.Fatalf("step %d: secret: %v", step, err)
			}
		case op < 9:
			// Initiated and cancelled: only the update log changes.
			what = "cancelled update"
			fullUpdate(t, writer, u, limitedManifest(u, limit-1), false)
			if err := writer.CancelUpdate(ctx, u.carol.Cert); err != nil {
				t.Fatalf("step %d: cancel: %v", step, err)
			}
		default:
			what = "update"
			limit--
			fullUpdate(t, writer, u, limitedManifest(u, limit), true)
		}
		whats[what]++
		kind := reloadKind(t, other)
		kinds[kind]++
		if what == "secret" || what == "update" {
			if kind != reloadFull {
				t.Fatalf("step %d: a %s was taken over by a %s reload", step, what, kind)
			}
		} else if kind == reloadFull {
			t.Fatalf("step %d: a %s was taken over by a full reload", step, what)
		}
		sameAsRestarted(t, other, st)
		sameAsRestarted(t, writer, st)
	}
	if kinds[reloadIncremental] == 0 || kinds[reloadFull] == 0 || len(whats) != 5 {
		t.Fatalf("reloads by kind: %v, writes by kind %v; want writes of every kind and reloads of both kinds", kinds, whats)
	}
}

// BenchmarkReloadAfterCounterChange reloads a replica after another one
// raised one monotonic counter, in a deployment with 10,000 counters and
// 1,000 user-defined secrets: as served (incremental) and with the
// replica made to parse the whole state again (full), as it does after
// any other change. The reload variants measure Core.Reload, the read of
// the memory store included; the serve variants only what follows the
// read.
func BenchmarkReloadAfterCounterChange(b *testing.B) {
	const counters, secrets = 10000, 1000
	ctx := context.Background()
	u := newGovUsers(b)
	m := govManifest(u, nil)
	writer := section(section(m, "Roles"), "secretWriter")
	values := map[string]UserSecret{}
	for i := range secrets {
		name := fmt.Sprintf("user%04d", i)
		section(m, "Secrets")[name] = map[string]any{"Type": "plain", "UserDefined": true}
		writer["ResourceNames"] = append(writer["ResourceNames"].([]string), name)
		values[name] = UserSecret{Key: []byte(fmt.Sprintf("value of secret %d", i))}
	}
	st := store.NewMemory()
	a := newMeteredCore(b, st)
	if _, err := a.SetManifest(ctx, encodeManifest(b, m)); err != nil {
		b.Fatal(err)
	}
	if err := a.WriteSecrets(ctx, u.alice.Cert, values); err != nil {
		b.Fatal(err)
	}
	// The counters of other marbles, stored as SetMonotonicCounter stores
	// them.
	changes := map[string][]byte{}
	for i := range counters {
		id := marbleIdentity{marbleType: "backend", uuid: uuid.NewString()}
		changes[prefixCounter+counterKey(id, "n")] = []byte(strconv.Itoa(i))
	}
	if err := st.Commit(ctx, changes); err != nil {
		b.Fatal(err)
	}
	if err := a.Reload(ctx); err != nil {
		b.Fatal(err)
	}
	cert := marbleCert(b, a, "backend", uuid.NewString())
	replica := newMeteredCore(b, st)
	value := uint64(0)
	for _, kind := range []string{reloadIncremental, reloadFull} {
		for _, variant := range []string{"reload", "serve"} {
			b.Run(kind+"/"+variant, func(b *testing.B) {
				before := reloadCounts(replica)[kind]
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					value++
					if _, err := a.SetMonotonicCounter(ctx, cert, "n", value); err != nil {
						b.Fatal(err)
					}
					if kind == reloadFull {
						// A value the replica does not remember is a
						// change that calls for a full restore.
						replica.mu.Lock()
						delete(replica.stored, keyManifestSignature)
						replica.mu.Unlock()
					}
					if variant == "reload" {
						b.StartTimer()
						if err := replica.Reload(ctx); err != nil {
							b.Fatal(err)
						}
						continue
					}
					stored, err := st.Load(ctx)
					if err != nil {
						b.Fatal(err)
					}
					replica.mu.Lock()
					b.StartTimer()
					err = replica.serve(ctx, stored, false, "")
					b.StopTimer()
					replica.mu.Unlock()
					if err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if n := reloadCounts(replica)[kind] - before; n != float64(b.N) {
					b.Fatalf("%v of %d reloads were %s", n, b.N, kind)
				}
				sameAsRestarted(b, replica, st)
			})
		}
	}
}

// TestReloadAfterRecovery: a core that recovered the stored state with the
// owners' secrets remembers it, so that a reload finds nothing to take over
// and the next counter written elsewhere is taken over incrementally.
func TestReloadAfterRecovery(t *testing.T) {
	u := newGovUsers(t)
	ctx := context.Background()
	owner := testsupport.NewRecoveryKey(t)
	st := store.NewMemory()
	first := newMeteredCore(t, st)
	encrypted, err := first.SetManifest(ctx, encodeManifest(t, govManifest(u, map[string]*testsupport.RecoveryKey{"owner": owner})))
	if err != nil {
		t.Fatal(err)
	}
	st.LoseSealKey()
	c := newMeteredCore(t, st)
	if s, _ := c.Status(); s != StateRecovery {
		t.Fatalf("state after losing the seal key: %v", s)
	}
	share := owner.Decrypt(t, encrypted["owner"])
	if left, err := c.Recover(ctx, share, owner.Sign(t, share)); err != nil || left != 0 {
		t.Fatalf("Recover: %d, %v", left, err)
	}
	if kind := reloadKind(t, c); kind != reloadUnchanged {
		t.Fatalf("a reload after recovery was %s, want %s", kind, reloadUnchanged)
	}
	sameAsRestarted(t, c, st)
	if err := first.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := first.SetMonotonicCounter(ctx, marbleCert(t, first, "backend", uuid.NewString()), "n", 4); err != nil {
		t.Fatal(err)
	}
	if kind := reloadKind(t, c); kind != reloadIncremental {
		t.Fatalf("a reload after a counter was written elsewhere was %s, want %s", kind, reloadIncremental)
	}
	sameAsRestarted(t, c, st)
}
