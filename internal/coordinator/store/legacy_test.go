package store

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// testdata/v1 is a seal folder written by the format before sealed_key
// existed (snapshot version 1, the sealed data key inside sealed_data),
// sealed with sealerWith(0x11): state after Reset(base), SetRecoveryData
// and one Commit. testdata/v1-datakey.bin is its data key.
func legacyFolder(t *testing.T) (dir string, dataKey []byte) {
	t.Helper()
	files := map[string][]byte{}
	for _, name := range []string{snapshotName, journalName} {
		b, err := os.ReadFile(filepath.Join("testdata", "v1", name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	key, err := os.ReadFile(filepath.Join("testdata", "v1-datakey.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return writeFiles(t, files), key
}

var legacyState = kv("manifest/raw", "{}", "activations/web", "1")

func snapshotVersionOf(t *testing.T, dir string) uint16 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, snapshotName))
	if err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint16(b[8:10])
}

func TestFileLoadsLegacyFormat(t *testing.T) {
	dir, _ := legacyFolder(t)
	files := dirFiles(t, dir)
	s := openFile(t, dir, sealerWith(t, 0x11))
	requireState(t, loadOK(t, s), legacyState)
	requireFiles(t, dir, files)
	if got := s.RecoveryData(); string(got) != `{"version":1}` {
		t.Fatalf("RecoveryData = %q", got)
	}
	if got := s.SealMode(); got != seal.ModeProductKey {
		t.Fatalf("SealMode = %s, want the default ProductKey", got)
	}
	// Commits go on in the old generation.
	if err := s.Commit(t.Context(), kv("x", "1")); err != nil {
		t.Fatal(err)
	}
	if v := snapshotVersionOf(t, dir); v != legacySnapshotVersion {
		t.Fatalf("a commit rewrote the snapshot (version %d)", v)
	}
	// The next generation is written in the current format, with
	// sealed_key beside it; SetSealMode of the mode in force makes one.
	if err := s.SetSealMode(t.Context(), seal.ModeProductKey); err != nil {
		t.Fatal(err)
	}
	if v := snapshotVersionOf(t, dir); v != snapshotVersion {
		t.Fatalf("snapshot version %d after a new generation, want %d", v, snapshotVersion)
	}
	if _, err := os.Stat(filepath.Join(dir, sealedKeyName)); err != nil {
		t.Fatalf("no sealed_key after the new generation: %v", err)
	}
	s.Close()
	want := applied(legacyState, kv("x", "1"))
	s = openFile(t, dir, sealerWith(t, 0x11))
	requireState(t, loadOK(t, s), want)
	if got := s.RecoveryData(); string(got) != `{"version":1}` {
		t.Fatalf("RecoveryData after the upgrade = %q", got)
	}
	s.Close()

	// Now removing sealed_key brings the state into recovery.
	if err := os.Remove(filepath.Join(dir, sealedKeyName)); err != nil {
		t.Fatal(err)
	}
	s = openFile(t, dir, sealerWith(t, 0x11))
	_, err := s.Load(t.Context())
	requireErrIs(t, err, ErrUnseal)
}

func TestFileLegacyFormatUsesTheDefaultModesSealer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    seal.Mode
		sealers map[seal.Mode]seal.Sealer
		opens   bool
	}{
		{"UniqueKey default", seal.ModeUniqueKey, map[seal.Mode]seal.Sealer{seal.ModeUniqueKey: sealerWith(t, 0x11), seal.ModeProductKey: sealerWith(t, 0x22)}, true},
		{"ProductKey default, key of UniqueKey", seal.ModeProductKey, map[seal.Mode]seal.Sealer{seal.ModeUniqueKey: sealerWith(t, 0x11), seal.ModeProductKey: sealerWith(t, 0x22)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, key := legacyFolder(t)
			s, err := Open(dir, Options{Sealers: tc.sealers, DefaultMode: tc.mode})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := s.Load(t.Context())
			if !tc.opens {
				requireErrIs(t, err, ErrUnseal)
				// The owners' key still opens it, and the state moves to the
				// current format.
				if got, err = s.Unlock(t.Context(), key); err != nil {
					t.Fatal(err)
				}
				if v := snapshotVersionOf(t, dir); v != snapshotVersion {
					t.Fatalf("snapshot version %d after Unlock", v)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			requireState(t, got, legacyState)
			if s.SealMode() != tc.mode {
				t.Fatalf("SealMode = %s, want %s", s.SealMode(), tc.mode)
			}
		})
	}
}

func TestOpenOptions(t *testing.T) {
	sl := sealerWith(t, 1)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no sealer for the default mode", Options{Sealers: map[seal.Mode]seal.Sealer{seal.ModeUniqueKey: sl}}},
		{"default mode Disabled", Options{Sealers: map[seal.Mode]seal.Sealer{seal.ModeProductKey: sl}, DefaultMode: seal.ModeDisabled}},
		{"unknown default mode", Options{Sealers: map[seal.Mode]seal.Sealer{seal.ModeProductKey: sl}, DefaultMode: "Sealed"}},
		{"sealer for Disabled", Options{Sealers: map[seal.Mode]seal.Sealer{seal.ModeProductKey: sl, seal.ModeDisabled: sl}}},
		{"nil sealer", Options{Sealers: map[seal.Mode]seal.Sealer{seal.ModeProductKey: sl, seal.ModeUniqueKey: nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := Open(t.TempDir(), tc.opts); err == nil {
				s.Close()
				t.Fatal("Open accepted the options")
			}
		})
	}
	// A mode without a sealer cannot be switched to, and nothing changes.
	dir := t.TempDir()
	s, err := Open(dir, Options{Sealers: map[seal.Mode]seal.Sealer{seal.ModeProductKey: sl}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Reset(t.Context(), kv("a", "1")); err != nil {
		t.Fatal(err)
	}
	files := dirFiles(t, dir)
	if err := s.SetSealMode(t.Context(), seal.ModeUniqueKey); err == nil {
		t.Fatal("SetSealMode switched to a mode without a sealer")
	}
	if _, err := s.ResetWith(t.Context(), kv("b", "1"), ResetOptions{Mode: seal.ModeUniqueKey}); err == nil {
		t.Fatal("ResetWith used a mode without a sealer")
	}
	requireFiles(t, dir, files)
	if s.SealMode() != seal.ModeProductKey {
		t.Fatalf("SealMode = %s", s.SealMode())
	}
}
