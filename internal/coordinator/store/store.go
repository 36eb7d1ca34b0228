// Package store persists the Coordinator's state: a map of string keys to
// byte values, encrypted under a data key that is itself sealed.
//
// The Coordinator keeps its working state in memory and hands the store
// only what changed, so a commit costs in proportion to the change, not to
// the whole state.
package store

import "errors"

// ErrNoState is returned by Load when no state has been stored yet.
var ErrNoState = errors.New("no stored state")

// ErrUnseal is wrapped by Load when stored state exists but cannot be
// opened: the sealed data key cannot be unsealed on this machine, or the
// data fails its integrity check. The Coordinator then enters recovery.
var ErrUnseal = errors.New("stored state cannot be unsealed")

// Store is the Coordinator's persistence.
type Store interface {
	// Load opens the stored state and returns all of it. It returns
	// ErrNoState if there is none, and an error wrapping ErrUnseal if there
	// is some that cannot be opened; stored files are never modified by a
	// failed Load.
	Load() (map[string][]byte, error)
	// Commit durably applies changes: a nil value deletes its key. When
	// Commit returns nil the change survives a crash; when it returns an
	// error the stored state is the one before the call.
	Commit(changes map[string][]byte) error
	// Reset replaces everything stored with state, encrypted under a new
	// random data key which it returns. Earlier stored data that could not
	// be opened is kept aside, never deleted.
	Reset(state map[string][]byte) (dataKey []byte, err error)
	// Unlock opens state that Load could not unseal, using a data key
	// supplied by the owners (recovery), seals that key for this machine
	// and returns the state.
	Unlock(dataKey []byte) (map[string][]byte, error)
	// Close releases resources.
	Close() error
}
