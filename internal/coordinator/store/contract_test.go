package store

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// impl makes a Store and simulates restarts of the process that uses it.
type impl struct {
	name string
	// fresh returns a store with nothing stored.
	fresh func(t *testing.T) Store
	// restart returns the store as a restarted Coordinator on the same
	// machine finds it.
	restart func(t *testing.T, s Store) Store
	// move returns the store as a Coordinator on another machine finds
	// it: the data key cannot be unsealed.
	move func(t *testing.T, s Store) Store
}

func impls() []impl {
	return []impl{
		{
			name:  "memory",
			fresh: func(*testing.T) Store { return NewMemory() },
			restart: func(_ *testing.T, s Store) Store {
				m := s.(*Memory)
				m.mu.Lock()
				m.phase = phaseUnloaded
				m.mu.Unlock()
				return m
			},
			move: func(_ *testing.T, s Store) Store {
				s.(*Memory).LoseSealKey()
				return s
			},
		},
		{
			name: "file",
			fresh: func(t *testing.T) Store {
				return openFile(t, t.TempDir(), sealerWith(t, 1))
			},
			restart: func(t *testing.T, s Store) Store {
				f := s.(*FileStore)
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
				return openFile(t, f.dir, f.sealers[seal.ModeProductKey])
			},
			move: func(t *testing.T, s Store) Store {
				f := s.(*FileStore)
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
				other, err := seal.NewAESGCMSealer(randomKey(t))
				if err != nil {
					t.Fatal(err)
				}
				return openFile(t, f.dir, other)
			},
		},
		kubeImpl(),
	}
}

func TestContractLifecycle(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			s := im.fresh(t)
			requireErrIs(t, s.Commit(t.Context(), kv("a", "1")), ErrNotOpen)
			if _, err := s.Load(t.Context()); !errors.Is(err, ErrNoState) {
				t.Fatalf("Load on a fresh store: err = %v, want ErrNoState", err)
			}
			if _, err := s.Unlock(t.Context(), bytes.Repeat([]byte{1}, 32)); !errors.Is(err, ErrNoState) {
				t.Fatalf("Unlock on a fresh store: err = %v, want ErrNoState", err)
			}
			// After ErrNoState the first commit creates the state.
			if err := s.Commit(t.Context(), kv("ca/root/cert", "pem")); err != nil {
				t.Fatalf("first Commit: %v", err)
			}
			s = im.restart(t, s)
			requireState(t, loadOK(t, s), kv("ca/root/cert", "pem"))

			key, err := s.Reset(t.Context(), kv("manifest/raw", "{}", "dropped", "<nil>"))
			if err != nil {
				t.Fatalf("Reset: %v", err)
			}
			if len(key) != 32 {
				t.Fatalf("Reset returned a %d-byte key, want 32", len(key))
			}
			want := kv("manifest/raw", "{}")
			if err := s.Commit(t.Context(), kv("activations/web", "1")); err != nil {
				t.Fatal(err)
			}
			want = applied(want, kv("activations/web", "1"))
			s = im.restart(t, s)
			requireState(t, loadOK(t, s), want)

			key2, err := s.Reset(t.Context(), kv("x", "y"))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(key, key2) {
				t.Fatal("two Resets returned the same data key")
			}
			requireState(t, loadOK(t, s), kv("x", "y"))

			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			requireErrIs(t, s.Commit(t.Context(), kv("a", "1")), ErrClosed)
			_, err = s.Load(t.Context())
			requireErrIs(t, err, ErrClosed)
			_, err = s.Reset(t.Context(), nil)
			requireErrIs(t, err, ErrClosed)
			_, err = s.Unlock(t.Context(), key2)
			requireErrIs(t, err, ErrClosed)
		})
	}
}

func TestContractDeletesAndEmptyValues(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			s := im.fresh(t)
			if _, err := s.Reset(t.Context(), kv("a", "1", "b", "2", "c", "3")); err != nil {
				t.Fatal(err)
			}
			steps := []map[string][]byte{
				kv("a", "<nil>", "d", ""),
				kv("missing", "<nil>"),
				kv("b", "", "c", "<nil>"),
				{},
			}
			want := kv("a", "1", "b", "2", "c", "3")
			for _, ch := range steps {
				if err := s.Commit(t.Context(), ch); err != nil {
					t.Fatalf("Commit(%s): %v", describe(ch), err)
				}
				want = applied(want, ch)
			}
			s = im.restart(t, s)
			got := loadOK(t, s)
			requireState(t, got, kv("b", "", "d", ""))
			for k, v := range got {
				if v == nil {
					t.Errorf("empty value of %q came back nil", k)
				}
			}
			requireState(t, got, want)
		})
	}
}

