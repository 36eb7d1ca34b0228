package store

import "errors"

// Errors of this package besides ErrNoState and ErrUnseal. Returned errors
// wrap them with context; test with errors.Is.
var (
	// ErrNotOpen is returned by Commit and SetRecoveryData when the store
	// holds no open state: Load was not called, failed, or found state it
	// could not unseal (then the error also wraps ErrUnseal).
	ErrNotOpen = errors.New("no open state: call Load, Unlock or Reset first")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("store is closed")
	// ErrLocked is returned by OpenFile when another process (or another
	// FileStore in this process) uses the same directory.
	ErrLocked = errors.New("seal directory is in use by another Coordinator")
	// ErrCorrupt is wrapped, together with ErrUnseal, when stored files fail
	// their integrity checks or are malformed.
	ErrCorrupt = errors.New("stored state is corrupt")
	// ErrWrongDataKey is returned by Unlock when the supplied data key is
	// not the one the stored state is encrypted with.
	ErrWrongDataKey = errors.New("data key does not match the stored state")
	// ErrBroken is returned by Commit after a failed write whose effect on
	// disk could not be undone or confirmed; Load, Unlock or Reset clear it.
	ErrBroken = errors.New("an earlier write failed and could not be undone")
)

// Errors of the stores that share their state with other Coordinators.
var (
	// ErrConflict is returned by a write that lost a race: another writer
	// changed the stored state since this store last read or wrote it.
	// Nothing of the write is stored; Load, check and retry.
	ErrConflict = errors.New("the stored state was changed by another writer")
	// ErrUnavailable is wrapped by a write that failed because the
	// Kubernetes API could not be reached or could not serve it for now,
	// before any of it took effect: nothing was stored; retry later.
	ErrUnavailable = errors.New("the Kubernetes API is unavailable")
	// ErrRollback is returned by Load when the stored state is older than
	// state this store has already read or written: it was rolled back.
	ErrRollback = errors.New("the stored state is older than state seen before")
	// ErrNewerFormat is returned by Load when the state's head was
	// written by a newer Coordinator, in a format this build does not
	// read. It is neither damage nor a sealing failure: nothing is
	// changed, and a Coordinator of that newer build reads the state.
	ErrNewerFormat = errors.New("the stored state was written by a newer Coordinator")
	// ErrKEKMapFull is returned by a write that needs a new entry in the
	// key-encryption key map when the map holds its limit of entries.
	ErrKEKMapFull = errors.New("the key-encryption key map is full")
)
