package store

import (
	"bytes"
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// File names inside the seal directory.
const (
	snapshotName    = "sealed_data"
	sealedKeyName   = "sealed_key"
	journalName     = "journal"
	lockName        = "lock"
	tempSuffix      = ".tmp"
	discardedPrefix = "discarded-"
)

// defaultCompactMin is the journal size below which no compaction happens,
// whatever the size of the snapshot.
const defaultCompactMin = 1 << 20

// FileStore is the Store kept in the seal directory: a snapshot file and a
// journal of changes (see the package documentation for the format). It
// holds an exclusive lock on the directory until Close. All methods are
// safe for concurrent use; concurrent Commits are written together (one
// record, one fsync).
type FileStore struct {
	dir         string
	sealers     map[seal.Mode]seal.Sealer
	defaultMode seal.Mode
	log         *slog.Logger
	lock        *os.File

	qmu   sync.Mutex
	queue []*commitReq

	// mu serialises every operation that reads or writes files and guards
	// the fields below.
	mu     sync.Mutex
	phase  phase
	broken error

	gen      uint64 // generation of the snapshot on disk (0: none known)
	key      []byte
	aead     cipher.AEAD
	header   snapshotHeader
	state    map[string][]byte
	snapSize int64
	journal  *os.File  // open journal of generation gen, nil until needed
	jGen     uint64    // generation of the journal file on disk if usable, else 0
	jEnd     int64     // offset after the last valid record
	jSize    int64     // size of the journal file; > jEnd when a torn tail remains
	seq      uint64    // sequence number of the last record
	recovery []byte    // recovery data of the snapshot last read or written
	mode     seal.Mode // seal mode of the snapshot last read or written
	// sealed is the sealed_key entry of the open state, nil when its mode
	// is Disabled or its snapshot has the legacy format.
	sealed *sealedEntry
	// skKnown tells whether skOnDisk is what sealed_key holds (nil: no
	// file).
	skKnown  bool
	skOnDisk []sealedEntry

	// compactMin is the journal size that triggers compaction at least.
	compactMin int64
	// hook, when set, is called at the named points of every write; tests
	// use it to capture the directory as a crash would leave it.
	hook func(point string)
}

var _ Store = (*FileStore)(nil)

type commitReq struct {
	changes map[string][]byte
	done    bool
	err     error
}

// Options configure a FileStore.
type Options struct {
	// Sealers seal the data key, by seal mode; Disabled needs none. A mode
	// without a sealer cannot be used: state sealed in it enters recovery
	// and switching to it fails.
	Sealers map[seal.Mode]seal.Sealer
	// DefaultMode is the seal mode of state stored before a manifest
	// chooses one (Reset, the first Commit), and the mode whose sealer
	// opens a snapshot of the legacy format. Empty means ProductKey.
	DefaultMode seal.Mode
	// Logger receives messages; nil discards them.
	Logger *slog.Logger
}

// OpenFile opens the store in dir with sealer for both ProductKey and
// UniqueKey and ProductKey as the default mode; see Open.
func OpenFile(dir string, sealer seal.Sealer, logger *slog.Logger) (*FileStore, error) {
	if sealer == nil {
		return nil, errors.New("store: open: no sealer")
	}
	return Open(dir, Options{
		Sealers: map[seal.Mode]seal.Sealer{seal.ModeProductKey: sealer, seal.ModeUniqueKey: sealer},
		Logger:  logger,
	})
}

// Open opens the store in dir, creating dir (mode 0700) if needed, and
// locks it against other users. It reads nothing yet: call Load.
func Open(dir string, opts Options) (*FileStore, error) {
	s, insecure, err := newFileStore(dir, opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: open: create seal directory: %w", err)
	}
	if s.lock, err = lockDir(filepath.Join(dir, lockName)); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	if insecure {
		s.log.Warn("store: the sealer offers no protection (simulation); stored state is not confidential", "dir", dir)
	}
	return s, nil
}

// newFileStore checks opts and returns a store for dir that has touched
// nothing yet, and whether one of its sealers is insecure.
func newFileStore(dir string, opts Options) (*FileStore, bool, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mode := opts.DefaultMode
	if mode == "" {
		mode = seal.ModeProductKey
	}
	if _, err := mode.Code(); err != nil {
		return nil, false, fmt.Errorf("store: open: default %w", err)
	}
	if !mode.Seals() {
		return nil, false, fmt.Errorf("store: open: the default seal mode cannot be %s", mode)
	}
	if opts.Sealers[mode] == nil {
		return nil, false, fmt.Errorf("store: open: no sealer for the default seal mode %s", mode)
	}
	sealers := make(map[seal.Mode]seal.Sealer, len(opts.Sealers))
	insecure := false
	for m, sl := range opts.Sealers {
		if _, err := m.Code(); err != nil || !m.Seals() || sl == nil {
			return nil, false, fmt.Errorf("store: open: a sealer for seal mode %q", m)
		}
		sealers[m] = sl
		insecure = insecure || sl.Insecure()
	}
	return &FileStore{
		dir:         dir,
		sealers:     sealers,
		defaultMode: mode,
		log:         logger,
		compactMin:  defaultCompactMin,
		mode:        mode,
	}, insecure, nil
}

func (s *FileStore) path(name string) string { return filepath.Join(s.dir, name) }

func (s *FileStore) at(point string) {
	if s.hook != nil {
		s.hook(point)
	}
}

// Load reads the snapshot, unseals its data key, replays the journal and
// returns a copy of the state. It never modifies files. A torn last journal
// record is left out (and cut off by the next write).
func (s *FileStore) Load(context.Context) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseClosed {
		return nil, fmt.Errorf("store: load: %w", ErrClosed)
	}
	s.forget()
	d, err := s.read(nil)
	if d.headerOK {
		s.gen, s.recovery, s.mode = d.header.generation, d.header.recovery, d.mode
	}
	switch {
	case err == nil:
		s.adopt(d)
		return cloneState(s.state), nil
	case errors.Is(err, ErrNoState):
		s.phase = phaseEmpty
	case errors.Is(err, ErrUnseal):
		s.phase = phaseSealed
	default:
		s.phase = phaseUnloaded
	}
	return nil, fmt.Errorf("store: load %s: %w", s.dir, err)
}

