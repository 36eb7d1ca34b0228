package store

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

func TestFileRoundTrip(t *testing.T) {
	type step struct {
		reset   map[string][]byte // if non-nil: Reset with this state
		commit  map[string][]byte // if non-nil: Commit these changes
		reopen  bool              // close, reopen and check the state
		compact bool              // make the next commit compact
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"reset only", []step{{reset: kv("a", "1")}, {reopen: true}}},
		{"commits", []step{
			{reset: kv("a", "1")},
			{commit: kv("b", "2")},
			{commit: kv("a", "<nil>", "c", "3")},
			{reopen: true},
			{commit: kv("b", "22")},
			{reopen: true},
		}},
		{"commit then reset", []step{
			{reset: kv("a", "1")},
			{commit: kv("b", "2")},
			{reset: kv("z", "26")},
			{reopen: true},
			{commit: kv("y", "25")},
			{reopen: true},
		}},
		{"compaction keeps state", []step{
			{reset: kv("a", "1")},
			{commit: kv("b", "2")},
			{compact: true},
			{commit: kv("c", "3", "a", "<nil>")},
			{reopen: true},
			{commit: kv("d", "4")},
			{compact: true},
			{commit: kv("d", "<nil>")},
			{reopen: true},
		}},
		{"empty state", []step{{reset: map[string][]byte{}}, {reopen: true}, {commit: kv("a", "")}, {reopen: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			sealer := sealerWith(t, 1)
			s := openFile(t, dir, sealer)
			if _, err := s.Load(t.Context()); !errors.Is(err, ErrNoState) {
				t.Fatalf("Load: err = %v, want ErrNoState", err)
			}
			var want map[string][]byte
			for i, st := range tt.steps {
				switch {
				case st.reset != nil:
					if _, err := s.Reset(t.Context(), st.reset); err != nil {
						t.Fatalf("step %d: Reset: %v", i, err)
					}
					want = cloneState(st.reset)
				case st.commit != nil:
					if err := s.Commit(t.Context(), st.commit); err != nil {
						t.Fatalf("step %d: Commit: %v", i, err)
					}
					want = applied(want, st.commit)
					s.compactMin = defaultCompactMin
				case st.reopen:
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
					s = openFile(t, dir, sealer)
					requireState(t, loadOK(t, s), want)
				case st.compact:
					s.compactMin = -1 << 40
					s.snapSize = 0
				}
			}
		})
	}
}

