package store

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// Sizes and limits of the on-disk format (see the package documentation).
const (
	dataKeySize  = 32
	keyCheckSize = 16
	nonceSize    = 12
	tagSize      = 16

	// snapshotVersion is the snapshot format this build writes;
	// legacySnapshotVersion, which kept the sealed data key inside the
	// snapshot, is still read.
	snapshotVersion       = 2
	legacySnapshotVersion = 1
	journalVersion        = 1
	sealedKeyVersion      = 1

	snapshotMagic  = "mmstate\x00"
	journalMagic   = "mmjrnl\x00\x00"
	sealedKeyMagic = "mmsealky"

	// sealBoundSize is the prefix of a version 1 snapshot header that its
	// sealed data key is bound to: magic, version, flags and key check.
	sealBoundSize     = 8 + 2 + 2 + keyCheckSize
	snapshotFixedSize = sealBoundSize + 8
	// snapshotV2FixedSize adds the seal mode byte.
	snapshotV2FixedSize = snapshotFixedSize + 1

	// sealedKeyHeaderSize is magic, version and entry count; an entry
	// starts with its mode, key check and length.
	sealedKeyHeaderSize      = 8 + 2 + 2
	sealedKeyEntryHeaderSize = 1 + keyCheckSize + 4
	// maxSealedKeyEntries: one for the state on disk, one for the state
	// that replaces it.
	maxSealedKeyEntries = 2
	maxSealedKeyFile    = sealedKeyHeaderSize + maxSealedKeyEntries*(sealedKeyEntryHeaderSize+maxSealedKeySize)
	journalHeaderSize   = 8 + 2 + 2 + 8
	recordHeaderSize    = 4 + 8 + 4
	minRecordPayload    = nonceSize + tagSize

	maxSealedKeySize    = 64 << 10
	maxRecoveryDataSize = 1 << 20
	maxFileSize         = 1 << 30
	maxRecordPayload    = 256 << 20

	// maxTailCandidates bounds the decryption attempts spent looking for a
	// valid record after a bad one.
	maxTailCandidates = 256

	keyCheckLabel = "marblemesh/store/key-check/v1"

	opDelete byte = 0
	opPut    byte = 1
)

// snapshotHeader holds the plaintext fields of a snapshot file.
type snapshotHeader struct {
	version    uint16
	generation uint64
	keyCheck   [keyCheckSize]byte
	// mode is the seal mode of the state; a version 1 snapshot has none
	// (its key is sealed with the store's default mode).
	mode seal.Mode
	// legacySealedKey is the data key sealed inside a version 1 snapshot.
	legacySealedKey []byte
	recovery        []byte
}

// sealedEntry is one data key in the sealed_key file.
type sealedEntry struct {
	mode     seal.Mode
	keyCheck [keyCheckSize]byte
	sealed   []byte
}

func (e sealedEntry) same(o sealedEntry) bool {
	return e.mode == o.mode && e.keyCheck == o.keyCheck && bytes.Equal(e.sealed, o.sealed)
}

// keyCheckOf returns a value that identifies dataKey without revealing it.
func keyCheckOf(dataKey []byte) [keyCheckSize]byte {
	mac := hmac.New(sha256.New, dataKey)
	mac.Write([]byte(keyCheckLabel))
	var kc [keyCheckSize]byte
	copy(kc[:], mac.Sum(nil))
	return kc
}

// legacySealAAD returns the additional data the data key inside a
// version 1 snapshot is sealed with.
func legacySealAAD(keyCheck [keyCheckSize]byte) []byte {
	b := make([]byte, 0, sealBoundSize)
	b = append(b, snapshotMagic...)
	b = binary.LittleEndian.AppendUint16(b, legacySnapshotVersion)
	b = binary.LittleEndian.AppendUint16(b, 0)
	return append(b, keyCheck[:]...)
}