// Commit appends changes to the journal and fsyncs it. Commits that arrive
// while another is being written are merged into the next record.
func (s *FileStore) Commit(_ context.Context, changes map[string][]byte) error {
	req := &commitReq{changes: cloneChanges(changes)}
	s.qmu.Lock()
	s.queue = append(s.queue, req)
	s.qmu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	if req.done {
		return req.err
	}
	s.qmu.Lock()
	batch := s.queue
	s.queue = nil
	s.qmu.Unlock()
	err := s.commitBatch(batch)
	if err != nil {
		err = fmt.Errorf("store: commit: %w", err)
	}
	for _, r := range batch {
		r.done, r.err = true, err
	}
	return req.err
}

func (s *FileStore) commitBatch(batch []*commitReq) error {
	if err := s.phase.refuseCommit(); err != nil {
		return err
	}
	if s.broken != nil {
		return s.broken
	}
	changes := batch[0].changes
	if len(batch) > 1 {
		changes = make(map[string][]byte)
		for _, r := range batch {
			for k, v := range r.changes {
				changes[k] = v
			}
		}
	}
	if len(changes) == 0 {
		return nil
	}
	if s.phase == phaseEmpty {
		return s.create(changes)
	}
	if err := s.openJournal(); err != nil {
		return err
	}
	rec, err := encodeRecord(s.aead, s.gen, s.seq+1, encodeEntries(changes))
	if err != nil {
		return err
	}
	if s.jEnd+int64(len(rec)) > maxFileSize {
		return fmt.Errorf("record of %d bytes would grow the journal beyond %d bytes", len(rec), maxFileSize)
	}
	if _, err := s.journal.WriteAt(rec, s.jEnd); err != nil {
		return s.undoAppend(fmt.Errorf("append journal record: %w", err))
	}
	s.at("journal-appended")
	if err := s.journal.Sync(); err != nil {
		return s.undoAppend(fmt.Errorf("sync journal: %w", err))
	}
	s.jEnd += int64(len(rec))
	s.jSize = s.jEnd
	s.seq++
	applyChanges(s.state, changes)
	s.maybeCompact()
	return nil
}

