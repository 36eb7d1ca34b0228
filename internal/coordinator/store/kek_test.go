package store

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// encodeLegacyHead encodes h in head format version 1, with its sealed
// data keys in the head, as earlier builds wrote it.
func encodeLegacyHead(t testing.TB, h kubeHead, aead cipher.AEAD, name string) []byte {
	t.Helper()
	return encodeOldHead(t, h, aead, name, legacyHeadVersion, func(b []byte) []byte {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(h.entries))) //nolint:gosec // G115: test input
		for _, e := range h.entries {
			ec, err := e.mode.Code()
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, ec)
			b = append(b, e.keyCheck[:]...)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(e.sealed))) //nolint:gosec // G115: test input
			b = append(b, e.sealed...)
		}
		return b
	})
}

// encodeV2Head encodes h in head format version 2, whose segments are all
// in chunk objects, as earlier builds wrote it.
func encodeV2Head(t testing.TB, h kubeHead, aead cipher.AEAD, name string) []byte {
	t.Helper()
	return encodeOldHead(t, h, aead, name, kekHeadVersion, func(b []byte) []byte {
		b = append(b, h.kekCheck[:]...)
		b = append(b, h.wrappedKey...)
		return append(b, h.wrappedKEK...)
	})
}

// encodeOldHead encodes h in an earlier head format: the fields every
// format shares, keys to append what the version keeps of the keys, then
// the recovery data and the segments, all of them in chunk objects.
func encodeOldHead(t testing.TB, h kubeHead, aead cipher.AEAD, name string, version uint16, keys func([]byte) []byte) []byte {
	t.Helper()
	code, err := h.mode.Code()
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(headMagic)
	b = binary.LittleEndian.AppendUint16(b, version)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = append(b, h.keyCheck[:]...)
	b = binary.LittleEndian.AppendUint64(b, h.generation)
	b = append(b, code)
	b = keys(b)
	b = binary.LittleEndian.AppendUint32(b, h.recoverySize)
	b = appendRefs(b, h.recovery)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h.segments))) //nolint:gosec // G115: test input
	for _, g := range h.segments {
		if g.place() != placeChunks {
			t.Fatalf("a version %d head keeps every segment in chunks", version)
		}
		b = append(b, g.kind)
		b = binary.LittleEndian.AppendUint64(b, g.id)
		b = appendRefs(b, g.pieces)
	}
	out, err := encrypt(b, aead, nil, headAAD(name, b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// kekMap returns the entries of the KEK map in ns, nil if there is none.
func kekMapEntries(t testing.TB, ns string) map[string][]byte {
	t.Helper()
	cm, err := kubeEnv(t).Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), DefaultKEKMapName, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	if cm.Labels[LabelManagedBy] != ManagedByValue || cm.Labels[LabelState] != DefaultKubeStateName {
		t.Fatalf("KEK map labels %v", cm.Labels)
	}
	return cm.BinaryData
}

// requireEntry fails unless the KEK map in ns has an entry for sealer
// holding the key-encryption key kek in mode.
func requireEntry(t testing.TB, ns string, sealer seal.Sealer, mode seal.Mode, kek []byte) {
	t.Helper()
	raw, ok := kekMapEntries(t, ns)[kekMapKey(sealer.ID(), kekCheckOf(kek))]
	if !ok {
		t.Fatalf("no KEK map entry for seal identity %x", sealer.ID())
	}
	r, err := parseKEKRecord(raw)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := mode.Code()
	got, err := sealer.Unseal(r.sealed, kekRecordAAD(code, r.kekCheck, DefaultKubeStateName))
	if err != nil || r.mode != mode || !bytes.Equal(got, kek) {
		t.Fatalf("KEK map entry of mode %s does not hold the key (unseal: %v)", r.mode, err)
	}
}

func FuzzKEKRecord(f *testing.F) {
	good, err := encodeKEKRecord(kekRecord{mode: seal.ModeUniqueKey, kekCheck: [keyCheckSize]byte{1}, sealed: []byte("sealed key-encryption key")})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(kekRecordMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		boundedAllocs(t, len(b), func() {
			r, err := parseKEKRecord(b)
			if err != nil {
				return
			}
			if len(r.sealed) > maxSealedKEKSize || !r.mode.Seals() {
				t.Fatal("parseKEKRecord accepted a record beyond its limits")
			}
			again, err := encodeKEKRecord(r)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("a parsed record does not re-encode to the same bytes: %v", err)
			}
		})
	})
}