// sealedKeyAAD returns the additional data a data key in the sealed_key
// file is sealed with: it binds the key to its seal mode and to the key
// check of the state it opens.
func sealedKeyAAD(mode byte, keyCheck [keyCheckSize]byte) []byte {
	b := make([]byte, 0, 8+2+1+keyCheckSize)
	b = append(b, sealedKeyMagic...)
	b = binary.LittleEndian.AppendUint16(b, sealedKeyVersion)
	b = append(b, mode)
	return append(b, keyCheck[:]...)
}

// encodeSealedKey returns a sealed_key file holding entries.
//
//	magic "mmsealky" | version u16 = 1 | count u16 | per entry:
//	mode u8 | key check (16) | len u32 | sealed data key
func encodeSealedKey(entries []sealedEntry) ([]byte, error) {
	if len(entries) == 0 || len(entries) > maxSealedKeyEntries {
		return nil, fmt.Errorf("sealed key file: %d entries, want 1 to %d", len(entries), maxSealedKeyEntries)
	}
	b := make([]byte, 0, sealedKeyHeaderSize+len(entries)*(sealedKeyEntryHeaderSize+64))
	b = append(b, sealedKeyMagic...)
	b = binary.LittleEndian.AppendUint16(b, sealedKeyVersion)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(entries))) //nolint:gosec // G115: at most maxSealedKeyEntries, checked above
	for _, e := range entries {
		code, err := e.mode.Code()
		if err != nil || !e.mode.Seals() {
			return nil, fmt.Errorf("sealed key file: entry of seal mode %q", e.mode)
		}
		if len(e.sealed) > maxSealedKeySize {
			return nil, fmt.Errorf("sealed data key is %d bytes, limit %d", len(e.sealed), maxSealedKeySize)
		}
		b = append(b, code)
		b = append(b, e.keyCheck[:]...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.sealed))) //nolint:gosec // G115: at most maxSealedKeySize, checked above
		b = append(b, e.sealed...)
	}
	return b, nil
}

// parseSealedKey reverses encodeSealedKey. The sealed values alias b.
func parseSealedKey(b []byte) ([]sealedEntry, error) {
	if len(b) < sealedKeyHeaderSize {
		return nil, fmt.Errorf("sealed key file: %d bytes is shorter than its header", len(b))
	}
	if string(b[:8]) != sealedKeyMagic {
		return nil, errors.New("sealed key file: bad magic (not a marblemesh sealed key)")
	}
	if v := binary.LittleEndian.Uint16(b[8:10]); v != sealedKeyVersion {
		return nil, fmt.Errorf("sealed key file: format version %d, this build reads %d", v, sealedKeyVersion)
	}
	n := int(binary.LittleEndian.Uint16(b[10:12]))
	if n == 0 || n > maxSealedKeyEntries {
		return nil, fmt.Errorf("sealed key file: %d entries, want 1 to %d", n, maxSealedKeyEntries)
	}
	rest := b[sealedKeyHeaderSize:]
	entries := make([]sealedEntry, 0, n)
	for i := range n {
		if len(rest) < sealedKeyEntryHeaderSize {
			return nil, fmt.Errorf("sealed key file: entry %d truncated", i)
		}
		mode, err := seal.ModeOfCode(rest[0])
		if err != nil || !mode.Seals() {
			return nil, fmt.Errorf("sealed key file: entry %d: seal mode code %d", i, rest[0])
		}
		var e sealedEntry
		e.mode = mode
		copy(e.keyCheck[:], rest[1:1+keyCheckSize])
		l := binary.LittleEndian.Uint32(rest[1+keyCheckSize:])
		rest = rest[sealedKeyEntryHeaderSize:]
		if uint64(l) > maxSealedKeySize || uint64(l) > uint64(len(rest)) {
			return nil, fmt.Errorf("sealed key file: entry %d: length %d exceeds the limit %d or the remaining %d bytes", i, l, maxSealedKeySize, len(rest))
		}
		e.sealed = rest[:l:l]
		rest = rest[l:]
		for _, o := range entries {
			if o.mode == e.mode && o.keyCheck == e.keyCheck {
				return nil, fmt.Errorf("sealed key file: entry %d repeats an earlier one", i)
			}
		}
		entries = append(entries, e)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("sealed key file: %d trailing bytes", len(rest))
	}
	return entries, nil
}