// create writes the first generation of a store that had no state.
func (s *FileStore) create(changes map[string][]byte) error {
	key, err := newDataKey()
	if err != nil {
		return err
	}
	state := make(map[string][]byte, len(changes))
	applyChanges(state, changes)
	if err := s.writeGeneration(s.gen+1, key, s.defaultMode, nil, state); err != nil {
		return err
	}
	s.phase = phaseOpen
	return nil
}

// undoAppend cuts the journal back to its last valid record after a
// failed append, so that the stored state is the one before the commit.
// If that fails too, the store refuses further commits.
func (s *FileStore) undoAppend(cause error) error {
	terr := s.journal.Truncate(s.jEnd)
	if terr == nil {
		terr = s.journal.Sync()
	}
	if terr != nil {
		s.broken = fmt.Errorf("%w: %w (undo: %w)", ErrBroken, cause, terr)
		s.closeJournal()
		return s.broken
	}
	return cause
}

// openJournal makes s.journal the open journal of generation s.gen: it
// reopens the file Load read, cutting off a torn tail, or replaces a
// missing or stale journal with a new empty one.
func (s *FileStore) openJournal() error {
	if s.journal != nil {
		return nil
	}
	if s.jGen != s.gen {
		f, err := s.newJournal(s.gen)
		if err != nil {
			return err
		}
		s.journal, s.jGen, s.jEnd, s.jSize, s.seq = f, s.gen, journalHeaderSize, journalHeaderSize, 0
		return nil
	}
	f, err := os.OpenFile(s.path(journalName), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat journal: %w", err)
	}
	if fi.Size() != s.jSize {
		f.Close()
		s.broken = fmt.Errorf("%w: journal changed size from %d to %d bytes since it was read", ErrBroken, s.jSize, fi.Size())
		return s.broken
	}
	if s.jSize > s.jEnd {
		if err := f.Truncate(s.jEnd); err != nil {
			f.Close()
			return fmt.Errorf("cut torn journal tail: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			s.broken = fmt.Errorf("%w: sync journal after cutting its torn tail: %w", ErrBroken, err)
			return s.broken
		}
		s.log.Info("store: cut torn journal tail", "offset", s.jEnd, "bytes", s.jSize-s.jEnd)
		s.jSize = s.jEnd
	}
	s.journal = f
	return nil
}

// newJournal atomically replaces the journal with an empty one of
// generation and returns it open for writing.
func (s *FileStore) newJournal(generation uint64) (*os.File, error) {
	tmp := s.path(journalName + tempSuffix)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create journal: %w", err)
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	if _, err := f.Write(encodeJournalHeader(generation)); err != nil {
		return fail(fmt.Errorf("write journal header: %w", err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("sync new journal: %w", err))
	}
	s.at("journal-temp-synced")
	if err := os.Rename(tmp, s.path(journalName)); err != nil {
		return fail(fmt.Errorf("rename new journal into place: %w", err))
	}
	s.at("journal-renamed")
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("sync seal directory after new journal: %w", err)
	}
	return f, nil
}

// writeGeneration writes a snapshot of state as generation, its data key
// sealed in mode, then starts an empty journal for it.
//
// When the sealed key changes (a new data key or a new mode), sealed_key
// first gets the new entry beside the one of the snapshot on disk, then
// the snapshot is replaced, then sealed_key is cut down to the new entry
// (or removed, for Disabled). A crash at any point thus leaves a snapshot
// whose key is in sealed_key. The snapshot rename is the commit point: a
// crash before it leaves the previous generation, a crash after it leaves
// the new snapshot whose stale journal Load ignores. On success the store
// adopts the new generation; if the journal could not be created, the next
// Commit creates it, and if sealed_key could not be cut down, the next
// generation does it.
func (s *FileStore) writeGeneration(generation uint64, key []byte, mode seal.Mode, recovery []byte, state map[string][]byte) error {
	aead, err := newAEAD(key)
	if err != nil {
		return err
	}
	kc := keyCheckOf(key)
	var want *sealedEntry
	if mode.Seals() {
		if s.sealed != nil && s.sealed.mode == mode && s.sealed.keyCheck == kc {
			want = s.sealed
		} else {
			sealer := s.sealers[mode]
			if sealer == nil {
				return fmt.Errorf("seal data key: this Coordinator has no sealer for seal mode %s", mode)
			}
			code, err := mode.Code()
			if err != nil {
				return err
			}
			sealed, err := sealer.Seal(key, sealedKeyAAD(code, kc))
			if err != nil {
				return fmt.Errorf("seal data key in seal mode %s: %w", mode, err)
			}
			want = &sealedEntry{mode: mode, keyCheck: kc, sealed: sealed}
		}
	}
	h := snapshotHeader{version: snapshotVersion, generation: generation, keyCheck: kc, mode: mode, recovery: recovery}
	data, err := encodeSnapshot(h, aead, state)
	if err != nil {
		return err
	}
	if want != nil && !s.sealedKeyHolds(*want) {
		entries := []sealedEntry{*want}
		if s.phase == phaseOpen && s.sealed != nil && !s.sealed.same(*want) {
			entries = []sealedEntry{*s.sealed, *want}
		}
		if err := s.writeSealedKey(entries); err != nil {
			return err
		}
	}
	renamed, err := s.writeAtomic(snapshotName, data, "snapshot")
	if err != nil {
		if renamed {
			s.broken = fmt.Errorf("%w: %w", ErrBroken, err)
			s.closeJournal()
		}
		return err
	}
	s.closeJournal()
	s.gen, s.key, s.aead, s.header, s.state, s.snapSize = generation, key, aead, h, state, int64(len(data))
	s.recovery, s.mode, s.sealed = recovery, mode, want
	s.jGen, s.jEnd, s.jSize, s.seq = 0, 0, 0, 0
	s.trimSealedKey()
	f, err := s.newJournal(generation)
	if err != nil {
		s.log.Warn("store: could not start the new journal; the next commit retries", "generation", generation, "err", err)
		return nil
	}
	s.journal, s.jGen, s.jEnd, s.jSize = f, generation, journalHeaderSize, journalHeaderSize
	return nil
}

// sealedKeyHolds reports whether sealed_key is known to hold e.
func (s *FileStore) sealedKeyHolds(e sealedEntry) bool {
	if !s.skKnown {
		return false
	}
	for _, o := range s.skOnDisk {
		if o.same(e) {
			return true
		}
	}
	return false
}

// writeSealedKey atomically replaces sealed_key with entries.
func (s *FileStore) writeSealedKey(entries []sealedEntry) error {
	b, err := encodeSealedKey(entries)
	if err != nil {
		return err
	}
	renamed, err := s.writeAtomic(sealedKeyName, b, "sealedkey")
	if renamed || err == nil {
		s.skKnown, s.skOnDisk = err == nil, entries
	}
	return err
}

// trimSealedKey leaves in sealed_key only the entry of the open state, or
// removes the file when the state's mode is Disabled. A failure is logged:
// the extra entry opens nothing the snapshot on disk needs, and the next
// generation tries again.
func (s *FileStore) trimSealedKey() {
	if s.sealed != nil {
		if s.skKnown && len(s.skOnDisk) == 1 && s.skOnDisk[0].same(*s.sealed) {
			return
		}
		if err := s.writeSealedKey([]sealedEntry{*s.sealed}); err != nil {
			s.log.Warn("store: could not remove the previous data key from sealed_key; the next generation retries", "err", err)
		}
		return
	}
	if s.skKnown && s.skOnDisk == nil {
		return
	}
	err := os.Remove(s.path(sealedKeyName))
	if errors.Is(err, fs.ErrNotExist) {
		s.skKnown, s.skOnDisk = true, nil
		return
	}
	if err != nil {
		s.log.Warn("store: could not remove sealed_key (seal mode Disabled); the next generation retries", "err", err)
		s.skKnown = false
		return
	}
	s.at("sealedkey-removed")
	if err := syncDir(s.dir); err != nil {
		s.log.Warn("store: could not sync the seal directory after removing sealed_key", "err", err)
	}
	s.skKnown, s.skOnDisk = true, nil
}

// writeAtomic replaces the file name with data: temp file, fsync, rename,
// fsync of the directory. renamed reports whether the rename happened
// (after which an error leaves the outcome of a crash undetermined).
func (s *FileStore) writeAtomic(name string, data []byte, point string) (renamed bool, err error) {
	tmp := s.path(name + tempSuffix)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, fmt.Errorf("create %s: %w", name+tempSuffix, err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("write %s: %w", name+tempSuffix, werr)
	}
	s.at(point + "-temp-synced")
	if err := os.Rename(tmp, s.path(name)); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("rename %s into place: %w", name, err)
	}
	s.at(point + "-renamed")
	if err := syncDir(s.dir); err != nil {
		return true, fmt.Errorf("sync seal directory after writing %s: %w", name, err)
	}
	return true, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// maybeCompact folds the journal into a new snapshot once the journal is
// larger than both compactMin and the snapshot, which keeps the amortised
// cost of a commit proportional to its change. A failure leaves the store
// on the current generation, whose files are intact.
func (s *FileStore) maybeCompact() {
	if s.jEnd-journalHeaderSize <= max(s.compactMin, s.snapSize) {
		return
	}
	journalSize := s.jEnd
	if err := s.writeGeneration(s.gen+1, s.key, s.mode, s.recovery, s.state); err != nil {
		s.log.Warn("store: compaction failed", "generation", s.gen, "err", err)
		return
	}
	s.log.Info("store: compacted journal", "generation", s.gen, "journal_bytes", journalSize, "snapshot_bytes", s.snapSize)
}

// Reset stores state under a new data key, sealed in the default mode,
// as a new generation without recovery data; see ResetWith.
func (s *FileStore) Reset(ctx context.Context, state map[string][]byte) ([]byte, error) {
	return s.ResetWith(ctx, state, ResetOptions{})
}

// ResetWith stores state under a new data key, sealed in opts.Mode,
// together with the recovery data that opts.RecoveryData computes from
// that key, as one new generation. Nothing is written before the recovery
// data is known. Files that the store has not opened successfully are
// first moved aside into discarded-<UTC time>/. A crash after they were
// moved but before the new snapshot is in place leaves no state (Load
// reports ErrNoState); a crash between moving the snapshot and the
// journal leaves a journal without a snapshot (ErrUnseal), which the next
// Reset moves aside as well.
func (s *FileStore) ResetWith(_ context.Context, state map[string][]byte, opts ResetOptions) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseClosed {
		return nil, fmt.Errorf("store: reset: %w", ErrClosed)
	}
	mode, key, recovery, err := opts.prepare(s.defaultMode, s.sealers)
	if err != nil {
		return nil, err
	}
	if s.phase != phaseOpen {
		if err := s.discard(); err != nil {
			return nil, fmt.Errorf("store: reset: %w", err)
		}
	}
	s.broken = nil
	if err := s.writeGeneration(s.gen+1, key, mode, recovery, cloneState(state)); err != nil {
		return nil, fmt.Errorf("store: reset: %w", err)
	}
	s.phase = phaseOpen
	return cloneValue(key), nil
}

