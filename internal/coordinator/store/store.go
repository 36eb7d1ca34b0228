// Package store persists the Coordinator's state: a map of string keys to
// byte values, encrypted under a data key that is itself sealed.
//
// The Coordinator keeps its working state in memory and hands the store
// only what changed, so a commit costs in proportion to the change, not to
// the whole state.
//
// Three implementations: Memory for tests; FileStore, the default, kept
// in the seal directory; and KubeStore, kept in Secrets through the
// Kubernetes API, which several Coordinators can share.
//
// # FileStore layout
//
// The directory holds a snapshot of the whole state, a journal of changes
// made since, the sealed data key, and a lock file:
//
//	sealed_data   snapshot of generation G
//	sealed_key    the data key sealed for this machine (MarbleRun's name);
//	              absent in seal mode Disabled
//	journal       changes made since snapshot G, one record per write
//	lock          flock'd for the store's lifetime: one Coordinator only
//	discarded-<UTC time>/   files Reset moved aside because they could
//	                        not be opened (never deleted by the store)
//
// All integers are little-endian. The snapshot is
//
//	magic "mmstate\0" (8) | version u16 = 2 | flags u16 = 0 |
//	key check (16) | generation u64 | seal mode u8 |
//	len u32 | recovery data (plaintext) |
//	nonce (12) | AES-256-GCM(data key, state, AAD = every byte before the nonce)
//
// with seal mode 1 ProductKey, 2 UniqueKey, 3 Disabled, and sealed_key is
//
//	magic "mmsealky" (8) | version u16 = 1 | count u16 (1 or 2) |
//	per entry: seal mode u8 | key check (16) | len u32 |
//	Sealer.Seal(data key, AAD = magic ‖ version ‖ seal mode ‖ key check)
//
// The key check is the first 16 bytes of HMAC-SHA256(data key,
// "marblemesh/store/key-check/v1"). It names the data key without
// revealing it, so Unlock can tell a wrong key from damaged data, a
// sealed_key of another deployment is recognised as such, and a sealed
// key stays valid across generations that keep the same data key. Load
// takes the entry whose key check and seal mode are the snapshot's and
// unseals it with the sealer of that mode (Gramine's _sgx_mrsigner or
// _sgx_mrenclave key), whatever mode the Coordinator would choose today.
// A missing, unreadable, damaged or foreign sealed_key, or seal mode
// Disabled, makes Load fail with ErrUnseal: the Coordinator enters
// recovery with every file untouched. Removing sealed_key is therefore how
// a recovery is rehearsed.
//
// Version 1 snapshots, written before sealed_key existed, are still read:
// they hold "len u32 | sealed data key" in place of the seal mode, sealed
// with AAD = the first 28 bytes (magic, version 1, flags, key check) by the
// sealer of the store's default mode. The next generation written is
// version 2 with its sealed_key.
//
// The state is encoded as
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
// loads correctly, and the next Commit replaces the journal. When a
// generation changes the sealed key (a new data key or a new seal mode),
// sealed_key is first rewritten (the same way) to hold the new entry
// beside the one of the snapshot on disk, then the snapshot is replaced,
// then sealed_key is cut down to the new entry, or removed for Disabled.
// At every point of a crash, the snapshot on disk thus finds its key in
// sealed_key (or is in Disabled, which needs recovery anyway): a new data
// key is only adopted together with its sealed key. New generations are
// written by Reset and ResetWith (new random data key; ResetWith stores the
// recovery data computed from it in the same generation), Unlock (key
// resealed for this machine, journal folded in), SetSealMode,
// SetRecoveryData, and compaction: once the journal exceeds max(1 MiB, snapshot size) after a
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
// # KubeStore layout
//
// The state's objects are Secrets in the Coordinator's namespace, and one
// ConfigMap, all labelled app.kubernetes.io/managed-by=marblemesh,
// marblemesh.io/state=<name> and marblemesh.io/object=head, chunk,
// discarded or kek-map:
//
//	<name>                      the head (default marblerun-state), data "head"
//	<name>-<gen>-<sha>-<i>      immutable chunks, data "chunk" (at most
//	                            512 KiB), labelled marblemesh.io/generation=<gen>:
//	                            the generation of the head written to list them
//	<name>-<gen>-<random>-p     immutable packed chunks, labelled the same way,
//	                            data "segment-<id>" per delta moved out of the head
//	<name>-discarded-<time>     a head that Reset replaced without opening it
//	<KEK map>                   ConfigMap (default marblerun-sealed-kek): the
//	                            key-encryption key sealed for each platform
//
// The head is
//
//	magic "mmkhead\0" (8) | version u16 = 3 | flags u16 = 0 |
//	key check (16) | generation u64 | seal mode u8 |
//	KEK check (16) | wrapped data key (60) | wrapped KEK (60) |
//	recovery data size u32 | chunk list of the recovery data |
//	count u16 | per segment: kind u8 (1 base, 2 delta) | id u64 | place u8 |
//	    place 1: chunk list | place 2: len u32 | sealed segment |
//	    place 3: one chunk |
//	nonce (12) | AES-256-GCM tag (data key, empty plaintext,
//	             AAD = "mmkhead\0" ‖ len u16 ‖ name ‖ every byte before the nonce)
//
// with chunk = len u8 | name | size u32 | SHA-256 of its data, and chunk
// list = count u16, then per chunk: chunk. The first segment is the base
// (the whole state when it was written), each further one a delta (the
// changes of one commit); applied in order they give the state. A segment
// is nonce (12) ‖ AES-256-GCM(data key, encoded entries, AAD =
// "mmkseg\0\0" ‖ len u16 ‖ name ‖ key check ‖ kind ‖ id), wherever it is
// kept: cut into chunks (place 1, data "chunk" of each), in the head
// itself (place 2, deltas only), or under data "segment-<id>" of one
// packed chunk (place 3, deltas only, at most 4 KiB: moved there from the
// head). A segment kept in the head is authenticated twice, by its own
// AAD and by the head's tag. Recovery data is stored unencrypted, like
// the file store's. The head lists at most 256 segments and 1024 chunks
// (a packed segment counts as one), keeps at most 64 KiB of segments of
// at most 4 KiB each, and is at most 768 KiB; sizes are checked against
// these limits and against the head's list before anything is decoded.
// Version 2 heads, written before segments could be kept in the head,
// hold "kind u8 | id u64 | chunk list" per segment; they are still read,
// and the next write stores version 3 under the same key-encryption key.
//
// # Key-encryption key
//
// The data key is not sealed in the head: it is wrapped (nonce (12) ‖
// AES-256-GCM) under a random 32-byte key-encryption key (KEK), and the
// KEK is wrapped the same way under the data key, both with AAD =
// "mmkwrap\0" ‖ kind u8 (1 data key, 2 KEK) ‖ len u16 ‖ name ‖ key check ‖
// KEK check. The KEK check is the first 16 bytes of HMAC-SHA256(KEK,
// "marblemesh/store/kek-check/v1"): it names the KEK without revealing it.
// Wrapping the KEK under the data key reveals nothing to whoever has the
// data key, and lets a Coordinator that has the state open follow a change
// of KEK made by another.
//
// Each platform keeps the KEK sealed with its own sealer in the KEK map,
// whose binaryData holds one entry per sealing identity and KEK: the key
// is "<hex of seal.Sealer.ID>.<hex of the first 8 bytes of the KEK
// check>" (the ID is derived from an SGX seal key, so one per node and
// seal mode; all zeros for the simulation sealer, which every replica
// shares), the value
//
//	magic "mmkekrec" (8) | version u16 = 1 | seal mode u8 | KEK check (16) |
//	len u16 | Sealer.Seal(KEK, AAD = magic ‖ version ‖ KEK check ‖
//	                     seal mode ‖ len u16 ‖ name)
//
// The map holds at most 256 entries of at most 541 bytes each, checked
// before any entry is decoded. A write that needs a new entry in a full
// map first removes the entries that cannot be read and those of keys
// other than the new one and the one of the head in force (leftovers of
// crashed or failed clean-ups); if the map is still full it fails with
// ErrKEKMapFull. Entries are changed by compare-and-swap
// on the map's resourceVersion (at most 8 attempts). Writers never replace
// each other's entries, even of one identity: a Coordinator adds its own
// entry for a new KEK before writing the head; if the head write loses
// the race it removes that entry (best effort: a leftover opens no head);
// if it wins it removes the entries of the KEK of the head it replaced (a
// KEK never comes back, so no later head needs them) and entries whose key
// or value cannot be read (other formats among them), never those of any
// other KEK, which may be a later winner's. In seal mode Disabled no
// platform has an entry.
//
// Load opens the KEK with the keys of the state this store had open when
// they are the head's, otherwise from this platform's entry for the
// head's seal mode and KEK check. Without one it fails with ErrNeedKey
// (which wraps ErrUnseal, so the Coordinator enters recovery with the
// recovery data readable): a Coordinator serving the state can hand the
// KEK over (KeySharer: LoadWithKEK seals it for this platform), or the
// owners recover the data key. A Load that opened the state without this
// platform's entry adds it; it never writes the state.
//
// A new KEK is made for a new state, a Reset of state this store had not
// opened, an Unlock (recovery), a change of seal mode (so no platform
// keeps the key sealed in a mode the state has left) and the first write
// after a version 1 head. This platform's entry for it is written before
// the head and the replaced KEK's entries removed after it, so a crash in
// between leaves the previous head with the entries that open it.
//
// A version 1 head, written before the KEK existed, holds "count u16 |
// per sealed key: seal mode u8 | key check (16) | len u32 |
// Sealer.Seal(data key, AAD as in sealed_key)" in place of the KEK check
// and wrapped keys. It is still read; the next write stores a version 3
// head with a new KEK and this platform's entry.
//
// The head's resourceVersion is the compare-and-swap point: a commit
// updates the head from the resourceVersion it last read or wrote to one
// holding the delta and one generation higher. A delta sealed to at most
// 4 KiB is kept in the head, so that the commit is that one request, as
// long as the head's inline segments stay within 64 KiB; otherwise the
// commit first creates one packed chunk holding the segments the head
// kept (unchanged, so a store holding them still catches up) and keeps
// the new delta in the head, or, for a larger delta, creates the delta's
// chunks. If the head moved meanwhile, the update is refused, the commit
// deletes what it created and fails with ErrConflict; the store writes
// nothing more until Load. A failed update whose outcome is unknown makes
// later writes fail with ErrBroken until Load. Once the deltas (wherever
// kept) are larger than max(1 MiB, the base) or more than 64, the state
// is written as a new base (compaction). After the head moved, the chunks
// the previous head listed and the new one does not are deleted; after a
// new base, chunks no head lists (a discarded one included) and written
// for a generation the head has reached are deleted too: leftovers of
// crashed or lost writes, whose own head update can no longer succeed.
// Chunks written for a later generation may belong to a write in progress
// and are kept.
//
// Load reads the head, checks it, opens the data key, authenticates the
// head, then reads every chunk object (in parallel, each once), checks
// each piece's size and digest against the head and decrypts the
// segments. A store that holds the
// state of a head catches up instead when the new head extends it: same
// key check, same recovery data list, and the held head's segments, chunk
// for chunk (name, size, SHA-256) or byte for byte if kept in the head (a
// segment since moved to a packed chunk matches by its size and SHA-256),
// a prefix of the new head's. It then opens and authenticates the new
// head exactly as above (keys, tag, rollback floor) and reads and
// decrypts only the further deltas, applying them to the state it holds
// (when those are kept in the head, the head is the only read). Anything
// else (a new base, another key, a write of this store stopped between
// its head swap and its state update) is a full read. The metric
// coordinator_store_loads_total{kind="incremental"|"full"} counts both,
// coordinator_store_conflicts_total the writes that lost a race. A load
// that opened the head with the keys it held checks this platform's entry
// of the KEK map once per key-encryption key, not on every load. If a chunk is missing
// because the head moved meanwhile, Load starts over. Anything that fails
// its checks is refused with ErrUnseal and ErrCorrupt, never repaired.
//
// # Rollback
//
// A head whose authenticated generation is lower than the highest this
// store has read, written or been told of (RaiseGenerationFloor, and the
// minimum generation of LoadWithKEK, which a peer hands over with the
// KEK) is refused with ErrRollback: writing older objects back over the
// API is noticed by every running Coordinator and by one that joins
// through a running peer. The Coordinator keeps serving what it has and
// refuses writes until the stored state is new enough again. The floor
// lives in memory only: when every Coordinator is down, nobody remembers
// the newer generation, and a fresh start opens whatever older state it
// finds, as long as the objects are authentic and the KEK map opens them.
//
// # Moving a FileStore into a KubeStore
//
// ExportFile reads a FileStore's directory as Load does, without creating,
// locking exclusively or writing anything (it takes a shared flock on the
// lock file if there is one, so it fails with ErrLocked while a
// Coordinator holds the directory), and returns the state with its data
// key, seal mode and recovery data. KubeStore.Import writes them as the
// first generation of a KubeStore, under a new key-encryption key; the
// head's creation is the compare-and-swap point, so of several stores
// importing at once exactly one writes. The data key stays the same, so
// recovery data computed from it (the owners' recovery secrets) still
// opens the state. FileKeyCheck and KubeStore.HeadKeyCheck return the key
// check of either side without unsealing anything, which tells whether an
// import was done already.
//
// The sealed data key (for KubeStore, the sealed KEK) is the only
// protection of the state: with seal.SimulationSealer the state is
// readable by anyone who can read the directory or the KEK map.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// ErrNoState is returned by Load when no state has been stored yet.
var ErrNoState = errors.New("no stored state")

