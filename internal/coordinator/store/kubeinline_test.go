package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// placesOf lists where the head of s keeps each delta.
func placesOf(s *KubeStore) []byte {
	var p []byte
	for _, g := range s.head.segments[1:] {
		p = append(p, g.place())
	}
	return p
}

// TestKubeInlineSpill: with a small inline budget, commits keep their
// deltas in the head (one write request) until the next would exceed
// the budget; that commit first moves the head's deltas into one chunk
// object (two write requests). A store that follows every commit still
// catches up with one read, since the moved deltas are the ones it holds;
// one that fell behind reads each packed object once; a fresh one reads
// everything; all find the same state.
func TestKubeInlineSpill(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	var ca, cb, cc requestCount
	a, b, c := countedKube(t, ns, &ca), countedKube(t, ns, &cb), countedKube(t, ns, &cc)
	a.inlineBudget = 1 << 10
	want := mediumState()
	if _, err := a.Reset(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	loadOK(t, b)
	loadOK(t, c)
	spills := 0
	for i := range 24 {
		ch := kv(fmt.Sprintf("secret/%04d", i%5), strings.Repeat(strconv.Itoa(i%10), 200))
		before := a.head.inlineBytes()
		ca.reset()
		if err := a.Commit(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		want = applied(want, ch)
		last := a.head.segments[len(a.head.segments)-1]
		if last.place() != placeInline {
			t.Fatalf("commit %d: the delta is kept in place %d", i, last.place())
		}
		wantWrites := int64(1)
		if before+len(last.inline) > a.inlineBudget {
			wantWrites = 2
			spills++
			if a.head.inlineBytes() != len(last.inline) || a.head.inlineSegments() != 1 {
				t.Fatalf("commit %d spilled, yet the head keeps %d inline bytes", i, a.head.inlineBytes())
			}
		}
		if n := ca.writes.Load(); n != wantWrites || a.head.inlineBytes() > a.inlineBudget {
			t.Fatalf("commit %d: %d write requests (want %d), %d inline bytes", i, n, wantWrites, a.head.inlineBytes())
		}
		cb.reset()
		requireState(t, loadOK(t, b), want)
		if n := cb.reads.Load(); n != 1 {
			t.Fatalf("catch-up %d: %d read requests, want 1", i, n)
		}
	}
	if spills < 3 || loadsOf(b, loadIncremental) != 24 {
		t.Fatalf("%d spills, %d incremental loads", spills, loadsOf(b, loadIncremental))
	}
	objects := map[string]bool{}
	for _, g := range a.head.segments[1:] {
		if g.place() == placePacked {
			objects[g.pieces[0].name] = true
		}
	}
	cc.reset()
	requireState(t, loadOK(t, c), want)
	if n := cc.reads.Load(); n != int64(1+len(objects)) || loadsOf(c, loadIncremental) != 1 {
		t.Fatalf("a catch-up over %d packed objects made %d reads", len(objects), n)
	}
	fresh := openKube(t, ns, sealerWith(t, 1))
	requireState(t, loadOK(t, fresh), want)
	requireNoLeftovers(t, a)
	// Compaction folds inline and packed deltas into a base, and removes
	// the packed objects.
	a.maxDeltas = len(a.head.segments) - 1
	if err := a.Commit(t.Context(), kv("x", "1")); err != nil {
		t.Fatal(err)
	}
	want = applied(want, kv("x", "1"))
	if len(a.head.segments) != 1 {
		t.Fatalf("after compaction the head lists %d segments", len(a.head.segments))
	}
	requireNoLeftovers(t, a)
	requireState(t, loadOK(t, b), want)
	requireState(t, loadOK(t, openKube(t, ns, sealerWith(t, 1))), want)
}

// TestKubeLargeDeltaGoesToChunk: a delta sealed larger than the inline
// limit is written to a chunk, as before: two write requests, and a
// catch-up reads the head and the chunk. The deltas in the head stay.
func TestKubeLargeDeltaGoesToChunk(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	var ca, cb requestCount
	a, b := countedKube(t, ns, &ca), countedKube(t, ns, &cb)
	want := kv("base", "1")
	if _, err := a.Reset(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	loadOK(t, b)
	small, large := kv("a", "1"), kv("b", strings.Repeat("x", maxInlineSegment))
	for _, ch := range []map[string][]byte{small, large} {
		ca.reset()
		if err := a.Commit(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		want = applied(want, ch)
	}
	if p := placesOf(a); !bytes.Equal(p, []byte{placeInline, placeChunks}) {
		t.Fatalf("deltas kept in places %v", p)
	}
	if n := ca.writes.Load(); n != 2 {
		t.Fatalf("the large commit made %d write requests, want 2 (chunk, head)", n)
	}
	cb.reset()
	requireState(t, loadOK(t, b), want)
	if n := cb.reads.Load(); n != 2 {
		t.Fatalf("the catch-up made %d reads, want 2 (head, chunk)", n)
	}
	requireState(t, loadOK(t, openKube(t, ns, sealerWith(t, 1))), want)
}

// TestKubeInlineTampering: a changed byte of a delta kept in the head, or
// of one moved into a packed object, or two packed deltas swapped, is
// refused as corrupt, by a fresh load and by a catch-up.
func TestKubeInlineTampering(t *testing.T) {
	sealer := sealerWith(t, 1)
	// setup leaves a head with two deltas packed in one object and one
	// kept inline, and a store b that holds the state before them.
	setup := func(t *testing.T) (a, b *KubeStore, ns string) {
		ns = kubeEnv(t).Namespace(t)
		a, b = openKube(t, ns, sealer), openKube(t, ns, sealer)
		if _, err := a.Reset(t.Context(), kv("a", "1")); err != nil {
			t.Fatal(err)
		}
		loadOK(t, b)
		a.inlineBudget = 100 // two one-key deltas, not three
		for _, ch := range []map[string][]byte{kv("b", "2"), kv("c", "3"), kv("d", "4")} {
			if err := a.Commit(t.Context(), ch); err != nil {
				t.Fatal(err)
			}
		}
		g1, g2 := a.head.segments[1], a.head.segments[2]
		if p := placesOf(a); !bytes.Equal(p, []byte{placePacked, placePacked, placeInline}) || g1.pieces[0].name != g2.pieces[0].name {
			t.Fatalf("deltas kept in places %v", p)
		}
		return a, b, ns
	}
	refused := func(t *testing.T, b *KubeStore, ns string) {
		t.Helper()
		_, err := openKube(t, ns, sealer).Load(t.Context())
		requireErrIs(t, err, ErrUnseal, ErrCorrupt)
		_, err = b.Load(t.Context())
		requireErrIs(t, err, ErrUnseal, ErrCorrupt)
	}
	t.Run("inline", func(t *testing.T) {
		a, b, ns := setup(t)
		inline := a.head.segments[3].inline
		rewrite(t, ns, DefaultKubeStateName, func(d map[string][]byte) {
			i := bytes.Index(d[headDataKey], inline)
			if i < 0 {
				t.Fatal("the inline delta is not in the head")
			}
			d[headDataKey][i+len(inline)/2] ^= 1
		})
		refused(t, b, ns)
	})
	t.Run("packed", func(t *testing.T) {
		a, b, ns := setup(t)
		r := a.head.segments[1].pieces[0]
		rewrite(t, ns, r.name, func(d map[string][]byte) { d[r.key][0] ^= 1 })
		refused(t, b, ns)
	})
	t.Run("packed swapped", func(t *testing.T) {
		a, b, ns := setup(t)
		g1, g2 := a.head.segments[1], a.head.segments[2]
		rewrite(t, ns, g1.pieces[0].name, func(d map[string][]byte) {
			d[g1.pieces[0].key], d[g2.pieces[0].key] = d[g2.pieces[0].key], d[g1.pieces[0].key]
		})
		refused(t, b, ns)
	})
}

// TestKubeInlineSegmentsAreBound: inline deltas swapped in an authentic
// head do not open: each is bound to its state, kind and id.
func TestKubeInlineSegmentsAreBound(t *testing.T) {
	aead, kc := fuzzAEAD(t)
	seal := func(id uint64, ch map[string][]byte) segment {
		sealed, err := sealSegment(aead, "s", kc, segDelta, id, encodeEntries(ch))
		if err != nil {
			t.Fatal(err)
		}
		return segment{kind: segDelta, id: id, inline: sealed}
	}
	g1, g2 := seal(1, kv("a", "1")), seal(2, kv("a", "2"))
	if _, err := openSegments(aead, "s", kc, []segment{g1, g2}, nil); err != nil {
		t.Fatal(err)
	}
	g1.inline, g2.inline = g2.inline, g1.inline
	_, err := openSegments(aead, "s", kc, []segment{g1, g2}, nil)
	requireErrIs(t, err, ErrUnseal, ErrCorrupt)
	_, err = openSegments(aead, "other", kc, []segment{seal(1, kv("a", "1"))}, nil)
	requireErrIs(t, err, ErrUnseal, ErrCorrupt)
}

// TestKubeVersion2Head: a version 2 head is read, fully and by a catch-up;
// the next commit writes version 3 with the same key-encryption key and
// keeps its delta inline, and a store holding the version 2 state catches
// up to it.
func TestKubeVersion2Head(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	sealer := sealerWith(t, 1)
	a := openKube(t, ns, sealer)
	a.inlineMax = 0
	want := kv("a", "1")
	if _, err := a.Reset(t.Context(), want); err != nil {
		t.Fatal(err)
	}
	b := openKube(t, ns, sealer)
	loadOK(t, b)
	if err := a.Commit(t.Context(), kv("b", "2")); err != nil {
		t.Fatal(err)
	}
	want = applied(want, kv("b", "2"))
	old := encodeV2Head(t, a.head, a.aead, DefaultKubeStateName)
	rewrite(t, ns, DefaultKubeStateName, func(d map[string][]byte) { d[headDataKey] = old })

	requireState(t, loadOK(t, b), want)
	if b.head.version != kekHeadVersion || loadsOf(b, loadIncremental) != 1 {
		t.Fatalf("head version %d, %d incremental loads", b.head.version, loadsOf(b, loadIncremental))
	}
	c := openKube(t, ns, sealer)
	requireState(t, loadOK(t, c), want)
	kekCheck := c.head.kekCheck
	if err := c.Commit(t.Context(), kv("c", "3")); err != nil {
		t.Fatal(err)
	}
	want = applied(want, kv("c", "3"))
	if c.head.version != headVersion || c.head.kekCheck != kekCheck || !bytes.Equal(placesOf(c), []byte{placeChunks, placeInline}) {
		t.Fatalf("after a commit: version %d, key-encryption key kept %v, places %v", c.head.version, c.head.kekCheck == kekCheck, placesOf(c))
	}
	requireState(t, loadOK(t, b), want)
	if loadsOf(b, loadIncremental) != 2 {
		t.Fatal("the store holding the version 2 state did not catch up")
	}
}

// TestKubeSpillWriteErrors: with the fake clientset, a commit that spills
// and whose head update is refused deletes the packed object it created
// (ErrConflict); one whose head update failed in an unknown way keeps it
// (ErrBroken until Load); one whose packed object cannot be created
// stores nothing and the next commit, without a Load, succeeds.
func TestKubeSpillWriteErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		verb     string
		err      error
		want     error
		keep     bool
		reloaded bool
	}{
		{"conflict", "update", apierrors.NewConflict(corev1.Resource("secrets"), DefaultKubeStateName, errors.New("changed")), ErrConflict, false, true},
		{"unknown", "update", apierrors.NewInternalError(errors.New("etcd timed out")), ErrBroken, true, true},
		{"unavailable", "create", apierrors.NewServiceUnavailable("shutting down"), ErrUnavailable, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			s, err := OpenKube(KubeOptions{Client: client, Namespace: "ns", Sealers: kubeSealers(sealerWith(t, 1))})
			if err != nil {
				t.Fatal(err)
			}
			s.inlineBudget = 60 // one one-key delta, not two
			want := kv("a", "1", "b", "2")
			if _, err := s.Reset(t.Context(), kv("a", "1")); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(t.Context(), kv("b", "2")); err != nil {
				t.Fatal(err)
			}
			before := countChunks(t, client)
			client.PrependReactor(tc.verb, "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tc.err
			})
			requireErrIs(t, s.Commit(t.Context(), kv("c", "3")), tc.want)
			if got := countChunks(t, client); (got > before) != tc.keep {
				t.Fatalf("%d chunks after the failed commit, %d before", got, before)
			}
			client.ReactionChain = client.ReactionChain[1:]
			if tc.reloaded {
				requireState(t, loadOK(t, s), want)
			}
			if err := s.Commit(t.Context(), kv("c", "3")); err != nil {
				t.Fatal(err)
			}
			if p := placesOf(s); !bytes.Equal(p, []byte{placePacked, placeInline}) {
				t.Fatalf("deltas kept in places %v", p)
			}
			requireState(t, loadOK(t, s), applied(want, kv("c", "3")))
		})
	}
}