// discard moves the snapshot, the journal and sealed_key, if present, into
// a new discarded-<UTC time> directory. The snapshot goes first: a crash in
// between leaves a journal without a snapshot, which Load refuses, or a
// sealed_key without a snapshot, which is no state.
func (s *FileStore) discard() error {
	var present []string
	for _, name := range []string{snapshotName, journalName, sealedKeyName} {
		_, err := os.Lstat(s.path(name))
		switch {
		case err == nil:
			present = append(present, name)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("stat %s: %w", name, err)
		}
	}
	if len(present) == 0 {
		return nil
	}
	s.closeJournal()
	dst, err := s.makeDiscardDir()
	if err != nil {
		return err
	}
	for _, name := range present {
		if err := os.Rename(s.path(name), filepath.Join(dst, name)); err != nil {
			return fmt.Errorf("move %s aside: %w", name, err)
		}
		s.at("discard-" + name)
	}
	if err := syncDir(dst); err != nil {
		return fmt.Errorf("sync %s: %w", dst, err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("sync seal directory: %w", err)
	}
	s.log.Warn("store: moved stored state that could not be opened aside", "dir", dst)
	s.forget()
	return nil
}

func (s *FileStore) makeDiscardDir() (string, error) {
	base := s.path(discardedPrefix + time.Now().UTC().Format("20060102T150405Z"))
	for i := 1; i <= 1000; i++ {
		dst := base
		if i > 1 {
			dst += "-" + strconv.Itoa(i)
		}
		err := os.Mkdir(dst, 0o700)
		if err == nil {
			return dst, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("create %s: %w", dst, err)
		}
	}
	return "", fmt.Errorf("create %s: too many directories of that name", base)
}

// Unlock opens the stored state with a data key supplied by the owners,
// seals that key for this machine in the state's seal mode (nothing is
// sealed in Disabled) and writes the state as a new generation. A wrong key (ErrWrongDataKey) or unreadable files change
// nothing.
func (s *FileStore) Unlock(_ context.Context, dataKey []byte) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseClosed {
		return nil, fmt.Errorf("store: unlock: %w", ErrClosed)
	}
	if len(dataKey) != dataKeySize {
		return nil, fmt.Errorf("store: unlock: key is %d bytes, want %d: %w", len(dataKey), dataKeySize, ErrWrongDataKey)
	}
	d, err := s.read(dataKey)
	if err != nil {
		return nil, fmt.Errorf("store: unlock %s: %w", s.dir, err)
	}
	s.broken = nil
	s.gen, s.mode, s.sealed, s.skKnown = d.header.generation, d.mode, nil, false
	if err := s.writeGeneration(d.header.generation+1, d.key, d.mode, d.header.recovery, d.state); err != nil {
		return nil, fmt.Errorf("store: unlock: %w", err)
	}
	s.phase = phaseOpen
	s.log.Info("store: unlocked stored state and sealed its data key for this machine", "generation", s.gen)
	return cloneState(s.state), nil
}