func newDataKey() ([]byte, error) {
	key := make([]byte, dataKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate data key: %w", err)
	}
	return key, nil
}

func newAEAD(dataKey []byte) (cipher.AEAD, error) {
	if len(dataKey) != dataKeySize {
		return nil, fmt.Errorf("data key is %d bytes, want %d: %w", len(dataKey), dataKeySize, ErrWrongDataKey)
	}
	block, err := aes.NewCipher(dataKey)
	if err != nil {
		return nil, fmt.Errorf("create AES cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("create GCM: %w", err)
	}
	return aead, nil
}

// encrypt encrypts plaintext under a fresh random nonce and appends
// nonce ‖ ciphertext to dst.
func encrypt(dst []byte, aead cipher.AEAD, plaintext, aad []byte) ([]byte, error) {
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("read nonce: %w", err)
	}
	return aead.Seal(append(dst, nonce[:]...), nonce[:], plaintext, aad), nil
}

// decrypt reverses encrypt on nonce ‖ ciphertext.
func decrypt(aead cipher.AEAD, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < nonceSize+tagSize {
		return nil, errors.New("ciphertext too short")
	}
	return aead.Open(nil, sealed[:nonceSize], sealed[nonceSize:], aad)
}

// corrupt returns an error wrapping ErrUnseal and ErrCorrupt.
func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %w: %s", ErrUnseal, ErrCorrupt, fmt.Sprintf(format, args...))
}

// encodeEntries encodes a change set: a nil value is a deletion. Keys are
// written in sorted order.
//
//	count u32, then per entry: op u8, keyLen u32, key, and for op put:
//	valueLen u32, value
func encodeEntries(m map[string][]byte) []byte {
	size := 4
	for k, v := range m {
		size += 1 + 4 + len(k)
		if v != nil {
			size += 4 + len(v)
		}
	}
	b := make([]byte, 0, size)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m))) //nolint:gosec // G115: what does not fit in 32 bits is never stored: records over maxRecordPayload and snapshots over maxFileSize (both < 4 GiB) are refused
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		if v == nil {
			b = append(b, opDelete)
		} else {
			b = append(b, opPut)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(k))) //nolint:gosec // G115: as above
		b = append(b, k...)
		if v != nil {
			b = binary.LittleEndian.AppendUint32(b, uint32(len(v))) //nolint:gosec // G115: as above
			b = append(b, v...)
		}
	}
	return b
}

// decodeEntries reverses encodeEntries. Deletions decode to nil values and
// are refused unless allowDeletes. Values alias b (capacity-limited so that
// appending to one cannot overwrite another). Every allocation is bounded
// by len(b).
func decodeEntries(b []byte, allowDeletes bool) (map[string][]byte, error) {
	if len(b) < 4 {
		return nil, errors.New("entries: missing count")
	}
	count := binary.LittleEndian.Uint32(b)
	b = b[4:]
	// The smallest entry is a deletion of the empty key: 5 bytes.
	if uint64(count) > uint64(len(b))/5 {
		return nil, fmt.Errorf("entries: count %d exceeds what %d bytes can hold", count, len(b))
	}
	m := make(map[string][]byte, count)
	for i := range count {
		if len(b) < 5 {
			return nil, fmt.Errorf("entries: entry %d truncated", i)
		}
		op := b[0]
		kl := binary.LittleEndian.Uint32(b[1:5])
		b = b[5:]
		if uint64(kl) > uint64(len(b)) {
			return nil, fmt.Errorf("entries: entry %d: key length %d exceeds remaining %d bytes", i, kl, len(b))
		}
		key := string(b[:kl])
		b = b[kl:]
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("entries: entry %d: duplicate key", i)
		}
		switch op {
		case opDelete:
			if !allowDeletes {
				return nil, fmt.Errorf("entries: entry %d: deletion in a full state", i)
			}
			m[key] = nil
		case opPut:
			if len(b) < 4 {
				return nil, fmt.Errorf("entries: entry %d: value length truncated", i)
			}
			vl := binary.LittleEndian.Uint32(b)
			b = b[4:]
			if uint64(vl) > uint64(len(b)) {
				return nil, fmt.Errorf("entries: entry %d: value length %d exceeds remaining %d bytes", i, vl, len(b))
			}
			m[key] = b[:vl:vl]
			b = b[vl:]
		default:
			return nil, fmt.Errorf("entries: entry %d: unknown operation %d", i, op)
		}
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("entries: %d trailing bytes", len(b))
	}
	return m, nil
}