func TestKEKRecordBounds(t *testing.T) {
	if _, err := encodeKEKRecord(kekRecord{mode: seal.ModeProductKey, sealed: make([]byte, maxSealedKEKSize+1)}); err == nil {
		t.Error("an oversized sealed key was encoded")
	}
	if _, err := encodeKEKRecord(kekRecord{mode: seal.ModeDisabled, sealed: []byte("x")}); err == nil {
		t.Error("a record in seal mode Disabled was encoded")
	}
	if _, err := parseKEKRecord(make([]byte, maxKEKRecord+1)); err == nil {
		t.Error("an oversized record was parsed")
	}
	big := &corev1.ConfigMap{BinaryData: map[string][]byte{"a": make([]byte, maxKEKRecord+1)}}
	if checkKEKMap(big) == nil {
		t.Error("a map with an oversized entry passed")
	}
	many := &corev1.ConfigMap{BinaryData: map[string][]byte{}}
	for i := range maxKEKEntries + 1 {
		many.BinaryData[string(rune('a'+i%26))+string(rune('a'+i/26))] = nil
	}
	if checkKEKMap(many) == nil {
		t.Error("a map with too many entries passed")
	}
}

// TestKubeKEKSharing: two stores on different nodes (different sealers)
// share one state; the second needs the key from the first, then keeps
// its own entry, so a third store with its sealer loads by itself.
func TestKubeKEKSharing(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	node1, node2 := sealerWith(t, 1), sealerWith(t, 2)
	a := openKube(t, ns, node1)
	want := kv("a", "1")
	if _, err := a.ResetWith(t.Context(), want, ResetOptions{RecoveryData: func([]byte) ([]byte, error) { return []byte("recovery"), nil }}); err != nil {
		t.Fatal(err)
	}
	kek, gen, ok := a.KeyEncryptionKey()
	if !ok || len(kek) != dataKeySize || gen == 0 {
		t.Fatalf("KeyEncryptionKey = %d bytes, %d, %v", len(kek), gen, ok)
	}
	requireEntry(t, ns, node1, seal.ModeProductKey, kek)

	b := openKube(t, ns, node2)
	_, err := b.Load(t.Context())
	requireErrIs(t, err, ErrNeedKey, ErrUnseal)
	if got := b.RecoveryData(); string(got) != "recovery" {
		t.Fatalf("RecoveryData after ErrNeedKey = %q", got)
	}
	if _, _, ok := b.KeyEncryptionKey(); ok {
		t.Fatal("KeyEncryptionKey is ok without an open state")
	}
	wrong := bytes.Repeat([]byte{9}, dataKeySize)
	_, err = b.LoadWithKEK(t.Context(), wrong, gen)
	requireErrIs(t, err, ErrUnseal)
	_, err = b.LoadWithKEK(t.Context(), kek, gen+1)
	requireErrIs(t, err, ErrRollback)
	// The floor stays raised: the head is older than gen+1.
	_, err = b.LoadWithKEK(t.Context(), kek, 0)
	requireErrIs(t, err, ErrRollback)

	b = openKube(t, ns, node2)
	requireState(t, mustLoadWithKEK(t, b, kek, gen), want)
	requireEntry(t, ns, node2, seal.ModeProductKey, kek)
	requireEntry(t, ns, node1, seal.ModeProductKey, kek)
	if err := b.Commit(t.Context(), kv("b", "2")); err != nil {
		t.Fatal(err)
	}
	want = applied(want, kv("b", "2"))

	c := openKube(t, ns, node2)
	requireState(t, loadOK(t, c), want)
	requireState(t, loadOK(t, a), want)
	ckek, cgen, ok := c.KeyEncryptionKey()
	if !ok || !bytes.Equal(ckek, kek) || cgen != gen+1 {
		t.Fatalf("KeyEncryptionKey of the third store: equal %v, generation %d (want %d), ok %v", bytes.Equal(ckek, kek), cgen, gen+1, ok)
	}
}