func TestFileConcurrentCommits(t *testing.T) {
	dir := t.TempDir()
	sealer := sealerWith(t, 1)
	s := openFile(t, dir, sealer)
	if _, err := s.Reset(t.Context(), kv("manifest/raw", "{}")); err != nil {
		t.Fatal(err)
	}
	s.compactMin = 4 << 10 // a few compactions happen among the commits
	const workers, commits = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*commits)
	for w := range workers {
		wg.Go(func() {
			for i := range commits {
				ch := kv(fmt.Sprintf("activations/%d/%d", w, i), strings.Repeat("v", 40),
					fmt.Sprintf("last/%d", w), fmt.Sprint(i))
				if i > 0 {
					ch[fmt.Sprintf("activations/%d/%d", w, i-1)] = nil
				}
				if err := s.Commit(t.Context(), ch); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Commit: %v", err)
	}
	want := kv("manifest/raw", "{}")
	for w := range workers {
		want[fmt.Sprintf("activations/%d/%d", w, commits-1)] = []byte(strings.Repeat("v", 40))
		want[fmt.Sprintf("last/%d", w)] = []byte(fmt.Sprint(commits - 1))
	}
	requireState(t, loadOK(t, s), want)
	if snapshotGeneration(t, dir) < 2 {
		t.Error("no compaction happened among the commits")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	requireState(t, loadOK(t, openFile(t, dir, sealer)), want)
}

func TestFileLock(t *testing.T) {
	dir := t.TempDir()
	a := openFile(t, dir, sealerWith(t, 1))
	if _, err := OpenFile(dir, sealerWith(t, 1), nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("second OpenFile: err = %v, want ErrLocked", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := OpenFile(dir, sealerWith(t, 1), nil)
	if err != nil {
		t.Fatalf("OpenFile after Close: %v", err)
	}
	b.Close()
}

func TestFileOpenCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "seal")
	openFile(t, dir, sealerWith(t, 1))
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("seal directory mode %v, want no group or other access", fi.Mode().Perm())
	}
	if _, err := OpenFile(t.TempDir(), nil, nil); err == nil {
		t.Fatal("OpenFile accepted a nil sealer")
	}
}

// tornFixture builds a store with a few commits and returns its files
// before and after one last commit, with the states they hold.
type tornFixture struct {
	before, after           map[string][]byte // files
	stateBefore, stateAfter map[string][]byte
	lastRecord              int    // offset of the last record in after's journal
	dataKey                 []byte // returned by Reset
}

func newTornFixture(t *testing.T, sealer seal.Sealer) tornFixture {
	t.Helper()
	dir := t.TempDir()
	s := openFile(t, dir, sealer)
	state := kv("manifest/raw", "{}", "ca/root/cert", "pem")
	key, err := s.Reset(t.Context(), state)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []map[string][]byte{kv("a", "1"), kv("b", "2", "manifest/raw", "<nil>"), kv("c", "")} {
		if err := s.Commit(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		state = applied(state, ch)
	}
	f := tornFixture{before: dirFiles(t, dir), stateBefore: state, dataKey: key}
	last := kv("activations/web", "2", "a", "<nil>")
	if err := s.Commit(t.Context(), last); err != nil {
		t.Fatal(err)
	}
	f.after, f.stateAfter = dirFiles(t, dir), applied(state, last)
	f.lastRecord = len(f.before[journalName])
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFileTornLastRecord(t *testing.T) {
	sealer := sealerWith(t, 1)
	f := newTornFixture(t, sealer)
	journal := f.after[journalName]
	for cut := f.lastRecord; cut < len(journal); cut++ {
		files := map[string][]byte{snapshotName: f.after[snapshotName], sealedKeyName: f.after[sealedKeyName], journalName: journal[:cut]}
		dir := writeFiles(t, files)
		s := openFile(t, dir, sealer)
		got, err := s.Load(t.Context())
		if err != nil {
			t.Fatalf("cut at %d: Load: %v", cut, err)
		}
		requireState(t, got, f.stateBefore)
		requireFiles(t, dir, files)

		// The next commit cuts the torn tail off and appends after the
		// last valid record.
		if err := s.Commit(t.Context(), kv("next", "1")); err != nil {
			t.Fatalf("cut at %d: Commit: %v", cut, err)
		}
		if n, want := fileSize(t, filepath.Join(dir, journalName)), int64(f.lastRecord)+recordSize(kv("next", "1")); n != want {
			t.Fatalf("cut at %d: journal is %d bytes after the next commit, want %d (torn tail cut at %d)", cut, n, want, f.lastRecord)
		}
		s.Close()
		requireState(t, loadOK(t, openFile(t, dir, sealer)), applied(f.stateBefore, kv("next", "1")))
	}
}

func TestFileBadTail(t *testing.T) {
	sealer := sealerWith(t, 1)
	f := newTornFixture(t, sealer)
	journal := f.after[journalName]
	flipped := bytes.Clone(journal)
	flipped[len(flipped)-1] ^= 0x10
	zeroed := bytes.Clone(journal)
	clear(zeroed[f.lastRecord+recordHeaderSize+4:])
	garbage := bytes.Repeat([]byte{0xa5, 0x3c, 0x00, 0x7f}, 1024)
	base := kv("manifest/raw", "{}", "ca/root/cert", "pem")
	tests := []struct {
		name    string
		journal []byte
		want    map[string][]byte
		valid   int // bytes of the journal that stay
	}{
		{"complete last record fails authentication", flipped, f.stateBefore, f.lastRecord},
		{"last record zero-filled", zeroed, f.stateBefore, f.lastRecord},
		{"zeros after the last record", append(bytes.Clone(journal), make([]byte, 4096)...), f.stateAfter, len(journal)},
		{"garbage after the last record", append(bytes.Clone(journal), garbage...), f.stateAfter, len(journal)},
		{"header only", journal[:journalHeaderSize], base, journalHeaderSize},
		{"shorter than the header", journal[:journalHeaderSize-1], base, journalHeaderSize},
		{"empty journal file", []byte{}, base, journalHeaderSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string][]byte{snapshotName: f.after[snapshotName], sealedKeyName: f.after[sealedKeyName], journalName: tt.journal}
			dir := writeFiles(t, files)
			s := openFile(t, dir, sealer)
			requireState(t, loadOK(t, s), tt.want)
			requireFiles(t, dir, files)
			if err := s.Commit(t.Context(), kv("next", "1")); err != nil {
				t.Fatal(err)
			}
			if n, want := fileSize(t, filepath.Join(dir, journalName)), int64(tt.valid)+recordSize(kv("next", "1")); n != want {
				t.Fatalf("journal is %d bytes after the next commit, want %d", n, want)
			}
			s.Close()
			requireState(t, loadOK(t, openFile(t, dir, sealer)), applied(tt.want, kv("next", "1")))
		})
	}
}

func TestFileLeftoverTempFiles(t *testing.T) {
	sealer := sealerWith(t, 1)
	f := newTornFixture(t, sealer)
	files := map[string][]byte{
		snapshotName:               f.after[snapshotName],
		sealedKeyName:              f.after[sealedKeyName],
		journalName:                f.after[journalName],
		snapshotName + tempSuffix:  f.after[snapshotName][:100],
		sealedKeyName + tempSuffix: f.after[sealedKeyName][:10],
		journalName + tempSuffix:   []byte("partial"),
	}
	dir := writeFiles(t, files)
	s := openFile(t, dir, sealer)
	requireState(t, loadOK(t, s), f.stateAfter)
	requireFiles(t, dir, files)

	s.compactMin, s.snapSize = -1<<40, 0
	if err := s.Commit(t.Context(), kv("next", "1")); err != nil {
		t.Fatal(err)
	}
	if snapshotGeneration(t, dir) != 2 || journalGeneration(t, dir) != 2 {
		t.Fatal("forced compaction did not write generation 2")
	}
	for _, name := range []string{snapshotName + tempSuffix, journalName + tempSuffix} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after compaction (err %v)", name, err)
		}
	}
	s.Close()
	requireState(t, loadOK(t, openFile(t, dir, sealer)), applied(f.stateAfter, kv("next", "1")))
}