func TestContractCopies(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			s := im.fresh(t)
			state := kv("a", "1111", "b", "2222")
			if _, err := s.Reset(t.Context(), state); err != nil {
				t.Fatal(err)
			}
			state["a"][0] = 'X'
			state["c"] = []byte("new")
			changes := kv("b", "3333")
			if err := s.Commit(t.Context(), changes); err != nil {
				t.Fatal(err)
			}
			changes["b"][0] = 'X'

			got := loadOK(t, s)
			requireState(t, got, kv("a", "1111", "b", "3333"))
			got["a"][0] = 'Y'
			got["a"] = append(got["a"], "appended"...)
			got["b"] = append(got["b"][:1], 'Z')
			delete(got, "b")
			requireState(t, loadOK(t, s), kv("a", "1111", "b", "3333"))
		})
	}
}

func TestContractSealedState(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			s := im.fresh(t)
			key, err := s.Reset(t.Context(), kv("manifest/raw", "{}"))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(t.Context(), kv("secret/a", "s")); err != nil {
				t.Fatal(err)
			}
			want := kv("manifest/raw", "{}", "secret/a", "s")
			s = im.move(t, s)
			_, err = s.Load(t.Context())
			requireErrIs(t, err, ErrUnseal)
			requireErrIs(t, s.Commit(t.Context(), kv("x", "1")), ErrNotOpen, ErrUnseal)

			wrong := bytes.Clone(key)
			wrong[5] ^= 1
			for _, k := range [][]byte{wrong, key[:16], nil} {
				_, err := s.Unlock(t.Context(), k)
				requireErrIs(t, err, ErrWrongDataKey)
			}
			requireErrIs(t, s.Commit(t.Context(), kv("x", "1")), ErrNotOpen)

			got, err := s.Unlock(t.Context(), key)
			if err != nil {
				t.Fatalf("Unlock with the right key: %v", err)
			}
			requireState(t, got, want)
			if err := s.Commit(t.Context(), kv("x", "1")); err != nil {
				t.Fatalf("Commit after Unlock: %v", err)
			}
			s = im.restart(t, s)
			requireState(t, loadOK(t, s), applied(want, kv("x", "1")))

			// Reset is the other way out of the sealed state.
			s = im.move(t, s)
			if _, err := s.Load(t.Context()); !errors.Is(err, ErrUnseal) {
				t.Fatalf("Load after moving again: err = %v, want ErrUnseal", err)
			}
			if _, err := s.Reset(t.Context(), kv("fresh", "1")); err != nil {
				t.Fatal(err)
			}
			s = im.restart(t, s)
			requireState(t, loadOK(t, s), kv("fresh", "1"))
		})
	}
}

func TestContractRecoveryData(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			s := im.fresh(t)
			type recoveryStore interface {
				RecoveryData() []byte
				SetRecoveryData(context.Context, []byte) error
			}
			requireErrIs(t, s.(recoveryStore).SetRecoveryData(t.Context(), []byte("r")), ErrNotOpen)
			key, err := s.Reset(t.Context(), kv("a", "1"))
			if err != nil {
				t.Fatal(err)
			}
			if got := s.(recoveryStore).RecoveryData(); got != nil {
				t.Fatalf("RecoveryData after Reset = %q, want nil", got)
			}
			blob := []byte(`{"hash":true}`)
			if err := s.(recoveryStore).SetRecoveryData(t.Context(), blob); err != nil {
				t.Fatal(err)
			}
			blob[0] = 'X'
			s = im.move(t, s)
			if _, err := s.Load(t.Context()); !errors.Is(err, ErrUnseal) {
				t.Fatalf("Load: err = %v, want ErrUnseal", err)
			}
			if got := s.(recoveryStore).RecoveryData(); string(got) != `{"hash":true}` {
				t.Fatalf("RecoveryData in the sealed state = %q", got)
			}
			if _, err := s.Unlock(t.Context(), key); err != nil {
				t.Fatal(err)
			}
			s = im.restart(t, s)
			requireState(t, loadOK(t, s), kv("a", "1"))
			if got := s.(recoveryStore).RecoveryData(); string(got) != `{"hash":true}` {
				t.Fatalf("RecoveryData after Unlock and restart = %q", got)
			}
			if _, err := s.Reset(t.Context(), kv("b", "2")); err != nil {
				t.Fatal(err)
			}
			if got := s.(recoveryStore).RecoveryData(); got != nil {
				t.Fatalf("RecoveryData after a second Reset = %q, want nil", got)
			}
		})
	}
}

