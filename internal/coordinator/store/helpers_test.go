package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// sealerWith returns an AES-GCM sealer whose key is b repeated; two
// different b stand for two machines.
func sealerWith(t testing.TB, b byte) seal.Sealer {
	t.Helper()
	s, err := seal.NewAESGCMSealer(bytes.Repeat([]byte{b}, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// randomKey returns 32 random bytes.
func randomKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// openFile opens a FileStore that is closed when the test ends.
func openFile(t testing.TB, dir string, sealer seal.Sealer) *FileStore {
	t.Helper()
	s, err := OpenFile(dir, sealer, nil)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// loadOK loads and fails the test on error.
func loadOK(t testing.TB, s Store) map[string][]byte {
	t.Helper()
	got, err := s.Load(t.Context())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return got
}

// kv builds a state from alternating keys and values; the value "<nil>"
// stands for nil (a deletion in a change set).
func kv(pairs ...string) map[string][]byte {
	if len(pairs)%2 != 0 {
		panic("kv: odd number of arguments")
	}
	m := make(map[string][]byte, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		if pairs[i+1] == "<nil>" {
			m[pairs[i]] = nil
		} else {
			m[pairs[i]] = []byte(pairs[i+1])
		}
	}
	return m
}

// applied returns a copy of state with changes applied.
func applied(state, changes map[string][]byte) map[string][]byte {
	out := cloneState(state)
	applyChanges(out, cloneChanges(changes))
	return out
}

func equalStates(a, b map[string][]byte) bool {
	return maps.EqualFunc(a, b, bytes.Equal)
}

// requireState fails unless got equals want, values compared as bytes.
func requireState(t testing.TB, got, want map[string][]byte) {
	t.Helper()
	if !equalStates(got, want) {
		t.Fatalf("state mismatch:\n got  %s\n want %s", describe(got), describe(want))
	}
}

// describe renders a state compactly for failure messages.
func describe(m map[string][]byte) string {
	var b strings.Builder
	b.WriteString("{")
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteString(" ")
		}
		v := m[k]
		if len(v) > 24 {
			fmt.Fprintf(&b, "%s:<%d bytes>", k, len(v))
		} else {
			fmt.Fprintf(&b, "%s:%q", k, v)
		}
	}
	b.WriteString("}")
	return b.String()
}

// dirFiles returns the contents of every regular file below dir except the
// lock file, keyed by slash-separated relative path.
func dirFiles(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == lockName {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	return files
}

// requireFiles fails unless dir holds exactly the files in want.
func requireFiles(t testing.TB, dir string, want map[string][]byte) {
	t.Helper()
	got := dirFiles(t, dir)
	if !maps.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("files of %s changed: got %v, want %v", dir, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
}

// writeFiles creates a fresh directory holding files.
func writeFiles(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// recordOffsets returns the offset of every complete record in a journal.
func recordOffsets(t testing.TB, journal []byte) []int {
	t.Helper()
	var offs []int
	for off := journalHeaderSize; off < len(journal); {
		n, _, ok := recordAt(journal, off)
		if !ok {
			t.Fatalf("journal has no valid record header at offset %d", off)
		}
		offs = append(offs, off)
		off += recordHeaderSize + n
	}
	return offs
}

// snapshotGeneration reads the generation field of a snapshot file.
func snapshotGeneration(t testing.TB, dir string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, snapshotName))
	if err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[sealBoundSize:snapshotFixedSize])
}

// journalGeneration reads the generation field of a journal file.
func journalGeneration(t testing.TB, dir string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[12:20])
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func requireErrIs(t testing.TB, err error, targets ...error) {
	t.Helper()
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Fatalf("err = %v, want it to wrap %v", err, target)
		}
	}
}