// RecoveryData returns a copy of the unencrypted recovery data of the
// snapshot last read or written, nil if none. It is available after a Load
// that failed to unseal, as long as the snapshot header was readable.
func (s *FileStore) RecoveryData() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneValue(s.recovery)
}

// SetRecoveryData stores data (at most 1 MiB) unencrypted beside the
// state, by writing a new generation. Reset clears it.
func (s *FileStore) SetRecoveryData(_ context.Context, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase != phaseOpen {
		if err := s.phase.refuseCommit(); err != nil {
			return fmt.Errorf("store: set recovery data: %w", err)
		}
		return fmt.Errorf("store: set recovery data: %w", ErrNotOpen)
	}
	if s.broken != nil {
		return fmt.Errorf("store: set recovery data: %w", s.broken)
	}
	if len(data) > maxRecoveryDataSize {
		return fmt.Errorf("store: set recovery data: %d bytes exceeds the limit %d", len(data), maxRecoveryDataSize)
	}
	if err := s.writeGeneration(s.gen+1, s.key, s.mode, cloneValue(data), s.state); err != nil {
		return fmt.Errorf("store: set recovery data: %w", err)
	}
	return nil
}

// CanSeal reports whether the store has a sealer for mode; the sealers
// are fixed when the store is opened.
func (s *FileStore) CanSeal(mode seal.Mode) bool {
	return !mode.Seals() || s.sealers[mode] != nil
}