// ErrUnseal is wrapped by Load when stored state exists but cannot be
// opened: the sealed data key cannot be unsealed on this machine, or the
// data fails its integrity check. The Coordinator then enters recovery.
var ErrUnseal = errors.New("stored state cannot be unsealed")

// Store is the Coordinator's persistence.
//
// Methods that read or write stored data take a context, which bounds the
// I/O of stores kept behind a network (the Kubernetes API); the local
// stores ignore it. A write whose context ends may or may not have been
// stored: the error says so only where the store can tell.
type Store interface {
	// Load opens the stored state and returns all of it. It returns
	// ErrNoState if there is none, and an error wrapping ErrUnseal if there
	// is some that cannot be opened; stored files are never modified by a
	// failed Load.
	Load(ctx context.Context) (map[string][]byte, error)
	// Commit durably applies changes: a nil value deletes its key. When
	// Commit returns nil the change survives a crash; when it returns an
	// error the stored state is the one before the call.
	Commit(ctx context.Context, changes map[string][]byte) error
	// Reset replaces everything stored with state, encrypted under a new
	// random data key which it returns, sealed in the default seal mode and
	// without recovery data. Earlier stored data that could not be opened
	// is kept aside, never deleted.
	Reset(ctx context.Context, state map[string][]byte) (dataKey []byte, err error)
	// ResetWith is Reset with a seal mode and the recovery data computed
	// from the new data key, stored together as one atomic step: a crash
	// leaves either the earlier state or the new one with its recovery
	// data. Nothing is stored if opts.RecoveryData fails.
	ResetWith(ctx context.Context, state map[string][]byte, opts ResetOptions) (dataKey []byte, err error)
	// SealMode returns the seal mode of the stored state (also after a
	// Load that could not unseal it), or the default mode when nothing is
	// stored.
	SealMode() seal.Mode
	// CanSeal reports whether this store can seal a data key in mode on
	// this machine (Disabled needs no sealer).
	CanSeal(mode seal.Mode) bool
	// SetSealMode durably seals the open state's data key in mode, which
	// stays the same key; Disabled removes the sealed key, so that the
	// next Load reports ErrUnseal. It does nothing if mode is in force.
	SetSealMode(ctx context.Context, mode seal.Mode) error
	// Unlock opens state that Load could not unseal, using a data key
	// supplied by the owners (recovery), seals that key for this machine
	// and returns the state.
	Unlock(ctx context.Context, dataKey []byte) (map[string][]byte, error)
	// RecoveryData returns a copy of the unencrypted recovery data stored
	// beside the state, nil if none. It is readable after a Load that
	// could not unseal the state, so that recovery can be prepared.
	RecoveryData() []byte
	// SetRecoveryData durably replaces the recovery data of the open
	// state; Reset clears it. The data is stored unencrypted but is
	// authenticated together with the state.
	SetRecoveryData(ctx context.Context, data []byte) error
	// Close releases resources.
	Close() error
}