func TestFileCompactionBoundsJournal(t *testing.T) {
	dir := t.TempDir()
	sealer := sealerWith(t, 1)
	s := openFile(t, dir, sealer)
	if _, err := s.Reset(t.Context(), kv("manifest/raw", "{}")); err != nil {
		t.Fatal(err)
	}
	s.compactMin = 2 << 10
	want := kv("manifest/raw", "{}")
	for i := range 60 {
		ch := kv(fmt.Sprintf("k%d", i%10), strings.Repeat("x", 100+i))
		if err := s.Commit(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		want = applied(want, ch)
		limit := max(s.compactMin, fileSize(t, filepath.Join(dir, snapshotName))) + journalHeaderSize
		if n := fileSize(t, filepath.Join(dir, journalName)); n > limit {
			t.Fatalf("commit %d: journal is %d bytes, above the compaction limit %d", i, n, limit)
		}
	}
	if g := snapshotGeneration(t, dir); g < 3 {
		t.Fatalf("snapshot generation %d after 60 commits of ~150 bytes with a 2 KiB threshold", g)
	}
	if snapshotGeneration(t, dir) != journalGeneration(t, dir) {
		t.Fatal("snapshot and journal generations differ after compaction")
	}
	s.Close()
	requireState(t, loadOK(t, openFile(t, dir, sealer)), want)
}

func TestFileCommitCostIsProportionalToChange(t *testing.T) {
	dir := t.TempDir()
	sealer := sealerWith(t, 1)
	s := openFile(t, dir, sealer)
	state := bigState(2000, 1024)
	if _, err := s.Reset(t.Context(), state); err != nil {
		t.Fatal(err)
	}
	snapshot := dirFiles(t, dir)[snapshotName]
	if len(snapshot) < 2_000_000 {
		t.Fatalf("snapshot is only %d bytes", len(snapshot))
	}
	jpath := filepath.Join(dir, journalName)
	for i := range 10 {
		before := fileSize(t, jpath)
		ch := kv("activations/web", fmt.Sprint(i))
		if err := s.Commit(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		growth := fileSize(t, jpath) - before
		if want := recordSize(ch); growth != want {
			t.Fatalf("commit %d grew the journal by %d bytes, want the record size %d", i, growth, want)
		}
	}
	if !bytes.Equal(dirFiles(t, dir)[snapshotName], snapshot) {
		t.Fatal("small commits rewrote the snapshot")
	}
}

func bigState(n, size int) map[string][]byte {
	m := make(map[string][]byte, n)
	for i := range n {
		m[fmt.Sprintf("marble/%05d", i)] = bytes.Repeat([]byte{byte(i)}, size)
	}
	return m
}

func TestFileFailedAppendIsUndone(t *testing.T) {
	dir := t.TempDir()
	sealer := sealerWith(t, 1)
	s := openFile(t, dir, sealer)
	if _, err := s.Reset(t.Context(), kv("a", "1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(t.Context(), kv("b", "2")); err != nil {
		t.Fatal(err)
	}
	files := dirFiles(t, dir)

	// A journal opened for appending refuses WriteAt; the store cuts back
	// and stays usable.
	s.closeJournal()
	f, err := os.OpenFile(filepath.Join(dir, journalName), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.journal = f
	if err := s.Commit(t.Context(), kv("c", "3")); err == nil || errors.Is(err, ErrBroken) {
		t.Fatalf("Commit with a failing write: err = %v, want a plain error", err)
	}
	requireFiles(t, dir, files)
	s.closeJournal()
	if err := s.Commit(t.Context(), kv("d", "4")); err != nil {
		t.Fatalf("Commit after an undone failure: %v", err)
	}

	// A read-only journal can neither be written nor cut back: the store
	// refuses commits until Load.
	s.closeJournal()
	files = dirFiles(t, dir)
	if f, err = os.Open(filepath.Join(dir, journalName)); err != nil {
		t.Fatal(err)
	}
	s.journal = f
	requireErrIs(t, s.Commit(t.Context(), kv("e", "5")), ErrBroken)
	requireErrIs(t, s.Commit(t.Context(), kv("f", "6")), ErrBroken)
	requireFiles(t, dir, files)
	requireState(t, loadOK(t, s), kv("a", "1", "b", "2", "d", "4"))
	if err := s.Commit(t.Context(), kv("g", "7")); err != nil {
		t.Fatalf("Commit after Load: %v", err)
	}
	s.Close()
	requireState(t, loadOK(t, openFile(t, dir, sealer)), kv("a", "1", "b", "2", "d", "4", "g", "7"))
}

func TestFileRefusesOversizedFiles(t *testing.T) {
	for _, name := range []string{snapshotName, journalName} {
		t.Run(name, func(t *testing.T) {
			sealer := sealerWith(t, 1)
			f := newTornFixture(t, sealer)
			dir := writeFiles(t, f.after)
			// A sparse file larger than the limit costs no disk space.
			if err := os.Truncate(filepath.Join(dir, name), maxFileSize+1); err != nil {
				t.Fatal(err)
			}
			_, err := openFile(t, dir, sealer).Load(t.Context())
			requireErrIs(t, err, ErrUnseal, ErrCorrupt)
		})
	}
}

// recordSize is the size of the journal record that commits changes.
func recordSize(changes map[string][]byte) int64 {
	return int64(recordHeaderSize + nonceSize + len(encodeEntries(changes)) + tagSize)
}

// forceCompaction writes the store's in-memory state as a new generation.
func forceCompaction(t *testing.T, s *FileStore) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.writeGeneration(s.gen+1, s.key, s.mode, s.recovery, s.state); err != nil {
		t.Fatal(err)
	}
}

func TestFileStaleJournalIgnored(t *testing.T) {
	// A journal of an older generation is ignored even if its records
	// authenticate and would change the state.
	dir := t.TempDir()
	sealer := sealerWith(t, 1)
	s := openFile(t, dir, sealer)
	if _, err := s.Reset(t.Context(), kv("a", "0")); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(t.Context(), kv("a", "1")); err != nil {
		t.Fatal(err)
	}
	stale := dirFiles(t, dir)[journalName]
	if err := s.Commit(t.Context(), kv("a", "2")); err != nil {
		t.Fatal(err)
	}
	forceCompaction(t, s)
	s.Close()
	files := dirFiles(t, dir)
	files[journalName] = stale
	dir = writeFiles(t, files)
	s = openFile(t, dir, sealer)
	requireState(t, loadOK(t, s), kv("a", "2"))
	if err := s.Commit(t.Context(), kv("b", "1")); err != nil {
		t.Fatal(err)
	}
	if g := journalGeneration(t, dir); g != 2 {
		t.Fatalf("journal generation %d after the first commit, want 2", g)
	}
	s.Close()
	requireState(t, loadOK(t, openFile(t, dir, sealer)), kv("a", "2", "b", "1"))
}

func TestFileKeepsNoReferences(t *testing.T) {
	// Whatever callers do with maps and slices they passed in or got back
	// never reaches the files, even when the in-memory state is written
	// out as a snapshot.
	dir := t.TempDir()
	sealer := sealerWith(t, 1)
	s := openFile(t, dir, sealer)
	state := kv("a", "1111")
	key, err := s.Reset(t.Context(), state)
	if err != nil {
		t.Fatal(err)
	}
	state["a"][0] = 'X'
	changes := kv("b", "2222")
	if err := s.Commit(t.Context(), changes); err != nil {
		t.Fatal(err)
	}
	changes["b"][0] = 'X'
	forceCompaction(t, s)
	got := loadOK(t, s)
	got["a"][1] = 'Y'
	got["b"][1] = 'Y'
	delete(got, "a")
	forceCompaction(t, s)
	unlocked, err := s.Unlock(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	unlocked["b"][2] = 'Z'
	forceCompaction(t, s)
	s.Close()
	requireState(t, loadOK(t, openFile(t, dir, sealer)), kv("a", "1111", "b", "2222"))
}

func TestFileLogs(t *testing.T) {
	// The store warns about an insecure sealer and never logs key
	// material, in any encoding, on any path.
	for _, sealer := range []seal.Sealer{seal.SimulationSealer{}, sealerWith(t, 1)} {
		var buf bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		dir := t.TempDir()
		s, err := OpenFile(dir, sealer, logger)
		if err != nil {
			t.Fatal(err)
		}
		key, err := s.Reset(t.Context(), kv("a", "1"))
		if err != nil {
			t.Fatal(err)
		}
		s.compactMin = 64
		for i := range 10 {
			if err := s.Commit(t.Context(), kv("k", strings.Repeat("v", 20+i))); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		// Another machine: Load fails, Unlock, then a Reset that moves
		// unreadable files aside.
		s, err = OpenFile(dir, sealerWith(t, 9), logger)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(t.Context()); !errors.Is(err, ErrUnseal) {
			t.Fatal(err)
		}
		if _, err := s.Unlock(t.Context(), key); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s, err = OpenFile(dir, sealer, logger)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(t.Context()); !errors.Is(err, ErrUnseal) {
			t.Fatal(err)
		}
		key2, err := s.Reset(t.Context(), kv("b", "2"))
		if err != nil {
			t.Fatal(err)
		}
		s.Close()

		out := buf.String()
		for _, k := range [][]byte{key, key2} {
			for _, enc := range []string{string(k), hex.EncodeToString(k), base64.StdEncoding.EncodeToString(k), fmt.Sprint(k), fmt.Sprintf("%q", k)} { //nolint:staticcheck // QF1010: fmt.Sprint(k) is the byte-list form a careless log would print
				if strings.Contains(out, enc) {
					t.Fatalf("log contains the data key:\n%s", out)
				}
			}
		}
		for _, want := range []string{"compacted journal", "unlocked stored state", "moved stored state that could not be opened aside"} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %q:\n%s", want, out)
			}
		}
		if got := strings.Contains(out, "no protection"); got != sealer.Insecure() {
			t.Errorf("insecure-sealer warning logged = %v for Insecure() = %v", got, sealer.Insecure())
		}
	}
}

func TestFileRecordsOfAnotherGenerationNotApplied(t *testing.T) {
	// Compaction keeps the data key, so records of the previous generation
	// decrypt under it; they must still not apply to the next one.
	dir := t.TempDir()
	sealer := sealerWith(t, 1)
	s := openFile(t, dir, sealer)
	if _, err := s.Reset(t.Context(), kv("a", "0")); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(t.Context(), kv("a", "1", "old", "x")); err != nil {
		t.Fatal(err)
	}
	oldJournal := dirFiles(t, dir)[journalName]
	if err := s.Commit(t.Context(), kv("old", "<nil>")); err != nil {
		t.Fatal(err)
	}
	forceCompaction(t, s)
	if err := s.Commit(t.Context(), kv("a", "2")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	files := dirFiles(t, dir)
	// The generation-2 journal with its record replaced by the
	// generation-1 record of the same sequence number.
	files[journalName] = slices.Concat(files[journalName][:journalHeaderSize], oldJournal[journalHeaderSize:])
	dir = writeFiles(t, files)
	requireState(t, loadOK(t, openFile(t, dir, sealer)), kv("a", "1"))
}