// SealMode returns the seal mode of the snapshot last read or written,
// the default mode before there is one.
func (s *FileStore) SealMode() seal.Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

// SetSealMode seals the data key of the open state in mode by writing a
// new generation: sealed_key gets the key sealed in mode, or is removed
// for Disabled. It also rewrites a snapshot of the legacy format. When
// nothing would change it writes nothing.
func (s *FileStore) SetSealMode(_ context.Context, mode seal.Mode) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := mode.Code(); err != nil {
		return fmt.Errorf("store: set seal mode: %w", err)
	}
	if s.phase != phaseOpen {
		if err := s.phase.refuseCommit(); err != nil {
			return fmt.Errorf("store: set seal mode: %w", err)
		}
		return fmt.Errorf("store: set seal mode: %w", ErrNotOpen)
	}
	if s.broken != nil {
		return fmt.Errorf("store: set seal mode: %w", s.broken)
	}
	current := s.header.version == snapshotVersion && s.mode == mode && (s.sealed != nil) == mode.Seals()
	if current {
		return nil
	}
	from := s.mode
	if err := s.writeGeneration(s.gen+1, s.key, mode, s.recovery, s.state); err != nil {
		return fmt.Errorf("store: set seal mode %s: %w", mode, err)
	}
	s.log.Info("store: sealed the data key in a new seal mode", "from", string(from), "to", string(mode), "generation", s.gen)
	return nil
}