// ResetOptions are the choices of Store.ResetWith.
type ResetOptions struct {
	// Mode is the seal mode of the new data key; empty means the store's
	// default mode.
	Mode seal.Mode
	// RecoveryData, if set, is called with the new data key before
	// anything is written; what it returns (at most 1 MiB) is stored
	// unencrypted beside the state, in the same step. The key must not be
	// kept.
	RecoveryData func(dataKey []byte) ([]byte, error)
}

// prepare is what every Reset does before it writes anything: the seal
// mode (def when opts names none), which must have a sealer in sealers
// unless it seals nothing or sealers is nil (a store that seals nothing),
// a new data key, and the recovery data computed from that key.
func (o ResetOptions) prepare(def seal.Mode, sealers map[seal.Mode]seal.Sealer) (mode seal.Mode, key, recovery []byte, err error) {
	mode, err = o.mode(def)
	if err != nil {
		return "", nil, nil, fmt.Errorf("store: reset: %w", err)
	}
	if sealers != nil && mode.Seals() && sealers[mode] == nil {
		return "", nil, nil, fmt.Errorf("store: reset: this Coordinator has no sealer for seal mode %s", mode)
	}
	if key, err = newDataKey(); err != nil {
		return "", nil, nil, fmt.Errorf("store: reset: %w", err)
	}
	if recovery, err = o.recoveryData(key); err != nil {
		return "", nil, nil, fmt.Errorf("store: reset: %w", err)
	}
	return mode, key, recovery, nil
}

func (o ResetOptions) mode(def seal.Mode) (seal.Mode, error) {
	if o.Mode == "" {
		return def, nil
	}
	if _, err := o.Mode.Code(); err != nil {
		return "", err
	}
	return o.Mode, nil
}

func (o ResetOptions) recoveryData(key []byte) ([]byte, error) {
	if o.RecoveryData == nil {
		return nil, nil
	}
	data, err := o.RecoveryData(cloneValue(key))
	if err != nil {
		return nil, fmt.Errorf("computing the recovery data: %w", err)
	}
	if len(data) > maxRecoveryDataSize {
		return nil, fmt.Errorf("recovery data of %d bytes exceeds the limit %d", len(data), maxRecoveryDataSize)
	}
	return cloneValue(data), nil
}
