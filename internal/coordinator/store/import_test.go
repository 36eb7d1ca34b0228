package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// fileToImport writes a FileStore in UniqueKey mode with recovery data and
// a journal, closes it and returns its directory, state and data key.
func fileToImport(t *testing.T, sealer seal.Sealer) (string, map[string][]byte, []byte) {
	t.Helper()
	dir := t.TempDir()
	fs := openFile(t, dir, sealer)
	if _, err := fs.Load(t.Context()); !errors.Is(err, ErrNoState) {
		t.Fatal(err)
	}
	var key []byte
	_, err := fs.ResetWith(t.Context(), kv("a", "1", "b", "2"), ResetOptions{Mode: seal.ModeUniqueKey, RecoveryData: func(k []byte) ([]byte, error) {
		key = bytes.Clone(k)
		return []byte("recovery of the file store"), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := fs.Commit(t.Context(), kv("c", "3")); err != nil {
		t.Fatal(err)
	}
	if err := fs.Commit(t.Context(), map[string][]byte{"a": nil}); err != nil {
		t.Fatal(err)
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, kv("b", "2", "c", "3"), key
}

// TestExportFile: the export holds the state with its journal applied,
// the data key, seal mode and recovery data, and leaves every file as it
// was; it refuses a directory in use, another machine's state and an
// empty directory, which it does not create.
func TestExportFile(t *testing.T) {
	sealer := sealerWith(t, 1)
	dir, state, key := fileToImport(t, sealer)
	before := dirFiles(t, dir)
	lockBefore, err := os.ReadFile(filepath.Join(dir, lockName))
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Sealers: kubeSealers(sealer)}

	got, err := ExportFile(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	requireState(t, got.State, state)
	if !bytes.Equal(got.DataKey, key) || got.Mode != seal.ModeUniqueKey || string(got.RecoveryData) != "recovery of the file store" {
		t.Fatalf("export: mode %s, recovery %q, same key %v", got.Mode, got.RecoveryData, bytes.Equal(got.DataKey, key))
	}
	kc, err := FileKeyCheck(dir)
	if err != nil || kc != KeyCheck(keyCheckOf(key)) {
		t.Fatalf("FileKeyCheck = %s, %v", kc, err)
	}
	requireFiles(t, dir, before)
	if lockAfter, err := os.ReadFile(filepath.Join(dir, lockName)); err != nil || !bytes.Equal(lockAfter, lockBefore) {
		t.Fatalf("lock file changed: %v", err)
	}

	held := openFile(t, dir, sealer)
	if _, err := ExportFile(dir, opts); !errors.Is(err, ErrLocked) {
		t.Fatalf("export of a directory in use: %v", err)
	}
	if err := held.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ExportFile(dir, Options{Sealers: kubeSealers(sealerWith(t, 2))}); !errors.Is(err, ErrUnseal) {
		t.Fatalf("export on another machine: %v", err)
	}
	requireFiles(t, dir, before)

	missing := filepath.Join(t.TempDir(), "none")
	if _, err := ExportFile(missing, opts); !errors.Is(err, ErrNoState) {
		t.Fatalf("export of a missing directory: %v", err)
	}
	if _, err := FileKeyCheck(missing); !errors.Is(err, ErrNoState) {
		t.Fatalf("key check of a missing directory: %v", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("export created the directory: %v", err)
	}
}

// TestKubeImport: the imported state opens elsewhere with the same data
// key, seal mode and recovery data (Unlock with the original key works);
// a second import of the same state writes nothing, one of another state
// is refused.
func TestKubeImport(t *testing.T) {
	sealer := sealerWith(t, 1)
	dir, state, key := fileToImport(t, sealer)
	exp, err := ExportFile(dir, Options{Sealers: kubeSealers(sealer)})
	if err != nil {
		t.Fatal(err)
	}
	ns := kubeEnv(t).Namespace(t)
	ks := openKube(t, ns, sealer)
	if _, ok, err := ks.HeadKeyCheck(t.Context()); ok || err != nil {
		t.Fatalf("key check before the import: %v %v", ok, err)
	}
	wrote, err := ks.Import(t.Context(), exp)
	if err != nil || !wrote {
		t.Fatalf("Import = %v, %v", wrote, err)
	}
	if ks.head.generation != 1 {
		t.Fatalf("imported generation %d", ks.head.generation)
	}
	if err := ks.Commit(t.Context(), kv("d", "4")); err != nil {
		t.Fatalf("commit after the import: %v", err)
	}
	state = applied(state, kv("d", "4"))
	kc, ok, err := ks.HeadKeyCheck(t.Context())
	if err != nil || !ok || kc != KeyCheck(keyCheckOf(key)) {
		t.Fatalf("HeadKeyCheck = %s %v %v", kc, ok, err)
	}

	other := openKube(t, ns, sealer)
	requireState(t, loadOK(t, other), state)
	if other.SealMode() != seal.ModeUniqueKey || string(other.RecoveryData()) != "recovery of the file store" {
		t.Fatalf("mode %s, recovery %q", other.SealMode(), other.RecoveryData())
	}
	if wrote, err := other.Import(t.Context(), exp); wrote || err != nil {
		t.Fatalf("second import: %v %v", wrote, err)
	}
	requireState(t, loadOK(t, other), state)

	// Without this platform's KEK entry the state needs recovery, and the
	// original data key opens it.
	if err := kubeEnv(t).Clientset.CoreV1().ConfigMaps(ns).Delete(t.Context(), DefaultKEKMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	fresh := openKube(t, ns, sealer)
	if _, err := fresh.Load(t.Context()); !errors.Is(err, ErrUnseal) {
		t.Fatalf("load without the KEK entry: %v", err)
	}
	got, err := fresh.Unlock(t.Context(), key)
	if err != nil {
		t.Fatalf("unlock with the original data key: %v", err)
	}
	requireState(t, got, state)

	_, _, otherKey := fileToImport(t, sealer)
	exp2 := exp
	exp2.DataKey = otherKey
	if _, err := fresh.Import(t.Context(), exp2); !errors.Is(err, ErrImportConflict) {
		t.Fatalf("import of another state: %v", err)
	}
	requireState(t, loadOK(t, openKube(t, ns, sealer)), state)

	bad := exp
	bad.DataKey = key[:16]
	if _, err := openKube(t, kubeEnv(t).Namespace(t), sealer).Import(t.Context(), bad); err == nil {
		t.Fatal("import of a short data key succeeded")
	}
}

// TestKubeImportRace: stores importing the same state at once end with
// one state, written by exactly one of them.
func TestKubeImportRace(t *testing.T) {
	sealer := sealerWith(t, 1)
	dir, state, _ := fileToImport(t, sealer)
	exp, err := ExportFile(dir, Options{Sealers: kubeSealers(sealer)})
	if err != nil {
		t.Fatal(err)
	}
	ns := kubeEnv(t).Namespace(t)
	const n = 4
	stores := make([]*KubeStore, n)
	for i := range stores {
		stores[i] = openKube(t, ns, sealer)
	}
	wrote := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() { wrote[i], errs[i] = stores[i].Import(t.Context(), exp) })
	}
	wg.Wait()
	writers := 0
	for i := range stores {
		if errs[i] != nil {
			t.Fatalf("store %d: %v", i, errs[i])
		}
		if wrote[i] {
			writers++
		}
	}
	if writers != 1 {
		t.Fatalf("%d stores wrote the import", writers)
	}
	for _, s := range stores {
		requireState(t, loadOK(t, s), state)
	}
	// The KEK map opens the state for a store without keys at hand.
	requireState(t, loadOK(t, openKube(t, ns, sealer)), state)
	heads, err := kubeEnv(t).Clientset.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: LabelObject + "=" + objectHead})
	if err != nil || len(heads.Items) != 1 {
		t.Fatalf("heads: %v", err)
	}
}