// encodeSnapshot returns a complete snapshot file in the current format
// (version 2); h.version and h.legacySealedKey are ignored.
func encodeSnapshot(h snapshotHeader, aead cipher.AEAD, state map[string][]byte) ([]byte, error) {
	code, err := h.mode.Code()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if len(h.recovery) > maxRecoveryDataSize {
		return nil, fmt.Errorf("recovery data is %d bytes, limit %d", len(h.recovery), maxRecoveryDataSize)
	}
	plain := encodeEntries(state)
	size := snapshotV2FixedSize + 4 + len(h.recovery) + nonceSize + len(plain) + tagSize
	if size > maxFileSize {
		return nil, fmt.Errorf("state of %d bytes exceeds the snapshot limit %d", len(plain), maxFileSize)
	}
	b := make([]byte, 0, size)
	b = append(b, snapshotMagic...)
	b = binary.LittleEndian.AppendUint16(b, snapshotVersion)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = append(b, h.keyCheck[:]...)
	b = binary.LittleEndian.AppendUint64(b, h.generation)
	b = append(b, code)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(h.recovery))) //nolint:gosec // G115: at most maxRecoveryDataSize, checked above
	b = append(b, h.recovery...)
	return encrypt(b, aead, plain, slices.Clone(b))
}

// parseSnapshot splits a snapshot file into its header, the bytes the
// ciphertext is bound to, and nonce ‖ ciphertext. It allocates nothing in
// proportion to length fields; the returned slices alias b.
func parseSnapshot(b []byte) (h snapshotHeader, aad, sealed []byte, err error) {
	if len(b) < snapshotFixedSize {
		return h, nil, nil, fmt.Errorf("snapshot: %d bytes is shorter than its header", len(b))
	}
	if string(b[:8]) != snapshotMagic {
		return h, nil, nil, errors.New("snapshot: bad magic (not a marblemesh state file)")
	}
	h.version = binary.LittleEndian.Uint16(b[8:10])
	if h.version != snapshotVersion && h.version != legacySnapshotVersion {
		return h, nil, nil, fmt.Errorf("snapshot: format version %d, this build reads %d and %d", h.version, legacySnapshotVersion, snapshotVersion)
	}
	if f := binary.LittleEndian.Uint16(b[10:12]); f != 0 {
		return h, nil, nil, fmt.Errorf("snapshot: unknown flags 0x%04x", f)
	}
	copy(h.keyCheck[:], b[12:sealBoundSize])
	h.generation = binary.LittleEndian.Uint64(b[sealBoundSize:snapshotFixedSize])
	rest := b[snapshotFixedSize:]
	if h.version == legacySnapshotVersion {
		h.legacySealedKey, rest, err = lengthPrefixed(rest, maxSealedKeySize, "sealed data key")
		if err != nil {
			return h, nil, nil, err
		}
	} else {
		if len(rest) < 1 {
			return h, nil, nil, errors.New("snapshot: seal mode truncated")
		}
		if h.mode, err = seal.ModeOfCode(rest[0]); err != nil {
			return h, nil, nil, fmt.Errorf("snapshot: %w", err)
		}
		rest = rest[1:]
	}
	h.recovery, rest, err = lengthPrefixed(rest, maxRecoveryDataSize, "recovery data")
	if err != nil {
		return h, nil, nil, err
	}
	if len(rest) < nonceSize+tagSize {
		return h, nil, nil, errors.New("snapshot: ciphertext truncated")
	}
	return h, b[:len(b)-len(rest)], rest, nil
}