// Close releases the journal and the directory lock. Later calls fail
// with ErrClosed.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseClosed {
		return nil
	}
	s.closeJournal()
	s.forget()
	s.phase = phaseClosed
	if err := s.lock.Close(); err != nil {
		return fmt.Errorf("store: close: release lock: %w", err)
	}
	return nil
}

func (s *FileStore) closeJournal() {
	if s.journal != nil {
		s.journal.Close()
		s.journal = nil
	}
}

// forget drops everything known about the files.
func (s *FileStore) forget() {
	s.closeJournal()
	s.phase = phaseUnloaded
	s.broken = nil
	s.gen, s.key, s.aead, s.header, s.state, s.snapSize = 0, nil, nil, snapshotHeader{}, nil, 0
	s.jGen, s.jEnd, s.jSize, s.seq = 0, 0, 0, 0
	s.recovery, s.mode, s.sealed, s.skKnown, s.skOnDisk = nil, s.defaultMode, nil, false, nil
}

// adopt makes a successfully read state the open one.
func (s *FileStore) adopt(d diskState) {
	s.phase = phaseOpen
	s.gen, s.key, s.aead, s.header, s.state, s.snapSize = d.header.generation, d.key, d.aead, d.header, d.state, d.snapSize
	s.jGen, s.jEnd, s.jSize, s.seq = d.jGen, d.jEnd, d.jSize, d.seq
	s.recovery, s.mode, s.sealed, s.skKnown, s.skOnDisk = d.header.recovery, d.mode, d.sealed, d.skKnown, d.skOnDisk
}

// diskState is what read found.
type diskState struct {
	headerOK bool // header is valid even if err != nil
	header   snapshotHeader
	mode     seal.Mode    // the state's seal mode (the default one for a legacy snapshot)
	sealed   *sealedEntry // the sealed_key entry that opened the state
	skKnown  bool
	skOnDisk []sealedEntry
	key      []byte
	aead     cipher.AEAD
	state    map[string][]byte
	snapSize int64
	jGen     uint64 // generation of a usable journal, 0 if none
	jEnd     int64
	jSize    int64
	seq      uint64
}

// read loads snapshot and journal without modifying anything. With a nil
// dataKey the key is unsealed from the snapshot; otherwise dataKey is used
// and must match the snapshot's key check.
func (s *FileStore) read(dataKey []byte) (diskState, error) {
	var d diskState
	snap, err := readBounded(s.path(snapshotName))
	if errors.Is(err, fs.ErrNotExist) {
		_, jerr := os.Lstat(s.path(journalName))
		switch {
		case jerr == nil:
			return d, corrupt("journal present without snapshot %s", snapshotName)
		case !errors.Is(jerr, fs.ErrNotExist):
			return d, fmt.Errorf("stat journal: %w", jerr)
		}
		return d, ErrNoState
	}
	if errors.Is(err, errTooLarge) {
		return d, corrupt("%s: %v", snapshotName, err)
	}
	if err != nil {
		return d, err
	}
	h, aad, sealed, err := parseSnapshot(snap)
	if err != nil {
		return d, corrupt("%v", err)
	}
	d.headerOK, d.header, d.snapSize, d.mode = true, h, int64(len(snap)), h.mode
	if h.version == legacySnapshotVersion {
		d.mode = s.defaultMode
	}
	switch {
	case dataKey != nil:
		if keyCheckOf(dataKey) != h.keyCheck {
			return d, ErrWrongDataKey
		}
		d.key = cloneValue(dataKey)
	case h.version == legacySnapshotVersion:
		key, err := s.sealers[d.mode].Unseal(h.legacySealedKey, legacySealAAD(h.keyCheck))
		if err != nil {
			return d, fmt.Errorf("%w: unseal data key: %w", ErrUnseal, err)
		}
		if len(key) != dataKeySize || keyCheckOf(key) != h.keyCheck {
			return d, corrupt("unsealed data key does not match the snapshot's key check")
		}
		d.key = key
	default:
		if d.key, err = s.unsealKey(&d); err != nil {
			return d, err
		}
	}
	if d.aead, err = newAEAD(d.key); err != nil {
		return d, err
	}
	if d.state, err = openSnapshot(d.aead, aad, sealed); err != nil {
		return d, corrupt("%v", err)
	}
	return d, s.readJournal(&d)
}

