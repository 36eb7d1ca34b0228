package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

func TestFileFailClosed(t *testing.T) {
	sealer := sealerWith(t, 1)
	f := newTornFixture(t, sealer)
	offs := recordOffsets(t, f.after[journalName])
	if len(offs) != 4 {
		t.Fatalf("fixture journal has %d records, want 4", len(offs))
	}
	// record returns the bytes of record i of the fixture journal.
	record := func(i int) []byte {
		j := f.after[journalName]
		end := len(j)
		if i+1 < len(offs) {
			end = offs[i+1]
		}
		return j[offs[i]:end]
	}
	snap := func(fn func(b []byte) []byte) func(map[string][]byte) {
		return func(files map[string][]byte) { files[snapshotName] = fn(bytes.Clone(files[snapshotName])) }
	}
	sealedKey := func(fn func(b []byte) []byte) func(map[string][]byte) {
		return func(files map[string][]byte) { files[sealedKeyName] = fn(bytes.Clone(files[sealedKeyName])) }
	}
	// A sealed_key of another deployment, sealed with the same sealer.
	foreign := newTornFixture(t, sealer).after[sealedKeyName]
	journal := func(fn func(b []byte) []byte) func(map[string][]byte) {
		return func(files map[string][]byte) { files[journalName] = fn(bytes.Clone(files[journalName])) }
	}
	flip := func(off func(b []byte) int) func(b []byte) []byte {
		return func(b []byte) []byte { b[off(b)] ^= 0x04; return b }
	}
	at := func(n int) func([]byte) int { return func([]byte) int { return n } }
	fromEnd := func(n int) func(b []byte) int { return func(b []byte) int { return len(b) - n } }

	tests := []struct {
		name   string
		mutate func(map[string][]byte)
		sealer seal.Sealer
		// unlock is what Unlock with the right data key returns: nil
		// (it opens the state) or the error it wraps.
		unlock error
	}{
		{name: "sealed_key missing", mutate: func(files map[string][]byte) { delete(files, sealedKeyName) }},
		{name: "sealed_key empty", mutate: sealedKey(func([]byte) []byte { return nil })},
		{name: "bit in sealed data key", mutate: sealedKey(flip(fromEnd(5)))},
		{name: "sealed_key truncated", mutate: sealedKey(func(b []byte) []byte { return b[:len(b)-1] })},
		{name: "sealed_key with trailing byte", mutate: sealedKey(func(b []byte) []byte { return append(b, 0) })},
		{name: "sealed_key bad magic", mutate: sealedKey(flip(at(0)))},
		{name: "sealed_key unknown version", mutate: sealedKey(func(b []byte) []byte { b[8] = 9; return b })},
		{name: "sealed_key no entries", mutate: sealedKey(func(b []byte) []byte { return b[:sealedKeyHeaderSize] })},
		{name: "sealed_key mode changed", mutate: sealedKey(func(b []byte) []byte { b[sealedKeyHeaderSize] = 2; return b })},
		{name: "sealed_key bit in key check", mutate: sealedKey(flip(at(sealedKeyHeaderSize + 3)))},
		{name: "sealed_key of another deployment", mutate: func(files map[string][]byte) { files[sealedKeyName] = bytes.Clone(foreign) }},
		{name: "bit in key check", mutate: snap(flip(at(12))), unlock: ErrWrongDataKey},
		{name: "bit in generation", mutate: snap(flip(at(sealBoundSize))), unlock: ErrCorrupt},
		{name: "bit in snapshot ciphertext", mutate: snap(flip(fromEnd(tagSize + 3))), unlock: ErrCorrupt},
		{name: "bit in snapshot tag", mutate: snap(flip(fromEnd(1))), unlock: ErrCorrupt},
		{name: "bit in snapshot nonce", mutate: snap(func(b []byte) []byte {
			_, aad, _, err := parseSnapshot(b)
			if err != nil {
				t.Fatal(err)
			}
			b[len(aad)+2] ^= 1
			return b
		}), unlock: ErrCorrupt},
		{name: "snapshot truncated", mutate: snap(func(b []byte) []byte { return b[:len(b)-1] }), unlock: ErrCorrupt},
		{name: "snapshot header only", mutate: snap(func(b []byte) []byte { return b[:snapshotFixedSize] }), unlock: ErrCorrupt},
		{name: "snapshot with trailing byte", mutate: snap(func(b []byte) []byte { return append(b, 0) }), unlock: ErrCorrupt},
		{name: "empty snapshot", mutate: snap(func([]byte) []byte { return nil }), unlock: ErrCorrupt},
		{name: "snapshot bad magic", mutate: snap(flip(at(0))), unlock: ErrCorrupt},
		{name: "snapshot unknown version", mutate: snap(func(b []byte) []byte { b[8] = 3; return b }), unlock: ErrCorrupt},
		{name: "snapshot seal mode changed", mutate: snap(func(b []byte) []byte { b[snapshotFixedSize] = 2; return b }), unlock: ErrCorrupt},
		{name: "snapshot unknown seal mode", mutate: snap(func(b []byte) []byte { b[snapshotFixedSize] = 9; return b }), unlock: ErrCorrupt},
		{name: "recovery data length absurd", mutate: snap(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[snapshotV2FixedSize:], 0xffffffff)
			return b
		}), unlock: ErrCorrupt},
		{name: "bit in middle journal record", mutate: journal(flip(func([]byte) int { return offs[1] + recordHeaderSize + nonceSize + 2 })), unlock: ErrCorrupt},
		{name: "bit in middle record length", mutate: journal(flip(at(offs[1]))), unlock: ErrCorrupt},
		{name: "bit in first record tag", mutate: journal(flip(func([]byte) int { return offs[1] - 1 })), unlock: ErrCorrupt},
		{name: "middle record removed", mutate: journal(func(b []byte) []byte {
			return slices.Concat(b[:offs[1]], b[offs[2]:])
		}), unlock: ErrCorrupt},
		{name: "record before the last removed", mutate: journal(func(b []byte) []byte {
			return slices.Concat(b[:offs[2]], b[offs[3]:])
		}), unlock: ErrCorrupt},
		{name: "records swapped", mutate: journal(func(b []byte) []byte {
			return slices.Concat(b[:offs[1]], record(2), record(1), b[offs[3]:])
		}), unlock: ErrCorrupt},
		{name: "record repeated", mutate: journal(func(b []byte) []byte {
			return slices.Concat(b[:offs[1]], record(0), b[offs[1]:])
		}), unlock: ErrCorrupt},
		{name: "journal generation newer", mutate: journal(func(b []byte) []byte { b[12]++; return b }), unlock: ErrCorrupt},
		{name: "journal bad magic", mutate: journal(flip(at(1))), unlock: ErrCorrupt},
		{name: "journal unknown version", mutate: journal(func(b []byte) []byte { b[8] = 9; return b }), unlock: ErrCorrupt},
		{name: "journal without snapshot", mutate: func(files map[string][]byte) { delete(files, snapshotName) }, unlock: ErrCorrupt},
		{name: "other machine", mutate: func(map[string][]byte) {}, sealer: sealerWith(t, 2)},
		{name: "simulation sealer", mutate: func(map[string][]byte) {}, sealer: seal.SimulationSealer{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string][]byte{}
			for k, v := range f.after {
				files[k] = bytes.Clone(v)
			}
			tt.mutate(files)
			dir := writeFiles(t, files)
			sl := tt.sealer
			if sl == nil {
				sl = sealer
			}
			s := openFile(t, dir, sl)
			_, err := s.Load(t.Context())
			requireErrIs(t, err, ErrUnseal)
			requireFiles(t, dir, files)
			requireErrIs(t, s.Commit(t.Context(), kv("x", "1")), ErrNotOpen, ErrUnseal)
			requireFiles(t, dir, files)

			_, err = s.Unlock(t.Context(), bytes.Repeat([]byte{7}, dataKeySize))
			if err == nil {
				t.Fatal("Unlock with a wrong key succeeded")
			}
			requireFiles(t, dir, files)

			got, err := s.Unlock(t.Context(), f.dataKey)
			if tt.unlock == nil {
				if err != nil {
					t.Fatalf("Unlock with the right key: %v", err)
				}
				requireState(t, got, f.stateAfter)
				s.Close()
				requireState(t, loadOK(t, openFile(t, dir, sl)), f.stateAfter)
				return
			}
			requireErrIs(t, err, tt.unlock)
			requireFiles(t, dir, files)

			if _, err := s.Reset(t.Context(), kv("new", "1")); err != nil {
				t.Fatalf("Reset: %v", err)
			}
			s.Close()
			requireState(t, loadOK(t, openFile(t, dir, sl)), kv("new", "1"))
			requireDiscarded(t, dir, files)
		})
	}
}