func lengthPrefixed(b []byte, limit int, what string) (field, rest []byte, err error) {
	if len(b) < 4 {
		return nil, nil, fmt.Errorf("snapshot: %s length truncated", what)
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) > uint64(limit) { //nolint:gosec // G115: limit is a positive constant
		return nil, nil, fmt.Errorf("snapshot: %s length %d exceeds limit %d", what, n, limit)
	}
	if uint64(n) > uint64(len(b)-4) { //nolint:gosec // G115: len(b) >= 4 was checked above
		return nil, nil, fmt.Errorf("snapshot: %s length %d exceeds remaining %d bytes", what, n, len(b)-4)
	}
	return b[4 : 4+n : 4+n], b[4+n:], nil
}

// openSnapshot decrypts and decodes the state of a parsed snapshot.
func openSnapshot(aead cipher.AEAD, aad, sealed []byte) (map[string][]byte, error) {
	plain, err := decrypt(aead, sealed, aad)
	if err != nil {
		return nil, errors.New("snapshot: ciphertext fails authentication")
	}
	state, err := decodeEntries(plain, false)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return state, nil
}

func encodeJournalHeader(generation uint64) []byte {
	b := make([]byte, 0, journalHeaderSize)
	b = append(b, journalMagic...)
	b = binary.LittleEndian.AppendUint16(b, journalVersion)
	b = binary.LittleEndian.AppendUint16(b, 0)
	return binary.LittleEndian.AppendUint64(b, generation)
}

// parseJournalHeader returns the generation of a journal whose size is at
// least journalHeaderSize.
func parseJournalHeader(b []byte) (uint64, error) {
	if len(b) < journalHeaderSize {
		return 0, fmt.Errorf("journal: %d bytes is shorter than its header", len(b))
	}
	if string(b[:8]) != journalMagic {
		return 0, errors.New("journal: bad magic (not a marblemesh journal)")
	}
	if v := binary.LittleEndian.Uint16(b[8:10]); v != journalVersion {
		return 0, fmt.Errorf("journal: format version %d, this build reads %d", v, journalVersion)
	}
	if f := binary.LittleEndian.Uint16(b[10:12]); f != 0 {
		return 0, fmt.Errorf("journal: unknown flags 0x%04x", f)
	}
	return binary.LittleEndian.Uint64(b[12:20]), nil
}

func recordAAD(generation, seq uint64) []byte {
	b := make([]byte, 0, 8+8+8)
	b = append(b, journalMagic...)
	b = binary.LittleEndian.AppendUint64(b, generation)
	return binary.LittleEndian.AppendUint64(b, seq)
}

func headerCheck(b []byte) uint32 {
	return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
}

// encodeRecord returns journal record seq holding plaintext.
//
//	payloadLen u32, seq u64, crc32c(payloadLen ‖ seq) u32,
//	nonce, ciphertext ‖ tag
func encodeRecord(aead cipher.AEAD, generation, seq uint64, plaintext []byte) ([]byte, error) {
	payload := nonceSize + len(plaintext) + tagSize
	if payload > maxRecordPayload {
		return nil, fmt.Errorf("change set of %d bytes exceeds the record limit %d", len(plaintext), maxRecordPayload)
	}
	b := make([]byte, 0, recordHeaderSize+payload)
	b = binary.LittleEndian.AppendUint32(b, uint32(payload))
	b = binary.LittleEndian.AppendUint64(b, seq)
	b = binary.LittleEndian.AppendUint32(b, headerCheck(b[:12]))
	return encrypt(b, aead, plaintext, recordAAD(generation, seq))
}