// unsealKey finds the data key of the version 2 snapshot in d in
// sealed_key and unseals it. Every failure wraps ErrUnseal: a missing,
// unreadable, damaged or foreign sealed_key puts the Coordinator into
// recovery.
func (s *FileStore) unsealKey(d *diskState) ([]byte, error) {
	h := d.header
	if !h.mode.Seals() {
		return nil, fmt.Errorf("%w: the state's seal mode is %s, so its data key is not kept across restarts: recover it with the owners' recovery keys", ErrUnseal, h.mode)
	}
	b, err := readBoundedSize(s.path(sealedKeyName), maxSealedKeyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s is missing (seal mode %s): recover the state with the owners' recovery keys", ErrUnseal, sealedKeyName, h.mode)
	case err != nil:
		return nil, fmt.Errorf("%w: read %s: %w", ErrUnseal, sealedKeyName, err)
	}
	entries, err := parseSealedKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is damaged: %w", ErrUnseal, sealedKeyName, err)
	}
	d.skKnown, d.skOnDisk = true, entries
	var found *sealedEntry
	otherMode := false
	for i := range entries {
		if entries[i].keyCheck == h.keyCheck {
			if entries[i].mode == h.mode {
				found = &entries[i]
			} else {
				otherMode = true
			}
		}
	}
	switch {
	case found == nil && otherMode:
		return nil, fmt.Errorf("%w: %s seals this state's data key in another seal mode than the state's %s", ErrUnseal, sealedKeyName, h.mode)
	case found == nil:
		return nil, fmt.Errorf("%w: %s holds no data key of this state (it belongs to another deployment or state)", ErrUnseal, sealedKeyName)
	}
	sealer := s.sealers[h.mode]
	if sealer == nil {
		return nil, fmt.Errorf("%w: the state is sealed in seal mode %s, for which this Coordinator has no sealer", ErrUnseal, h.mode)
	}
	code, _ := h.mode.Code()
	key, err := sealer.Unseal(found.sealed, sealedKeyAAD(code, h.keyCheck))
	if err != nil {
		return nil, fmt.Errorf("%w: unseal data key from %s (seal mode %s): %w", ErrUnseal, sealedKeyName, h.mode, err)
	}
	if len(key) != dataKeySize || keyCheckOf(key) != h.keyCheck {
		return nil, fmt.Errorf("%w: the data key unsealed from %s does not match the snapshot's key check", ErrUnseal, sealedKeyName)
	}
	e := *found
	e.sealed = bytes.Clone(e.sealed)
	d.sealed = &e
	return key, nil
}

// readJournal replays the journal belonging to d's snapshot into d.state.
func (s *FileStore) readJournal(d *diskState) error {
	j, err := readBounded(s.path(journalName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.Is(err, errTooLarge):
		return corrupt("%s: %v", journalName, err)
	case err != nil:
		return err
	case len(j) < journalHeaderSize:
		s.log.Info("store: journal shorter than its header; treating it as empty", "bytes", len(j))
		return nil
	}
	gen, err := parseJournalHeader(j)
	switch {
	case err != nil:
		return corrupt("%v", err)
	case gen < d.header.generation:
		s.log.Info("store: ignoring journal of an older generation", "journal", gen, "snapshot", d.header.generation)
		return nil
	case gen > d.header.generation:
		return corrupt("journal generation %d is newer than snapshot generation %d (was the snapshot replaced?)", gen, d.header.generation)
	}
	r, err := replayJournal(j, gen, d.aead, d.state)
	if err != nil {
		return err
	}
	if r.end < len(j) {
		s.log.Info("store: ignoring torn journal tail", "offset", r.end, "bytes", len(j)-r.end)
	}
	d.jGen, d.jEnd, d.jSize, d.seq = gen, int64(r.end), int64(len(j)), r.records
	return nil
}

var errTooLarge = errors.New("file exceeds the size limit")

// readBounded reads a whole file of at most maxFileSize bytes.
func readBounded(path string) ([]byte, error) {
	return readBoundedSize(path, maxFileSize)
}

// readBoundedSize reads a whole file of at most limit bytes.
func readBoundedSize(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%d bytes: %w", fi.Size(), errTooLarge)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errTooLarge
	}
	return b, nil
}