func TestContractResetWith(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			s := im.fresh(t)
			if _, err := s.Reset(t.Context(), kv("old", "1")); err != nil {
				t.Fatal(err)
			}
			// A failing recovery data function stores nothing.
			failure := errors.New("no recovery keys")
			_, err := s.ResetWith(t.Context(), kv("new", "1"), ResetOptions{RecoveryData: func([]byte) ([]byte, error) { return nil, failure }})
			requireErrIs(t, err, failure)
			_, err = s.ResetWith(t.Context(), kv("new", "1"), ResetOptions{Mode: "Sealed"})
			if err == nil || !strings.Contains(err.Error(), "unknown seal mode") {
				t.Fatalf("ResetWith with an unknown mode: %v", err)
			}
			_, err = s.ResetWith(t.Context(), kv("new", "1"), ResetOptions{RecoveryData: func([]byte) ([]byte, error) { return make([]byte, maxRecoveryDataSize+1), nil }})
			if err == nil {
				t.Fatal("ResetWith stored oversized recovery data")
			}
			s = im.restart(t, s)
			requireState(t, loadOK(t, s), kv("old", "1"))

			var seen []byte
			key, err := s.ResetWith(t.Context(), kv("new", "1"), ResetOptions{Mode: seal.ModeUniqueKey, RecoveryData: func(k []byte) ([]byte, error) {
				seen = bytes.Clone(k)
				k[0] ^= 1 // the callback's copy is its own
				return []byte("recovery for the new key"), nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(seen, key) {
				t.Fatal("the recovery data was computed from another key than the one returned")
			}
			if got := s.RecoveryData(); string(got) != "recovery for the new key" {
				t.Fatalf("RecoveryData = %q", got)
			}
			if got := s.SealMode(); got != seal.ModeUniqueKey {
				t.Fatalf("SealMode = %s, want UniqueKey", got)
			}
			s = im.restart(t, s)
			requireState(t, loadOK(t, s), kv("new", "1"))
			if got := s.SealMode(); got != seal.ModeUniqueKey {
				t.Fatalf("SealMode after a restart = %s, want UniqueKey", got)
			}
			s = im.move(t, s)
			_, err = s.Load(t.Context())
			requireErrIs(t, err, ErrUnseal)
			if got := s.RecoveryData(); string(got) != "recovery for the new key" {
				t.Fatalf("RecoveryData in the sealed state = %q", got)
			}
			if got, err := s.Unlock(t.Context(), key); err != nil || !equalStates(got, kv("new", "1")) {
				t.Fatalf("Unlock with the key given to RecoveryData: %v", err)
			}
		})
	}
}

func TestContractSealModes(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			s := im.fresh(t)
			if got := s.SealMode(); got != seal.ModeProductKey {
				t.Fatalf("SealMode of a fresh store = %s, want the default ProductKey", got)
			}
			requireErrIs(t, s.SetSealMode(t.Context(), seal.ModeUniqueKey), ErrNotOpen)
			key, err := s.Reset(t.Context(), kv("a", "1"))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SetSealMode(t.Context(), "Sealed"); err == nil {
				t.Fatal("SetSealMode accepted an unknown mode")
			}
			steps := []seal.Mode{seal.ModeUniqueKey, seal.ModeUniqueKey, seal.ModeProductKey, seal.ModeDisabled, seal.ModeDisabled, seal.ModeUniqueKey}
			for _, mode := range steps {
				if err := s.SetSealMode(t.Context(), mode); err != nil {
					t.Fatalf("SetSealMode(%s): %v", mode, err)
				}
				if err := s.Commit(t.Context(), kv("mode", string(mode))); err != nil {
					t.Fatal(err)
				}
				want := kv("a", "1", "mode", string(mode))
				s = im.restart(t, s)
				got, err := s.Load(t.Context())
				if s.SealMode() != mode {
					t.Fatalf("after SetSealMode(%s) and a restart: SealMode = %s", mode, s.SealMode())
				}
				if !mode.Seals() {
					// Nothing is sealed: every start needs the data key.
					requireErrIs(t, err, ErrUnseal)
					if got, err = s.Unlock(t.Context(), key); err != nil {
						t.Fatalf("Unlock in %s: %v", mode, err)
					}
					requireState(t, got, want)
					s = im.restart(t, s)
					_, err = s.Load(t.Context())
					requireErrIs(t, err, ErrUnseal)
					if got, err = s.Unlock(t.Context(), key); err != nil {
						t.Fatal(err)
					}
				} else if err != nil {
					t.Fatalf("Load in %s: %v", mode, err)
				}
				requireState(t, got, want)
			}
		})
	}
}