func mustLoadWithKEK(t testing.TB, s *KubeStore, kek []byte, minGen uint64) map[string][]byte {
	t.Helper()
	m, err := s.LoadWithKEK(t.Context(), kek, minGen)
	if err != nil {
		t.Fatalf("LoadWithKEK: %v", err)
	}
	return m
}

// TestKubeLegacyHead: a version 1 head, with the data key sealed in the
// head, is read, and converted to version 2 with a KEK map entry at the
// next write.
func TestKubeLegacyHead(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	sealer := sealerWith(t, 1)
	s := openKube(t, ns, sealer)
	want := kv("a", "1", "b", "2")
	key, err := s.Reset(t.Context(), want)
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite the head as an earlier build would have written it, and
	// remove the KEK map, which that build did not have.
	h := s.head
	code, _ := h.mode.Code()
	sealed, err := sealer.Seal(key, sealedKeyAAD(code, h.keyCheck))
	if err != nil {
		t.Fatal(err)
	}
	h.entries = []sealedEntry{{mode: h.mode, keyCheck: h.keyCheck, sealed: sealed}}
	legacy := encodeLegacyHead(t, h, s.aead, DefaultKubeStateName)
	rewrite(t, ns, DefaultKubeStateName, func(d map[string][]byte) { d[headDataKey] = legacy })
	if err := kubeEnv(t).Clientset.CoreV1().ConfigMaps(ns).Delete(t.Context(), DefaultKEKMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	old := openKube(t, ns, sealer)
	requireState(t, loadOK(t, old), want)
	if old.head.version != legacyHeadVersion {
		t.Fatalf("head version %d, want the legacy one", old.head.version)
	}
	if _, _, ok := old.KeyEncryptionKey(); ok {
		t.Fatal("a version 1 head has a key-encryption key")
	}
	other := openKube(t, ns, sealerWith(t, 2))
	_, err = other.Load(t.Context())
	requireErrIs(t, err, ErrUnseal)

	if err := old.Commit(t.Context(), kv("c", "3")); err != nil {
		t.Fatal(err)
	}
	want = applied(want, kv("c", "3"))
	kek, _, ok := old.KeyEncryptionKey()
	if !ok {
		t.Fatal("no key-encryption key after the conversion")
	}
	requireEntry(t, ns, sealer, seal.ModeProductKey, kek)
	fresh := openKube(t, ns, sealer)
	requireState(t, loadOK(t, fresh), want)
	if fresh.head.version != headVersion || len(fresh.head.entries) != 0 {
		t.Fatalf("head version %d with %d sealed keys after the conversion", fresh.head.version, len(fresh.head.entries))
	}
}

// TestKubeKEKFollowers: a Coordinator with the state open follows changes
// of the key-encryption key made by another (recovery, seal mode) with
// the data key it holds, and seals the new key for its own platform.
func TestKubeKEKFollowers(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	node1, node2 := sealerWith(t, 1), sealerWith(t, 2)
	a, b := openKube(t, ns, node1), openKube(t, ns, node2)
	key, err := a.Reset(t.Context(), kv("a", "1"))
	if err != nil {
		t.Fatal(err)
	}
	kek1, gen, _ := a.KeyEncryptionKey()
	mustLoadWithKEK(t, b, kek1, gen)

	// A recovery on a third node puts the data key under a new KEK; the
	// entries of the first are removed.
	c := openKube(t, ns, sealerWith(t, 3))
	_, err = c.Load(t.Context())
	requireErrIs(t, err, ErrNeedKey)
	if _, err := c.Unlock(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	kek2, _, _ := c.KeyEncryptionKey()
	if bytes.Equal(kek1, kek2) {
		t.Fatal("Unlock kept the key-encryption key")
	}
	if n := len(kekMapEntries(t, ns)); n != 1 {
		t.Fatalf("%d KEK map entries after the recovery, want 1", n)
	}
	for _, s := range []*KubeStore{a, b} {
		requireState(t, loadOK(t, s), kv("a", "1"))
		got, _, ok := s.KeyEncryptionKey()
		if !ok || !bytes.Equal(got, kek2) {
			t.Fatal("a follower does not hold the new key-encryption key")
		}
	}
	requireEntry(t, ns, node1, seal.ModeProductKey, kek2)
	requireEntry(t, ns, node2, seal.ModeProductKey, kek2)

	// Disabled: no platform keeps an entry; running stores follow, a new
	// one needs the key.
	if err := a.SetSealMode(t.Context(), seal.ModeDisabled); err != nil {
		t.Fatal(err)
	}
	if n := len(kekMapEntries(t, ns)); n != 0 {
		t.Fatalf("%d KEK map entries in seal mode Disabled", n)
	}
	requireState(t, loadOK(t, b), kv("a", "1"))
	if n := len(kekMapEntries(t, ns)); n != 0 {
		t.Fatalf("a follower added an entry in seal mode Disabled (%d entries)", n)
	}
	_, err = openKube(t, ns, node1).Load(t.Context())
	requireErrIs(t, err, ErrNeedKey)
	kek3, gen3, _ := b.KeyEncryptionKey()
	d := openKube(t, ns, node1)
	requireState(t, mustLoadWithKEK(t, d, kek3, gen3), kv("a", "1"))
	if n := len(kekMapEntries(t, ns)); n != 0 {
		t.Fatalf("LoadWithKEK added an entry in seal mode Disabled (%d entries)", n)
	}
}

// TestKubeKEKMapRefused: a KEK map beyond the limits or with a damaged
// entry gives ErrNeedKey, never a crash or a key.
func TestKubeKEKMapRefused(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	sealer := sealerWith(t, 1)
	first := openKube(t, ns, sealer)
	if _, err := first.Reset(t.Context(), kv("a", "1")); err != nil {
		t.Fatal(err)
	}
	kek, _, _ := first.KeyEncryptionKey()
	cms := kubeEnv(t).Clientset.CoreV1().ConfigMaps(ns)
	change := func(f func(cm *corev1.ConfigMap)) {
		t.Helper()
		cm, err := cms.Get(t.Context(), DefaultKEKMapName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f(cm)
		if _, err := cms.Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	id := kekMapKey(sealer.ID(), kekCheckOf(kek))
	saved := kekMapEntries(t, ns)[id]
	change(func(cm *corev1.ConfigMap) { cm.BinaryData[id] = append(bytes.Clone(saved), 0) })
	_, err := openKube(t, ns, sealer).Load(t.Context())
	requireErrIs(t, err, ErrNeedKey)
	change(func(cm *corev1.ConfigMap) { cm.BinaryData[id] = make([]byte, maxKEKRecord+1) })
	_, err = openKube(t, ns, sealer).Load(t.Context())
	requireErrIs(t, err, ErrNeedKey)
	if _, err := openKube(t, ns, sealer).putKEKEntry(t.Context(), make([]byte, dataKeySize), seal.ModeProductKey, nil); err == nil {
		t.Fatal("an entry was added to a map beyond the limits")
	}
	change(func(cm *corev1.ConfigMap) { cm.BinaryData[id] = saved })
	loadOK(t, openKube(t, ns, sealer))
}

// snapshotObjects returns copies of every Secret of the state and of the
// KEK map in ns.
func snapshotObjects(t testing.TB, ns string) ([]corev1.Secret, *corev1.ConfigMap) {
	t.Helper()
	var secrets []corev1.Secret
	for _, s := range listObjects(t, ns) {
		secrets = append(secrets, *s.DeepCopy())
	}
	cm, err := kubeEnv(t).Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), DefaultKEKMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return secrets, cm.DeepCopy()
}

// restoreObjects writes saved objects back over the API, as someone with
// write access to the namespace could: the head and KEK map are replaced,
// missing chunks are created again.
func restoreObjects(t testing.TB, ns string, secrets []corev1.Secret, cm *corev1.ConfigMap) {
	t.Helper()
	api := kubeEnv(t).Clientset.CoreV1()
	for _, s := range secrets {
		s.ResourceVersion, s.UID, s.CreationTimestamp, s.ManagedFields = "", "", metav1.Time{}, nil
		if s.Name == DefaultKubeStateName {
			cur, err := api.Secrets(ns).Get(t.Context(), s.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cur.Data = s.Data
			if _, err := api.Secrets(ns).Update(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := api.Secrets(ns).Create(t.Context(), &s, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	cur, err := api.ConfigMaps(ns).Get(t.Context(), cm.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.BinaryData = cm.BinaryData
	if _, err := api.ConfigMaps(ns).Update(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestKubeRollbackByRewrite: the objects of generation g are saved, more
// is written (with a new base, so g's chunks are gone), and the saved
// objects are written back. A live store refuses the older state, and so
// does a store that joins with the key and generation of a live peer. A
// store that has seen nothing newer opens it: with every Coordinator
// down, nobody remembers the newer generation.
func TestKubeRollbackByRewrite(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	node1, node2 := sealerWith(t, 1), sealerWith(t, 2)
	a := openKube(t, ns, node1)
	if _, err := a.Reset(t.Context(), kv("a", "1")); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(t.Context(), kv("b", "2")); err != nil {
		t.Fatal(err)
	}
	old := applied(kv("a", "1"), kv("b", "2"))
	secrets, cm := snapshotObjects(t, ns)
	a.maxDeltas = 1
	for i := range 3 {
		if err := a.Commit(t.Context(), kv("n", string(rune('0'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	kek, gen, _ := a.KeyEncryptionKey()
	restoreObjects(t, ns, secrets, cm)

	_, err := a.Load(t.Context())
	requireErrIs(t, err, ErrRollback)
	requireErrIs(t, a.Commit(t.Context(), kv("x", "1")), ErrNotOpen)
	// The live store still tells its key and the newer generation, so
	// that a peer told them refuses the rolled-back state too.
	if k, g, ok := a.KeyEncryptionKey(); !ok || !bytes.Equal(k, kek) || g != gen {
		t.Fatalf("KeyEncryptionKey after the rollback: ok %t, generation %d (want %d), same key %t", ok, g, gen, bytes.Equal(k, kek))
	}

	b := openKube(t, ns, node2)
	_, err = b.LoadWithKEK(t.Context(), kek, gen)
	requireErrIs(t, err, ErrRollback)
	f := openKube(t, ns, node1)
	f.RaiseGenerationFloor(gen)
	_, err = f.Load(t.Context())
	requireErrIs(t, err, ErrRollback)

	requireState(t, loadOK(t, openKube(t, ns, node1)), old)
}

// TestKubeKEKLostCreateRace: two stores with one seal identity (one
// entry per key of the map) create the state at once; the loser removes
// only its own entry, so both open the state afterwards.
func TestKubeKEKLostCreateRace(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	sealer := sealerWith(t, 1)
	a, b := openKube(t, ns, sealer), openKube(t, ns, sealer)
	for _, s := range []*KubeStore{a, b} {
		_, err := s.Load(t.Context())
		requireErrIs(t, err, ErrNoState)
	}
	if err := a.Commit(t.Context(), kv("a", "1")); err != nil {
		t.Fatal(err)
	}
	requireErrIs(t, b.Commit(t.Context(), kv("b", "2")), ErrConflict)
	kek, _, _ := a.KeyEncryptionKey()
	requireEntry(t, ns, sealer, seal.ModeProductKey, kek)
	requireState(t, loadOK(t, b), kv("a", "1"))
	requireState(t, loadOK(t, openKube(t, ns, sealer)), kv("a", "1"))
}

// TestKeySharerStores: only the store shared between platforms shares
// keys.
func TestKeySharerStores(t *testing.T) {
	var m Store = NewMemory()
	if _, ok := m.(KeySharer); ok {
		t.Error("Memory is a KeySharer")
	}
	var f Store = openFile(t, t.TempDir(), sealerWith(t, 1))
	if _, ok := f.(KeySharer); ok {
		t.Error("FileStore is a KeySharer")
	}
}
