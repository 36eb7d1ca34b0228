package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// importAttempts bounds how often Import tries to create the head while
// other stores import at once; importRetryWait is the pause after finding
// a chunk another importer wrote.
const (
	importAttempts  = 20
	importRetryWait = 100 * time.Millisecond
)

// ErrImportConflict is returned by KubeStore.Import when the shared state
// already exists under another data key than the imported one.
var ErrImportConflict = errors.New("the shared state already exists under another data key")

// KeyCheck names a data key without revealing it: the first 16 bytes of
// HMAC-SHA256(data key, "marblemesh/store/key-check/v1").
type KeyCheck [keyCheckSize]byte

// String returns the key check in hex.
func (k KeyCheck) String() string { return hex.EncodeToString(k[:]) }

// ImportOptions are the parts of a stored state that KubeStore.Import
// writes, as ExportFile returns them.
type ImportOptions struct {
	// State is the whole state.
	State map[string][]byte
	// DataKey is the key the state is encrypted with (32 bytes). It is
	// secret: never log it.
	DataKey []byte
	// Mode is the state's seal mode.
	Mode seal.Mode
	// RecoveryData is the state's recovery data (at most 1 MiB), nil if
	// none.
	RecoveryData []byte
}

// FileKeyCheck returns the key check of the state stored in the FileStore
// directory dir, read from its snapshot without unsealing, creating or
// writing anything. It returns ErrNoState if dir holds no state.
func FileKeyCheck(dir string) (KeyCheck, error) {
	snap, err := readBounded(filepath.Join(dir, snapshotName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return KeyCheck{}, fmt.Errorf("store: %s: %w", dir, ErrNoState)
	case errors.Is(err, errTooLarge):
		return KeyCheck{}, fmt.Errorf("store: %s: %w", dir, corrupt("%s: %v", snapshotName, err))
	case err != nil:
		return KeyCheck{}, fmt.Errorf("store: %s: %w", dir, err)
	}
	h, _, _, err := parseSnapshot(snap)
	if err != nil {
		return KeyCheck{}, fmt.Errorf("store: %s: %w", dir, corrupt("%v", err))
	}
	return h.keyCheck, nil
}

// ExportFile opens the state stored in the FileStore directory dir, with
// the sealers and default mode of opts, and returns it with its data key,
// seal mode and recovery data. It creates, locks exclusively and writes
// nothing, so dir may be mounted read-only; it holds a shared lock on the
// directory's lock file (if there is one) while it reads, and fails with
// ErrLocked while a Coordinator has the directory open. Like Load it
// returns ErrNoState when there is no state and an error wrapping
// ErrUnseal when the data key cannot be unsealed here.
func ExportFile(dir string, opts Options) (ImportOptions, error) {
	s, _, err := newFileStore(dir, opts)
	if err != nil {
		return ImportOptions{}, err
	}
	lock, err := lockDirShared(filepath.Join(dir, lockName))
	if err != nil {
		return ImportOptions{}, fmt.Errorf("store: export %s: %w", dir, err)
	}
	if lock != nil {
		defer lock.Close()
	}
	d, err := s.read(nil)
	if err != nil {
		return ImportOptions{}, fmt.Errorf("store: export %s: %w", dir, err)
	}
	return ImportOptions{State: d.state, DataKey: d.key, Mode: d.mode, RecoveryData: cloneValue(d.header.recovery)}, nil
}

// HeadKeyCheck reads the head and returns its key check without opening
// anything; ok is false when there is no head.
func (s *KubeStore) HeadKeyCheck(ctx context.Context) (kc KeyCheck, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseClosed {
		return KeyCheck{}, false, fmt.Errorf("store: read the key check: %w", ErrClosed)
	}
	if err := s.reread(ctx); err != nil {
		return KeyCheck{}, false, fmt.Errorf("store: read the key check of %s/%s: %w", s.ns, s.name, err)
	}
	if !s.exists {
		return KeyCheck{}, false, nil
	}
	if !s.headOK {
		return KeyCheck{}, false, fmt.Errorf("store: read the key check of %s/%s: %w", s.ns, s.name, corrupt("the head cannot be parsed"))
	}
	return s.head.keyCheck, true, nil
}

// Import writes opts as the first generation of the shared state, with
// opts' data key (under a new key-encryption key sealed for this
// platform), seal mode and recovery data, if there is no state yet; the
// head's creation is the compare-and-swap point, so of several stores
// importing at once exactly one writes. It returns true when this store
// wrote the state, which it then has open. When the state exists already
// it does not write it: if that state has opts' data key (the import was
// done before, here or by another store) it opens it with that key, as
// Load does (sealing its key-encryption key for this platform if the KEK
// map lacks it), and returns false; otherwise it returns an error
// wrapping ErrImportConflict and leaves the store unloaded.
func (s *KubeStore) Import(ctx context.Context, opts ImportOptions) (bool, error) {
	if len(opts.DataKey) != dataKeySize {
		return false, fmt.Errorf("store: import: the data key is %d bytes, want %d", len(opts.DataKey), dataKeySize)
	}
	if _, err := opts.Mode.Code(); err != nil {
		return false, fmt.Errorf("store: import: %w", err)
	}
	if !s.CanSeal(opts.Mode) {
		return false, fmt.Errorf("store: import: this Coordinator has no sealer for seal mode %s", opts.Mode)
	}
	if len(opts.RecoveryData) > maxRecoveryDataSize {
		return false, fmt.Errorf("store: import: recovery data of %d bytes exceeds the limit %d", len(opts.RecoveryData), maxRecoveryDataSize)
	}
	key := cloneValue(opts.DataKey)
	state := cloneState(opts.State)
	recovery := cloneValue(opts.RecoveryData)
	want := KeyCheck(keyCheckOf(key))

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseClosed {
		return false, fmt.Errorf("store: import: %w", ErrClosed)
	}
	for attempt := 1; ; attempt++ {
		s.forget()
		if err := s.reread(ctx); err != nil {
			return false, fmt.Errorf("store: import: %w", err)
		}
		if s.exists {
			break
		}
		err := s.writeState(ctx, key, opts.Mode, recovery, state, false, true)
		switch {
		case err == nil:
			s.phase = phaseOpen
			s.log.Info("store: imported state as the first generation", "namespace", s.ns, "state", s.name, "generation", s.head.generation, "keyCheck", want.String())
			return true, nil
		case attempt >= importAttempts:
			s.forget()
			return false, fmt.Errorf("store: import: %w", err)
		case errors.Is(err, ErrConflict):
			// Another store created the head first: see what it wrote.
		case apierrors.IsAlreadyExists(err):
			// Another store is writing the same chunks (the recovery
			// data is stored as it is): wait for its head.
			select {
			case <-ctx.Done():
				s.forget()
				return false, fmt.Errorf("store: import: %w", ctx.Err())
			case <-time.After(importRetryWait):
			}
		default:
			s.forget()
			return false, fmt.Errorf("store: import: %w", err)
		}
	}
	switch {
	case !s.headOK:
		s.forget()
		return false, fmt.Errorf("store: import: %w: %s/%s exists but cannot be parsed", ErrImportConflict, s.ns, s.name)
	case KeyCheck(s.head.keyCheck) != want:
		s.forget()
		return false, fmt.Errorf("store: import: %w: %s/%s has key check %s, the imported state %s", ErrImportConflict, s.ns, s.name, KeyCheck(s.head.keyCheck), want)
	}
	// The state is this one: open it with its data key, which also seals
	// its key-encryption key for this platform again if a concurrent
	// import replaced this platform's entry of the KEK map.
	if _, err := s.load(ctx, readKeys{hintKey: key}, "import"); err != nil {
		return false, err
	}
	return false, nil
}
