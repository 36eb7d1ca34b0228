package store

import (
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// requireOnlyEntries fails unless the KEK map in ns holds exactly the
// entries of sealer for the given key-encryption keys.
func requireOnlyEntries(t testing.TB, ns string, sealer seal.Sealer, keks ...[]byte) {
	t.Helper()
	var want []string
	for _, kek := range keks {
		want = append(want, kekMapKey(sealer.ID(), kekCheckOf(kek)))
	}
	slices.Sort(want)
	got := slices.Sorted(maps.Keys(kekMapEntries(t, ns)))
	if !slices.Equal(got, want) {
		t.Fatalf("KEK map entries %q, want %q", got, want)
	}
}

// TestKubeKEKCreateRaceOfOneIdentity: four stores of one seal identity
// create the first state at once, each having written its entry before
// any head write. Exactly one wins; every store then opens the state by
// itself from the map, which holds the winner's entry only.
func TestKubeKEKCreateRaceOfOneIdentity(t *testing.T) {
	const writers, rounds = 4, 3
	sealer := sealerWith(t, 1)
	for round := range rounds {
		ns := kubeEnv(t).Namespace(t)
		stores := make([]*KubeStore, writers)
		var entered sync.WaitGroup
		entered.Add(writers)
		for i := range stores {
			s := openKube(t, ns, sealer)
			_, err := s.Load(t.Context())
			requireErrIs(t, err, ErrNoState)
			var once sync.Once
			s.hook = func(p string) error {
				if p == "kek-entry-written" {
					once.Do(func() { entered.Done(); entered.Wait() })
				}
				return nil
			}
			stores[i] = s
		}
		errs := make([]error, writers)
		var done sync.WaitGroup
		for i, s := range stores {
			done.Go(func() { errs[i] = s.Commit(t.Context(), kv("writer", fmt.Sprint(i))) })
		}
		done.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Fatalf("round %d: writers %d and %d both created the state", round, winner, i)
			default:
				requireErrIs(t, err, ErrConflict)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer created the state: %v", round, errs)
		}
		kek, _, _ := stores[winner].KeyEncryptionKey()
		requireOnlyEntries(t, ns, sealer, kek)
		want := kv("writer", fmt.Sprint(winner))
		for _, s := range stores {
			s.hook = nil
			requireState(t, loadOK(t, s), want)
		}
		requireState(t, loadOK(t, openKube(t, ns, sealer)), want)
	}
}

// TestKubeKEKDelayedCleanup: a store whose cleanup after a change of
// key-encryption key is delayed until another store of the same identity
// has changed the key again removes only the entries of the key it
// replaced, and entries that cannot be used: the later key's entry stays.
func TestKubeKEKDelayedCleanup(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	sealer := sealerWith(t, 1)
	a := openKube(t, ns, sealer)
	dataKey, err := a.Reset(t.Context(), kv("a", "1"))
	if err != nil {
		t.Fatal(err)
	}
	kek0, _, _ := a.KeyEncryptionKey()
	requireOnlyEntries(t, ns, sealer, kek0)

	reached, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(free)
	a.hook = func(p string) error {
		if p == "kek-cleanup" {
			close(reached)
			<-release
		}
		return nil
	}
	unlocked := make(chan error, 1)
	go func() {
		_, err := a.Unlock(t.Context(), dataKey)
		unlocked <- err
	}()
	<-reached

	// Entries of the earlier format and unreadable ones open nothing.
	old := kekMapEntries(t, ns)[kekMapKey(sealer.ID(), kekCheckOf(kek0))]
	cms := kubeEnv(t).Clientset.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(t.Context(), DefaultKEKMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := sealer.ID()
	cm.BinaryData[hex.EncodeToString(id[:])] = old
	cm.BinaryData["junk"] = []byte("x")
	if _, err := cms.Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	b := openKube(t, ns, sealer)
	requireState(t, loadOK(t, b), kv("a", "1"))
	kek1, _, _ := b.KeyEncryptionKey()
	if string(kek1) == string(kek0) {
		t.Fatal("Unlock made no new key-encryption key")
	}
	if _, err := b.Unlock(t.Context(), dataKey); err != nil {
		t.Fatal(err)
	}
	kek2, _, _ := b.KeyEncryptionKey()
	requireOnlyEntries(t, ns, sealer, kek0, kek2)

	free()
	if err := <-unlocked; err != nil {
		t.Fatal(err)
	}
	requireOnlyEntries(t, ns, sealer, kek2)
	requireEntry(t, ns, sealer, seal.ModeProductKey, kek2)
	if string(kek1) == string(kek2) {
		t.Fatal("the second Unlock made no new key-encryption key")
	}
	requireState(t, loadOK(t, openKube(t, ns, sealer)), kv("a", "1"))
}

// TestKubeKEKMapFull: a full map loses the entries that open nothing in
// force (unreadable ones, leftovers of other keys) when a new entry needs
// room; a map full of entries of the key in force refuses a new entry with
// ErrKEKMapFull, and nothing is written.
func TestKubeKEKMapFull(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	sealer := sealerWith(t, 1)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: DefaultKEKMapName}, BinaryData: map[string][]byte{}}
	for i := range maxKEKEntries {
		cm.BinaryData[fmt.Sprintf("e%d", i)] = []byte("x")
	}
	if _, err := kubeEnv(t).Clientset.CoreV1().ConfigMaps(ns).Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	first := openKube(t, ns, sealer)
	if _, err := first.Reset(t.Context(), kv("a", "1")); err != nil {
		t.Fatalf("Reset on a map full of leftovers: %v", err)
	}
	if n := len(kekMapEntries(t, ns)); n != 1 {
		t.Fatalf("%d entries after the leftovers were pruned, want 1", n)
	}
	kek, _, ok := first.KeyEncryptionKey()
	if !ok {
		t.Fatal("no key-encryption key after Reset")
	}
	kc := kekCheckOf(kek)
	full := map[string][]byte{}
	for i := range maxKEKEntries {
		var id seal.ID
		id[0], id[1] = byte(i>>8), byte(i)
		v, err := encodeKEKRecord(kekRecord{mode: seal.ModeProductKey, kekCheck: kc, sealed: []byte("sealed")})
		if err != nil {
			t.Fatal(err)
		}
		full[kekMapKey(id, kc)] = v
	}
	got, err := kubeEnv(t).Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), DefaultKEKMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.BinaryData = full
	if _, err := kubeEnv(t).Clientset.CoreV1().ConfigMaps(ns).Update(t.Context(), got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = openKube(t, ns, sealerWith(t, 2)).putKEKEntry(t.Context(), kek, seal.ModeProductKey, &kc)
	requireErrIs(t, err, ErrKEKMapFull)
	if n := len(kekMapEntries(t, ns)); n != maxKEKEntries {
		t.Fatalf("%d entries after a refused entry, want %d", n, maxKEKEntries)
	}
}