// recordAt parses a record header at off. It reports the payload length
// and the sequence number the record claims, if the header check holds and
// the payload lies within b.
func recordAt(b []byte, off int) (n int, seq uint64, ok bool) {
	if len(b)-off < recordHeaderSize {
		return 0, 0, false
	}
	h := b[off : off+recordHeaderSize]
	if binary.LittleEndian.Uint32(h[12:]) != headerCheck(h[:12]) {
		return 0, 0, false
	}
	size := binary.LittleEndian.Uint32(h)
	if size < minRecordPayload || size > maxRecordPayload || uint64(size) > uint64(len(b)-off-recordHeaderSize) { //nolint:gosec // G115: len(b)-off >= recordHeaderSize was checked above
		return 0, 0, false
	}
	return int(size), binary.LittleEndian.Uint64(h[4:12]), true
}

// openRecordAt decrypts the record at off if it is record seq of
// generation; otherwise ok is false.
func openRecordAt(b []byte, off int, generation, seq uint64, aead cipher.AEAD) (plain []byte, next int, ok bool) {
	n, claimed, ok := recordAt(b, off)
	if !ok || claimed != seq {
		return nil, 0, false
	}
	start := off + recordHeaderSize
	plain, err := decrypt(aead, b[start:start+n], recordAAD(generation, seq))
	if err != nil {
		return nil, 0, false
	}
	return plain, start + n, true
}

// journalReplay is the outcome of replaying a journal.
type journalReplay struct {
	end     int    // offset after the last valid record
	records uint64 // number of valid records
}

// replayJournal applies the records of a journal of generation to state,
// in sequence. A bad record with no authentic record at or after it is a
// torn tail: replay stops before it and reports its offset as end. A bad
// record followed by an authentic one is corruption. Allocations are
// bounded by len(b).
func replayJournal(b []byte, generation uint64, aead cipher.AEAD, state map[string][]byte) (journalReplay, error) {
	off := journalHeaderSize
	var seq uint64
	for off < len(b) {
		plain, next, ok := openRecordAt(b, off, generation, seq+1, aead)
		if !ok {
			if at, found := authenticRecordFrom(b, off, generation, aead); found {
				return journalReplay{}, corrupt("journal: record %d at offset %d is bad but an authentic record follows at offset %d", seq+1, off, at)
			}
			return journalReplay{end: off, records: seq}, nil
		}
		changes, err := decodeEntries(plain, true)
		if err != nil {
			return journalReplay{}, corrupt("journal: record %d at offset %d: %v", seq+1, off, err)
		}
		applyChanges(state, changes)
		seq++
		off = next
	}
	return journalReplay{end: off, records: seq}, nil
}

// authenticRecordFrom looks for a record of generation that authenticates
// under the sequence number it claims, starting at any offset from from
// on. It gives up after maxTailCandidates well-formed headers.
func authenticRecordFrom(b []byte, from int, generation uint64, aead cipher.AEAD) (int, bool) {
	candidates := 0
	for p := from; len(b)-p >= recordHeaderSize+minRecordPayload; p++ {
		_, claimed, ok := recordAt(b, p)
		if !ok {
			continue
		}
		if _, _, ok := openRecordAt(b, p, generation, claimed, aead); ok {
			return p, true
		}
		candidates++
		if candidates >= maxTailCandidates {
			return 0, false
		}
	}
	return 0, false
}

// applyChanges applies a change set: nil values delete.
func applyChanges(state, changes map[string][]byte) {
	for k, v := range changes {
		if v == nil {
			delete(state, k)
		} else {
			state[k] = v
		}
	}
}

// cloneValue copies v, keeping nil as nil and empty as empty.
func cloneValue(v []byte) []byte {
	if v == nil {
		return nil
	}
	return append(make([]byte, 0, len(v)), v...)
}

// cloneChanges deep-copies a change set, keeping nil values.
func cloneChanges(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

// cloneState deep-copies a state into one allocation for all values,
// dropping nil values.
func cloneState(m map[string][]byte) map[string][]byte {
	total := 0
	for _, v := range m {
		total += len(v)
	}
	buf := make([]byte, 0, total)
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		if v == nil {
			continue
		}
		start := len(buf)
		buf = append(buf, v...)
		out[k] = buf[start:len(buf):len(buf)]
	}
	return out
}
