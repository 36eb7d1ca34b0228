package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// listObjects returns the objects of the state in ns by name.
func listObjects(t testing.TB, ns string) map[string]corev1.Secret {
	t.Helper()
	list, err := kubeEnv(t).Clientset.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: LabelState + "=" + DefaultKubeStateName})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]corev1.Secret{}
	for _, s := range list.Items {
		out[s.Name] = s
	}
	return out
}

// requireNoLeftovers fails unless every chunk object in ns is listed by
// the head of s.
func requireNoLeftovers(t testing.TB, s *KubeStore) {
	t.Helper()
	listed := s.head.chunks()
	objects := listObjects(t, s.ns)
	for name, o := range objects {
		if o.Labels[LabelObject] == objectChunk && !listed[name] {
			t.Errorf("chunk %s is listed by no head", name)
		}
	}
	for name := range listed {
		if _, ok := objects[name]; !ok {
			t.Errorf("chunk %s listed by the head is missing", name)
		}
	}
}

func TestKubeRacingCommits(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	sealer := sealerWith(t, 1)
	a, b := openKube(t, ns, sealer), openKube(t, ns, sealer)
	want := kv("manifest/raw", "{}")
	if _, err := a.Reset(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	for round := range 8 {
		for _, s := range []*KubeStore{a, b} {
			requireState(t, loadOK(t, s), want)
		}
		changes := []map[string][]byte{
			kv("activations/a", strconv.Itoa(round), "round", "a"+strconv.Itoa(round)),
			kv("activations/b", strconv.Itoa(round), "round", "b"+strconv.Itoa(round)),
		}
		errs := make([]error, 2)
		var start, done sync.WaitGroup
		start.Add(1)
		for i, s := range []*KubeStore{a, b} {
			done.Add(1)
			go func() {
				defer done.Done()
				start.Wait()
				errs[i] = s.Commit(context.Background(), changes[i])
			}()
		}
		start.Done()
		done.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if won >= 0 {
					t.Fatalf("round %d: both commits succeeded", round)
				}
				won = i
			case !errors.Is(err, ErrConflict):
				t.Fatalf("round %d: the losing commit failed with %v, want ErrConflict", round, err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: no commit succeeded: %v", round, errs)
		}
		want = applied(want, changes[won])
		// The loser stays usable: after a Load it commits again.
		loser := []*KubeStore{a, b}[1-won]
		requireErrIs(t, loser.Commit(t.Context(), kv("x", "1")), ErrConflict)
	}
	for _, s := range []*KubeStore{a, b} {
		requireState(t, loadOK(t, s), want)
	}
	if err := b.Commit(t.Context(), kv("after", "1")); err != nil {
		t.Fatalf("a commit after Load: %v", err)
	}
	requireState(t, loadOK(t, a), applied(want, kv("after", "1")))
	requireNoLeftovers(t, a)
}

// countingClient returns a client for the shared control plane that adds
// the body size of every write request to written.
func countingClient(t testing.TB, written, writes *atomic.Int64) kubernetes.Interface {
	t.Helper()
	cfg := rest.CopyConfig(kubeEnv(t).Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method != http.MethodGet {
				writes.Add(1)
				written.Add(max(r.ContentLength, 0))
			}
			return rt.RoundTrip(r)
		})
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// largeState is 10,000 activation counters and 1,000 secrets of the size
// of an RSA certificate with its key.
func largeState(t testing.TB) map[string][]byte {
	t.Helper()
	st := make(map[string][]byte, 11000)
	for i := range 10000 {
		st[fmt.Sprintf("activations/marble-%05d", i)] = []byte(strconv.Itoa(i % 97))
	}
	for i := range 1000 {
		v := make([]byte, 3<<10)
		if _, err := rand.Read(v); err != nil {
			t.Fatal(err)
		}
		st[fmt.Sprintf("secret/rsa-%04d", i)] = v
	}
	return st
}

func TestKubeLargeState(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	sealer := sealerWith(t, 1)
	var written, writes atomic.Int64
	s, err := OpenKube(KubeOptions{Client: countingClient(t, &written, &writes), Namespace: ns, Sealers: kubeSealers(sealer)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	state := largeState(t)
	if size := len(encodeEntries(state)); size < 3<<20 {
		t.Fatalf("the large state is only %d bytes", size)
	}
	if _, err := s.Reset(t.Context(), state); err != nil {
		t.Fatal(err)
	}
	t.Logf("Reset of %d bytes of state: %d write requests, %d bytes written", len(encodeEntries(state)), writes.Load(), written.Load())

	other := openKube(t, ns, sealer)
	start := time.Now()
	got := loadOK(t, other)
	t.Logf("Load of the large state by another store: %v", time.Since(start))
	requireState(t, got, state)

	written.Store(0)
	writes.Store(0)
	if err := s.Commit(t.Context(), kv("activations/marble-00042", "43")); err != nil {
		t.Fatal(err)
	}
	t.Logf("one-key commit on the large state: %d write requests, %d bytes written", writes.Load(), written.Load())
	// One head update, holding the delta: a small JSON body.
	if writes.Load() != 1 || written.Load() > 16<<10 {
		t.Fatalf("a one-key commit made %d write requests of %d bytes in all, want 1 small one", writes.Load(), written.Load())
	}
	for name, o := range listObjects(t, ns) {
		if n := len(o.Data[chunkDataKey]) + len(o.Data[headDataKey]); n > maxPieceSize {
			t.Errorf("object %s holds %d bytes", name, n)
		}
	}
	state["activations/marble-00042"] = []byte("43")
	start = time.Now()
	requireState(t, loadOK(t, other), state)
	t.Logf("Load after the commit: %v", time.Since(start))
}

func TestKubeCompaction(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	s := openKube(t, ns, sealerWith(t, 1))
	s.maxDeltas = 4
	want := kv("base", "1")
	if _, err := s.Reset(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		ch := kv("k"+strconv.Itoa(i%3), strconv.Itoa(i))
		if err := s.Commit(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		want = applied(want, ch)
		if n := len(s.head.segments) - 1; n >= s.maxDeltas {
			t.Fatalf("after commit %d the head lists %d deltas", i, n)
		}
	}
	requireNoLeftovers(t, s)
	requireState(t, loadOK(t, openKube(t, ns, sealerWith(t, 1))), want)
}

// rewrite replaces an object's data through the API, as an attacker with
// access to the namespace could.
func rewrite(t testing.TB, ns, name string, f func(map[string][]byte)) {
	t.Helper()
	c := kubeEnv(t).Clientset.CoreV1().Secrets(ns)
	o, err := c.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f(o.Data)
	if o.Immutable != nil && *o.Immutable {
		if err := c.Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		o.ResourceVersion = ""
		_, err = c.Create(t.Context(), o, metav1.CreateOptions{})
	} else {
		_, err = c.Update(t.Context(), o, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestKubeTamperingIsRefused(t *testing.T) {
	sealer := sealerWith(t, 1)
	// setup commits a delta, inline or to a chunk.
	setup := func(t *testing.T, inline bool) (*KubeStore, string) {
		ns := kubeEnv(t).Namespace(t)
		s := openKube(t, ns, sealer)
		if !inline {
			s.inlineMax = 0
		}
		if _, err := s.Reset(t.Context(), kv("a", "1", "b", "2")); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(t.Context(), kv("c", "3")); err != nil {
			t.Fatal(err)
		}
		return s, ns
	}
	t.Run("chunk", func(t *testing.T) {
		for _, seg := range []int{0, 1} {
			s, ns := setup(t, false)
			name := s.head.segments[seg].pieces[0].name
			rewrite(t, ns, name, func(d map[string][]byte) { d[chunkDataKey][len(d[chunkDataKey])-1] ^= 1 })
			_, err := openKube(t, ns, sealer).Load(t.Context())
			requireErrIs(t, err, ErrUnseal, ErrCorrupt)
			rewrite(t, ns, name, func(d map[string][]byte) { d[chunkDataKey] = append(d[chunkDataKey], 0) })
			_, err = openKube(t, ns, sealer).Load(t.Context())
			requireErrIs(t, err, ErrUnseal, ErrCorrupt)
		}
	})
	t.Run("missing chunk", func(t *testing.T) {
		s, ns := setup(t, false)
		if err := kubeEnv(t).Clientset.CoreV1().Secrets(ns).Delete(t.Context(), s.head.segments[1].pieces[0].name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := openKube(t, ns, sealer).Load(t.Context())
		requireErrIs(t, err, ErrUnseal, ErrCorrupt)
	})
	t.Run("head generation", func(t *testing.T) {
		_, ns := setup(t, true)
		rewrite(t, ns, DefaultKubeStateName, func(d map[string][]byte) {
			off := 8 + 2 + 2 + keyCheckSize
			binary.LittleEndian.PutUint64(d[headDataKey][off:], binary.LittleEndian.Uint64(d[headDataKey][off:])+100)
		})
		fresh := openKube(t, ns, sealer)
		_, err := fresh.Load(t.Context())
		requireErrIs(t, err, ErrUnseal, ErrCorrupt)
		requireErrIs(t, fresh.Commit(t.Context(), kv("x", "1")), ErrNotOpen)
	})
	t.Run("oversized head", func(t *testing.T) {
		_, ns := setup(t, true)
		rewrite(t, ns, DefaultKubeStateName, func(d map[string][]byte) { d[headDataKey] = make([]byte, maxHeadSize+1) })
		_, err := openKube(t, ns, sealer).Load(t.Context())
		requireErrIs(t, err, ErrUnseal, ErrCorrupt)
	})
	t.Run("rollback", func(t *testing.T) {
		s, ns := setup(t, true)
		old := listObjects(t, ns)[DefaultKubeStateName].Data[headDataKey]
		if err := s.Commit(t.Context(), kv("d", "4")); err != nil {
			t.Fatal(err)
		}
		rewrite(t, ns, DefaultKubeStateName, func(d map[string][]byte) { d[headDataKey] = old })
		_, err := s.Load(t.Context())
		requireErrIs(t, err, ErrRollback)
		requireErrIs(t, s.Commit(t.Context(), kv("x", "1")), ErrNotOpen)
		// A store that has not seen the newer head takes the older one: the
		// rollback protection is this store's memory, for now.
		requireState(t, loadOK(t, openKube(t, ns, sealer)), kv("a", "1", "b", "2", "c", "3"))
	})
}

// errKubeCrash stops a write at a hook point, as a crash would.
var errKubeCrash = errors.New("crash")

func TestKubeCrashPoints(t *testing.T) {
	base := kv("manifest/raw", "{}", "ca/root/cert", "pem")
	c1 := kv("activations/web", "1")
	c2 := kv("secret/a", string(bytes.Repeat([]byte("s"), 3000)), "ca/root/cert", "<nil>")
	c3 := kv("activations/web", "2")
	// The seal modes have sealers of their own, as on SGX, where they
	// are keys of two different identities.
	sealers := map[seal.Mode]seal.Sealer{seal.ModeProductKey: sealerWith(t, 1), seal.ModeUniqueKey: sealerWith(t, 2)}
	type scenario struct {
		name  string
		setup func(s *KubeStore)
		op    func(ctx context.Context, s *KubeStore) error
		after map[string][]byte
		mode  seal.Mode
		// needKey: after a crash, no platform may have the key (seal mode
		// Disabled, or this platform's entry replaced for a new KEK).
		needKey bool
	}
	scenarios := []scenario{
		{name: "commit", op: func(ctx context.Context, s *KubeStore) error { return s.Commit(ctx, c2) }, after: applied(applied(base, c1), c2)},
		{
			name:  "commit to a chunk",
			setup: func(s *KubeStore) { s.inlineMax = 0 },
			op:    func(ctx context.Context, s *KubeStore) error { return s.Commit(ctx, c2) },
			after: applied(applied(base, c1), c2),
		},
		{
			// c1 is kept in the head; c3 does not fit beside it.
			name:  "commit that spills",
			setup: func(s *KubeStore) { s.inlineBudget = s.head.inlineBytes() + 16 },
			op:    func(ctx context.Context, s *KubeStore) error { return s.Commit(ctx, c3) },
			after: applied(applied(base, c1), c3),
		},
		{
			name:  "commit and compaction",
			setup: func(s *KubeStore) { s.maxDeltas = 2; s.pieceSize = 1 << 10 },
			op:    func(ctx context.Context, s *KubeStore) error { return s.Commit(ctx, c2) },
			after: applied(applied(base, c1), c2),
		},
		{
			name:  "reset",
			setup: func(s *KubeStore) { s.pieceSize = 8 },
			op: func(ctx context.Context, s *KubeStore) error {
				_, err := s.ResetWith(ctx, kv("new", "state"), ResetOptions{RecoveryData: func([]byte) ([]byte, error) { return []byte("recovery data in pieces"), nil }})
				return err
			},
			after: kv("new", "state"),
		},
		{
			name:  "seal mode",
			op:    func(ctx context.Context, s *KubeStore) error { return s.SetSealMode(ctx, seal.ModeUniqueKey) },
			after: applied(base, c1),
			mode:  seal.ModeUniqueKey,
		},
		{
			name:    "seal mode Disabled",
			op:      func(ctx context.Context, s *KubeStore) error { return s.SetSealMode(ctx, seal.ModeDisabled) },
			after:   applied(base, c1),
			mode:    seal.ModeDisabled,
			needKey: true,
		},
		{
			name: "recovery",
			op: func(ctx context.Context, s *KubeStore) error {
				_, err := s.Unlock(ctx, s.key)
				return err
			},
			after:   applied(base, c1),
			needKey: true,
		},
		{
			name: "recovery data",
			op: func(ctx context.Context, s *KubeStore) error {
				return s.SetRecoveryData(ctx, []byte("new recovery data"))
			},
			after: applied(base, c1),
		},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			for n := 1; ; n++ {
				ns := kubeEnv(t).Namespace(t)
				s := openKubeSealers(t, ns, sealers)
				if _, err := s.Reset(t.Context(), base); err != nil {
					t.Fatal(err)
				}
				if err := s.Commit(t.Context(), c1); err != nil {
					t.Fatal(err)
				}
				if sc.setup != nil {
					sc.setup(s)
				}
				calls, point, headWritten := 0, "", false
				s.hook = func(p string) error {
					calls++
					if calls == n {
						point = p
						return errKubeCrash
					}
					headWritten = headWritten || p == "head-written"
					return nil
				}
				err := sc.op(t.Context(), s)
				if point == "" {
					if err != nil {
						t.Fatalf("%s without a crash: %v", sc.name, err)
					}
					if n == 1 {
						t.Fatal("no crash point reached")
					}
					r := openKubeSealers(t, ns, sealers)
					requireState(t, reopen(t, r, sc.needKey, s.key), sc.after)
					requireNoLeftovers(t, r)
					return
				}
				if err == nil && !headWritten {
					t.Fatalf("crash at %s (point %d) before the head was written, yet the write succeeded", point, n)
				} else if err != nil {
					requireErrIs(t, err, errKubeCrash)
				}
				r := openKubeSealers(t, ns, sealers)
				got := reopen(t, r, sc.needKey, s.key)
				switch {
				case headWritten || point == "head-written":
					requireState(t, got, sc.after)
				case !equalStates(got, applied(base, c1)) && !equalStates(got, sc.after):
					t.Fatalf("crash at %s (point %d): state %s is neither the old nor the new one", point, n, describe(got))
				}
				if sc.mode != "" && (headWritten || point == "head-written") && r.SealMode() != sc.mode {
					t.Fatalf("crash at %s: seal mode %s", point, r.SealMode())
				}
				// Leftovers are harmless and go with the next new base.
				if _, err := r.Reset(t.Context(), got); err != nil {
					t.Fatal(err)
				}
				requireNoLeftovers(t, r)
				t.Logf("crash at %s (point %d): consistent", point, n)
			}
		})
	}
}

// reopen loads the state with r; when the platform may have no key
// (needKey), it unlocks it with the data key instead, as the owners
// would.
func reopen(t *testing.T, r *KubeStore, needKey bool, dataKey []byte) map[string][]byte {
	t.Helper()
	got, err := r.Load(t.Context())
	if needKey && errors.Is(err, ErrNeedKey) {
		got, err = r.Unlock(t.Context(), dataKey)
	}
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return got
}

// TestKubeUncertainWrite: when the head write fails without telling
// whether it happened, the store refuses further writes until Load.
func TestKubeUncertainWrite(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	s := openKube(t, ns, sealerWith(t, 1))
	s.inlineMax = 0 // the delta goes to a chunk
	if _, err := s.Reset(t.Context(), kv("a", "1")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	s.hook = func(p string) error {
		if p == "chunk-created" {
			cancel()
		}
		return nil
	}
	err := s.Commit(ctx, kv("b", "2"))
	if err == nil {
		t.Fatal("Commit with a cancelled context succeeded")
	}
	s.hook = nil
	if err := s.Commit(t.Context(), kv("c", "3")); err == nil {
		t.Fatal("Commit after a write of unknown outcome succeeded without a Load")
	}
	got := loadOK(t, s)
	if !equalStates(got, kv("a", "1")) && !equalStates(got, kv("a", "1", "b", "2")) {
		t.Fatalf("state %s", describe(got))
	}
	if err := s.Commit(t.Context(), kv("c", "3")); err != nil {
		t.Fatal(err)
	}
}

func TestKubeOpenOptions(t *testing.T) {
	for _, name := range []string{"Upper", "a.b", "x-" + string(bytes.Repeat([]byte("y"), 50))} {
		if _, err := OpenKube(KubeOptions{Client: kubeEnv(t).Clientset, Namespace: "ns", Name: name, Sealers: kubeSealers(sealerWith(t, 1))}); err == nil {
			t.Errorf("OpenKube accepted the state name %q", name)
		}
	}
	s := openKube(t, kubeEnv(t).Namespace(t), sealerWith(t, 1))
	if _, err := s.Reset(t.Context(), kv("a", "1")); err != nil {
		t.Fatal(err)
	}
	for name, o := range listObjects(t, s.ns) {
		if o.Labels[LabelManagedBy] != ManagedByValue || !slices.Contains([]string{objectHead, objectChunk}, o.Labels[LabelObject]) {
			t.Errorf("object %s has labels %v", name, o.Labels)
		}
	}
}

// TestKubeResetKeepsUnopenedStateAside: a Reset of state this store could
// not open copies the head aside and keeps its chunks, also from sweeps;
// a crash after the copy leaves the state in place.
func TestKubeResetKeepsUnopenedStateAside(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	sealer, other := sealerWith(t, 1), sealerWith(t, 2)
	a := openKube(t, ns, sealer)
	key, err := a.Reset(t.Context(), kv("old", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(t.Context(), kv("old", "2")); err != nil {
		t.Fatal(err)
	}
	oldHead := listObjects(t, ns)[DefaultKubeStateName].Data[headDataKey]
	oldChunks := a.head.chunks()

	b := openKube(t, ns, other)
	_, err = b.Load(t.Context())
	requireErrIs(t, err, ErrUnseal)
	b.hook = func(p string) error {
		if p == "discarded" {
			return errKubeCrash
		}
		return nil
	}
	_, err = b.Reset(t.Context(), kv("new", "1"))
	requireErrIs(t, err, errKubeCrash)
	requireState(t, loadOK(t, openKube(t, ns, sealer)), kv("old", "2"))

	b = openKube(t, ns, other)
	if _, err := b.Load(t.Context()); !errors.Is(err, ErrUnseal) {
		t.Fatalf("Load: %v", err)
	}
	if _, err := b.Reset(t.Context(), kv("new", "1")); err != nil {
		t.Fatal(err)
	}
	requireState(t, loadOK(t, openKube(t, ns, other)), kv("new", "1"))
	// Another Reset with compaction's sweep leaves the old state alone.
	if _, err := b.Reset(t.Context(), kv("newer", "1")); err != nil {
		t.Fatal(err)
	}
	objects := listObjects(t, ns)
	var discarded int
	for name, o := range objects {
		if o.Labels[LabelObject] == objectDiscarded {
			discarded++
			if !bytes.Equal(o.Data[headDataKey], oldHead) {
				t.Errorf("%s differs from the head it keeps aside", name)
			}
		}
	}
	if discarded != 2 {
		t.Fatalf("%d heads kept aside, want 2 (one per Reset of unopened state)", discarded)
	}
	for name := range oldChunks {
		if _, ok := objects[name]; !ok {
			t.Fatalf("chunk %s of the state kept aside was deleted", name)
		}
	}
	// The state kept aside can still be opened with its data key.
	rewrite(t, ns, DefaultKubeStateName, func(d map[string][]byte) { d[headDataKey] = oldHead })
	got, err := openKube(t, ns, other).Unlock(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	requireState(t, got, kv("old", "2"))
}

// TestKubeHeadWriteErrors: with the fake clientset, a refused head update
// deletes the commit's chunks and reports ErrConflict; an update that
// failed in an unknown way keeps them and reports ErrBroken until Load.
func TestKubeHeadWriteErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		want       error
		keepChunks bool
	}{
		{"conflict", apierrors.NewConflict(corev1.Resource("secrets"), DefaultKubeStateName, errors.New("changed")), ErrConflict, false},
		{"unknown", apierrors.NewInternalError(errors.New("etcd timed out")), ErrBroken, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			s, err := OpenKube(KubeOptions{Client: client, Namespace: "ns", Sealers: kubeSealers(sealerWith(t, 1))})
			if err != nil {
				t.Fatal(err)
			}
			s.inlineMax = 0 // deltas go to chunks
			if _, err := s.Reset(t.Context(), kv("a", "1")); err != nil {
				t.Fatal(err)
			}
			chunksBefore := countChunks(t, client)
			client.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tc.err
			})
			requireErrIs(t, s.Commit(t.Context(), kv("b", "2")), tc.want)
			if got := countChunks(t, client); (got > chunksBefore) != tc.keepChunks {
				t.Fatalf("%d chunks after the failed commit, %d before", got, chunksBefore)
			}
			requireErrIs(t, s.Commit(t.Context(), kv("c", "3")), tc.want)
			client.ReactionChain = client.ReactionChain[1:]
			requireState(t, loadOK(t, s), kv("a", "1"))
			if err := s.Commit(t.Context(), kv("c", "3")); err != nil {
				t.Fatal(err)
			}
			requireState(t, loadOK(t, s), kv("a", "1", "c", "3"))
		})
	}
}

func countChunks(t testing.TB, c kubernetes.Interface) int {
	t.Helper()
	list, err := c.CoreV1().Secrets("ns").List(t.Context(), metav1.ListOptions{LabelSelector: LabelObject + "=" + objectChunk})
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

// TestKubeChunkWriteErrors: with the fake clientset, a chunk that cannot
// be created because the API server is unreachable or cannot serve for
// now fails the commit with ErrUnavailable, one that the API server
// refuses does not; either way nothing is stored and the next commit,
// without a Load, succeeds.
func TestKubeChunkWriteErrors(t *testing.T) {
	for _, tc := range []struct {
		name        string
		err         error
		unavailable bool
	}{
		{"no connection", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"unavailable", apierrors.NewServiceUnavailable("shutting down"), true},
		{"timeout", apierrors.NewTimeoutError("etcd", 1), true},
		{"forbidden", apierrors.NewForbidden(corev1.Resource("secrets"), "x", errors.New("RBAC")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			s, err := OpenKube(KubeOptions{Client: client, Namespace: "ns", Sealers: kubeSealers(sealerWith(t, 1))})
			if err != nil {
				t.Fatal(err)
			}
			s.inlineMax = 0 // deltas go to chunks
			if _, err := s.Reset(t.Context(), kv("a", "1")); err != nil {
				t.Fatal(err)
			}
			client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tc.err
			})
			err = s.Commit(t.Context(), kv("b", "2"))
			if err == nil || errors.Is(err, ErrUnavailable) != tc.unavailable || errors.Is(err, ErrBroken) {
				t.Fatalf("commit: %v; want an error, ErrUnavailable %v, not ErrBroken", err, tc.unavailable)
			}
			client.ReactionChain = client.ReactionChain[1:]
			if err := s.Commit(t.Context(), kv("c", "3")); err != nil {
				t.Fatal(err)
			}
			requireState(t, loadOK(t, s), kv("a", "1", "c", "3"))
		})
	}
}