// requireDiscarded checks that dir has exactly one discarded-* directory
// holding the snapshot and journal of old byte for byte.
func requireDiscarded(t *testing.T, dir string, old map[string][]byte) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), discardedPrefix) {
			found = append(found, e.Name())
		}
	}
	if len(found) != 1 {
		t.Fatalf("found discarded directories %v, want one", found)
	}
	want := map[string][]byte{}
	for _, name := range []string{snapshotName, journalName, sealedKeyName} {
		if b, ok := old[name]; ok {
			want[name] = b
		}
	}
	requireFiles(t, filepath.Join(dir, found[0]), want)
}

func TestFileUnlockOnNewMachine(t *testing.T) {
	dir := t.TempDir()
	oldSealer, newSealer := sealerWith(t, 1), sealerWith(t, 2)
	s := openFile(t, dir, oldSealer)
	key, err := s.Reset(t.Context(), kv("manifest/raw", "{}"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(t.Context(), kv("secret/a", "s")); err != nil {
		t.Fatal(err)
	}
	want := kv("manifest/raw", "{}", "secret/a", "s")
	s.Close()

	s = openFile(t, dir, newSealer)
	_, err = s.Load(t.Context())
	requireErrIs(t, err, ErrUnseal)
	if errors.Is(err, ErrCorrupt) {
		t.Fatalf("Load with another sealer reports corruption: %v", err)
	}
	files := dirFiles(t, dir)
	wrong := bytes.Clone(key)
	wrong[31] ^= 0x80
	for _, k := range [][]byte{wrong, key[:31], append(bytes.Clone(key), 0)} {
		_, err := s.Unlock(t.Context(), k)
		requireErrIs(t, err, ErrWrongDataKey)
		requireFiles(t, dir, files)
	}
	got, err := s.Unlock(t.Context(), key)
	if err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	requireState(t, got, want)
	if g := snapshotGeneration(t, dir); g != 2 {
		t.Fatalf("Unlock wrote generation %d, want 2", g)
	}
	if err := s.Commit(t.Context(), kv("secret/b", "t")); err != nil {
		t.Fatal(err)
	}
	want = applied(want, kv("secret/b", "t"))
	s.Close()

	s = openFile(t, dir, newSealer)
	requireState(t, loadOK(t, s), want)
	s.Close()
	_, err = openFile(t, dir, oldSealer).Load(t.Context())
	requireErrIs(t, err, ErrUnseal)
}
