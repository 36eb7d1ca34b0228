package store

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// requestCount counts the API requests of a client: reads (GET) and
// writes (anything else).
type requestCount struct{ reads, writes atomic.Int64 }

func (c *requestCount) reset() { c.reads.Store(0); c.writes.Store(0) }

// countedKube opens a KubeStore on ns whose requests are counted in c.
func countedKube(t testing.TB, ns string, c *requestCount) *KubeStore {
	t.Helper()
	cfg := rest.CopyConfig(kubeEnv(t).Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodGet {
				c.reads.Add(1)
			} else {
				c.writes.Add(1)
			}
			return rt.RoundTrip(r)
		})
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenKube(KubeOptions{Client: client, Namespace: ns, Sealers: kubeSealers(sealerWith(t, 1))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func loadsOf(s *KubeStore, kind string) int {
	return int(counterValue(s.loads.WithLabelValues(kind)))
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// mediumState is 2,000 counters and 200 values of 3 KiB: several chunks.
func mediumState() map[string][]byte {
	st := make(map[string][]byte, 2200)
	for i := range 2000 {
		st[fmt.Sprintf("activations/marble-%05d", i)] = []byte(strconv.Itoa(i))
	}
	for i := range 200 {
		st[fmt.Sprintf("secret/%04d", i)] = make([]byte, 3<<10)
	}
	return st
}

// TestKubeCatchUpAlternating has two stores commit one key in turn, each
// loading the other's commit before its own: every commit is one write
// request (the head, which keeps the small delta) and every load after
// the first one read request (the head), whatever the size of the state.
func TestKubeCatchUpAlternating(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	var ca, cb requestCount
	a, b := countedKube(t, ns, &ca), countedKube(t, ns, &cb)
	want := mediumState()
	if _, err := a.Reset(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	cb.reset()
	requireState(t, loadOK(t, b), want)
	fullReads := cb.reads.Load()
	if loadsOf(b, loadFull) != 1 || len(b.head.segments[0].pieces) < 2 {
		t.Fatalf("the first load: %d full loads, a base of %d chunks", loadsOf(b, loadFull), len(b.head.segments[0].pieces))
	}
	stores, counts := []*KubeStore{a, b}, []*requestCount{&ca, &cb}
	for i := range 20 {
		w, r := stores[i%2], stores[1-i%2]
		ch := kv("activations/marble-00007", strconv.Itoa(i))
		counts[i%2].reset()
		if err := w.Commit(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		if n := counts[i%2].writes.Load(); n != 1 {
			t.Fatalf("commit %d made %d write requests, want 1 (the head)", i, n)
		}
		want = applied(want, ch)
		counts[1-i%2].reset()
		requireState(t, loadOK(t, r), want)
		if n := counts[1-i%2].reads.Load(); n != 1 {
			t.Fatalf("catch-up %d made %d read requests, want 1 (the head)", i, n)
		}
	}
	t.Logf("reads of a full load: %d; of a catch-up after a one-key commit: 1", fullReads)
	if got := loadsOf(a, loadIncremental) + loadsOf(b, loadIncremental); got != 20 {
		t.Fatalf("%d incremental loads, want 20", got)
	}
	// A fresh store reads everything.
	c := openKube(t, ns, sealerWith(t, 1))
	requireState(t, loadOK(t, c), want)
	if loadsOf(c, loadFull) != 1 {
		t.Fatal("a fresh store's load was not full")
	}
}

// TestKubeCatchUpAfterConflict: a commit that lost the race is followed
// by a load that reads only the winner's delta, and the lost race is
// counted.
func TestKubeCatchUpAfterConflict(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	var ca, cb requestCount
	a, b := countedKube(t, ns, &ca), countedKube(t, ns, &cb)
	want := mediumState()
	if _, err := a.Reset(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	loadOK(t, b)
	if err := a.Commit(t.Context(), kv("x", "a")); err != nil {
		t.Fatal(err)
	}
	want = applied(want, kv("x", "a"))
	requireErrIs(t, b.Commit(t.Context(), kv("x", "b")), ErrConflict)
	if n := counterValue(b.conflicts); n != 1 {
		t.Fatalf("%v conflicts counted, want 1", n)
	}
	cb.reset()
	requireState(t, loadOK(t, b), want)
	if n := cb.reads.Load(); n != 1 || loadsOf(b, loadIncremental) != 1 {
		t.Fatalf("the load after a lost race made %d reads (incremental: %d)", n, loadsOf(b, loadIncremental))
	}
	if err := b.Commit(t.Context(), kv("x", "b")); err != nil {
		t.Fatal(err)
	}
	requireState(t, loadOK(t, a), applied(want, kv("x", "b")))
}

// TestKubeCatchUpAcrossCompaction: once the other store wrote a new base,
// a load reads everything again.
func TestKubeCatchUpAcrossCompaction(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	a, b := openKube(t, ns, sealerWith(t, 1)), openKube(t, ns, sealerWith(t, 1))
	a.maxDeltas = 3
	want := kv("base", "1")
	if _, err := a.Reset(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	loadOK(t, b)
	if err := a.Commit(t.Context(), kv("k", "0")); err != nil {
		t.Fatal(err)
	}
	want = applied(want, kv("k", "0"))
	requireState(t, loadOK(t, b), want)
	base := a.head.segments[0].id
	for i := 1; a.head.segments[0].id == base; i++ {
		ch := kv("k"+strconv.Itoa(i), strconv.Itoa(i))
		if err := a.Commit(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		want = applied(want, ch)
	}
	requireState(t, loadOK(t, b), want)
	if loadsOf(b, loadFull) != 2 || loadsOf(b, loadIncremental) != 1 {
		t.Fatalf("loads: %d full, %d incremental; want 2 and 1", loadsOf(b, loadFull), loadsOf(b, loadIncremental))
	}
}

// TestKubeCatchUpMissingChunk: a delta chunk the head lists is gone while
// the head stays: the catch-up is refused as corrupt, like a full load,
// and the store holds nothing open.
func TestKubeCatchUpMissingChunk(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	a, b := openKube(t, ns, sealerWith(t, 1)), openKube(t, ns, sealerWith(t, 1))
	a.inlineMax = 0 // the delta goes to a chunk
	if _, err := a.Reset(t.Context(), kv("base", "1")); err != nil {
		t.Fatal(err)
	}
	loadOK(t, b)
	if err := a.Commit(t.Context(), kv("k", "1")); err != nil {
		t.Fatal(err)
	}
	last := a.head.segments[len(a.head.segments)-1]
	if err := kubeEnv(t).Clientset.CoreV1().Secrets(ns).Delete(t.Context(), last.pieces[0].name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := b.Load(t.Context())
	requireErrIs(t, err, ErrUnseal, ErrCorrupt)
	if loadsOf(b, loadIncremental) != 0 || b.held() != nil {
		t.Fatal("a catch-up with a missing chunk succeeded or left state open")
	}
	requireErrIs(t, b.Commit(t.Context(), kv("x", "1")), ErrNotOpen)
}

// TestKubeCatchUpAfterCrashedWrites: a write stopped after its chunk was
// created leaves the head as it was, which another store catches up to
// reading nothing more; a write stopped right after the head was swapped
// leaves a store whose next load is full.
func TestKubeCatchUpAfterCrashedWrites(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	var cb requestCount
	a, b := openKube(t, ns, sealerWith(t, 1)), countedKube(t, ns, &cb)
	a.inlineMax = 0 // deltas go to chunks
	want := kv("base", "1")
	if _, err := a.Reset(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	loadOK(t, b)
	crash := errors.New("crash")
	a.hook = func(p string) error {
		if p == "chunk-created" {
			return crash
		}
		return nil
	}
	requireErrIs(t, a.Commit(t.Context(), kv("lost", "1")), crash)
	cb.reset()
	requireState(t, loadOK(t, b), want)
	if n := cb.reads.Load(); n != 1 || loadsOf(b, loadIncremental) != 1 {
		t.Fatalf("catch-up to an unchanged head made %d reads", n)
	}

	a.hook = func(p string) error {
		if p == "head-written" {
			return crash
		}
		return nil
	}
	requireErrIs(t, a.Commit(t.Context(), kv("k", "1")), crash)
	want = applied(want, kv("k", "1"))
	a.hook = nil
	requireState(t, loadOK(t, a), want)
	if loadsOf(a, loadFull) != 1 || loadsOf(a, loadIncremental) != 0 {
		t.Fatalf("after a write stopped past its head swap: %d full loads, %d incremental", loadsOf(a, loadFull), loadsOf(a, loadIncremental))
	}
	requireState(t, loadOK(t, b), want)
}

// BenchmarkKubeLoadAfterCommit measures a load of the large state by a
// store that holds it, after another store committed one key: caught up
// from the held state, or read in full.
func BenchmarkKubeLoadAfterCommit(b *testing.B) {
	for _, full := range []bool{false, true} {
		name := "incremental"
		if full {
			name = "full"
		}
		b.Run(name, func(b *testing.B) {
			ns := kubeEnv(b).Namespace(b)
			var cw, cr requestCount
			w, r := countedKube(b, ns, &cw), countedKube(b, ns, &cr)
			if _, err := w.Reset(b.Context(), largeState(b)); err != nil {
				b.Fatal(err)
			}
			loadOK(b, r)
			cr.reset()
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				if err := w.Commit(b.Context(), kv("activations/marble-00042", strconv.Itoa(i))); err != nil {
					b.Fatal(err)
				}
				if full {
					r.unsynced = true
				}
				b.StartTimer()
				if _, err := r.Load(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cr.reads.Load())/float64(b.N), "reads/op")
		})
	}
}
