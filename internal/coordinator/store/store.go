// Package store persists the Coordinator's state: a map of string keys to
// byte values, encrypted under a data key that is itself sealed.
//
// The Coordinator keeps its working state in memory and hands the store
// only what changed, so a commit costs in proportion to the change, not to
// the whole state.
//
// Two implementations: Memory for tests, and FileStore, the default, kept
// in the seal directory.
//
// # FileStore layout
//
// The directory holds a snapshot of the whole state, a journal of changes
// made since, and a lock file:
//
//	sealed_data   snapshot of generation G
//	journal       changes made since snapshot G, one record per write
//	lock          flock'd for the store's lifetime: one Coordinator only
//	discarded-<UTC time>/   files Reset moved aside because they could
//	                        not be opened (never deleted by the store)
//
// All integers are little-endian. The snapshot is
//
//	magic "mmstate\0" (8) | version u16 = 1 | flags u16 = 0 |
//	key check (16) | generation u64 |
//	len u32 | sealed data key | len u32 | recovery data (plaintext) |
//	nonce (12) | AES-256-GCM(data key, state, AAD = every byte before the nonce)
//
// where the sealed data key is Sealer.Seal(data key, AAD = the first 28
// bytes: magic, version, flags, key check), and the key check is the first
// 16 bytes of HMAC-SHA256(data key, "marblemesh/store/key-check/v1"). The
// key check names the data key without revealing it, so Unlock can tell a
// wrong key from damaged data, and the sealed key stays valid across
// generations that keep the same data key. The state is encoded as
//
//	count u32, then per entry: op u8 (1 put, 0 delete) | len u32 | key |
//	len u32 | value (put only)
//
// in key order (a snapshot holds puts only). The journal is
//
//	magic "mmjrnl\0\0" (8) | version u16 = 1 | flags u16 = 0 | generation u64
//
// followed by records
//
//	len u32 | sequence u64 | CRC-32C(len ‖ sequence) u32 | nonce (12) |
//	AES-256-GCM(data key, changes, AAD = journal magic ‖ generation ‖ sequence)
//
// numbered 1, 2, … in file order. The sequence number is authenticated
// (it is in the AAD) and must be the expected one, so records cannot be
// reordered, repeated, dropped in the middle or moved to another
// generation. The CRC guards only the record header, so that a damaged
// header is recognised as such instead of being taken for a partial write.
//
// # Writes and crashes
//
// Commit appends one record with a single write and fsyncs the journal
// before returning; concurrent Commits that queue up behind a write are
// merged into the next record, so they share one fsync. A failed append is
// cut back off the file. Load applies the journal only if its generation
// equals the snapshot's: an older journal is stale (left over from a crash
// in the middle of switching generations) and ignored, a newer one means
// the snapshot was replaced, which is refused.
//
// A crash during an append leaves at most one partial record at the end.
// A record that fails its checks is a torn tail, ignored by Load and cut off
// by the next Commit, unless a record that authenticates under the sequence
// number it claims starts at or after it anywhere in the file: that is
// corruption. Dropping the last record is
// therefore indistinguishable from a crash before it was acknowledged; an
// attacker who can write the files can do that anyway, by truncating.
//
// Snapshots are written as a new generation (temp file, fsync, rename,
// fsync of the directory), then an empty journal for that generation is
// written the same way. The snapshot rename is the commit point; a crash
// after it leaves the new snapshot with the old, now stale journal, which
// loads correctly, and the next Commit replaces the journal. New
// generations are written by Reset (new random data key), Unlock (key
// resealed for this machine, journal folded in), SetRecoveryData, and
// compaction: once the journal exceeds max(1 MiB, snapshot size) after a
// commit, the state is rewritten as a snapshot, which keeps the amortised
// cost of a commit proportional to its size.
//
// Load never writes. It fails with an error wrapping ErrUnseal (and
// ErrCorrupt, for damaged or malformed files) whenever the data cannot be
// authenticated, so the Coordinator enters recovery with the files
// untouched; I/O errors are returned as they are. Length fields are
// checked against limits and the bytes present before anything is
// allocated for them.
//
// The sealed data key is the only protection of the state: with
// seal.SimulationSealer the state is readable by anyone who can read the
// directory.
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
	// RecoveryData returns a copy of the unencrypted recovery data stored
	// beside the state, nil if none. It is readable after a Load that
	// could not unseal the state, so that recovery can be prepared.
	RecoveryData() []byte
	// SetRecoveryData durably replaces the recovery data of the open
	// state; Reset clears it. The data is stored unencrypted but is
	// authenticated together with the state.
	SetRecoveryData(data []byte) error
	// Close releases resources.
	Close() error
}