// TestKubeRacingSpills: two stores holding the same head spill the same
// inline delta; the one that loses the race fails with ErrConflict and
// deletes only its own packed object, never the winner's.
func TestKubeRacingSpills(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	a, b := openKube(t, ns, sealerWith(t, 1)), openKube(t, ns, sealerWith(t, 1))
	a.inlineBudget, b.inlineBudget = 60, 60 // one one-key delta, not two
	want := kv("a", "1", "b", "2")
	if _, err := a.Reset(t.Context(), kv("a", "1")); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(t.Context(), kv("b", "2")); err != nil {
		t.Fatal(err)
	}
	requireState(t, loadOK(t, b), want)
	if err := a.Commit(t.Context(), kv("c", "3")); err != nil {
		t.Fatal(err)
	}
	want = applied(want, kv("c", "3"))
	requireErrIs(t, b.Commit(t.Context(), kv("c", "4")), ErrConflict)
	if p := placesOf(a); !bytes.Equal(p, []byte{placePacked, placeInline}) {
		t.Fatalf("deltas kept in places %v", p)
	}
	requireNoLeftovers(t, a)
	requireState(t, loadOK(t, openKube(t, ns, sealerWith(t, 1))), want)
	requireState(t, loadOK(t, b), want)
}

// TestKubeNewerHeadFormat: a head in a format newer than this build's is
// reported as such, not as damage or a sealing failure (which would send
// a Coordinator into recovery), and is left as it is.
func TestKubeNewerHeadFormat(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	sealer := sealerWith(t, 1)
	a := openKube(t, ns, sealer)
	if _, err := a.Reset(t.Context(), kv("a", "1")); err != nil {
		t.Fatal(err)
	}
	var newer []byte
	rewrite(t, ns, DefaultKubeStateName, func(d map[string][]byte) {
		h := bytes.Clone(d[headDataKey])
		binary.LittleEndian.PutUint16(h[len(headMagic):], headVersion+1)
		d[headDataKey], newer = h, h
	})
	for name, s := range map[string]*KubeStore{"a fresh store": openKube(t, ns, sealer), "the writer": a} {
		_, err := s.Load(t.Context())
		if !errors.Is(err, ErrNewerFormat) || errors.Is(err, ErrUnseal) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: Load of a newer head: %v", name, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("version %d", headVersion+1)) {
			t.Fatalf("%s: the error does not name the version: %v", name, err)
		}
	}
	sec, err := kubeEnv(t).Clientset.CoreV1().Secrets(ns).Get(t.Context(), DefaultKubeStateName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sec.Data[headDataKey], newer) {
		t.Fatal("the newer head was changed")
	}
}
