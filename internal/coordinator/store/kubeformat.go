package store

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// Format of the objects of KubeStore (see the package documentation).
const (
	headMagic    = "mmkhead\x00"
	segmentMagic = "mmkseg\x00\x00"
	wrapMagic    = "mmkwrap\x00"
	// headVersion is the head format this build writes. A kekHeadVersion
	// head, whose segments are all stored in chunk objects, and a
	// legacyHeadVersion head, which holds the data key sealed per seal
	// mode instead of wrapped under a key-encryption key, are still read.
	headVersion       = 3
	kekHeadVersion    = 2
	legacyHeadVersion = 1

	// wrapDataKey and wrapKEK tell the two wrapped keys of a head apart
	// in their additional data.
	wrapDataKey byte = 1
	wrapKEK     byte = 2
	// wrappedSize is a 32-byte key wrapped: nonce ‖ ciphertext ‖ tag.
	wrappedSize = nonceSize + dataKeySize + tagSize

	// segBase holds a whole state, segDelta the changes of one commit.
	segBase  byte = 1
	segDelta byte = 2

	// Where a version 3 head keeps a segment: placeChunks in chunk
	// objects (data "chunk"), placeInline in the head itself, placePacked
	// under the data key segmentKey(id) of one chunk object that holds
	// several segments (moved there from the head together).
	placeChunks byte = 1
	placeInline byte = 2
	placePacked byte = 3

	// maxInlineSegment bounds a sealed segment kept in the head, and
	// maxInlineBytes all of them together. Every head update sends the
	// whole head and every load (and watch event) carries it, so the
	// inline bytes are paid again by each commit and by each catch-up of
	// every replica: 64 KiB (about 87 KiB in the base64 of a request) is
	// a twelfth of maxHeadSize and keeps a commit's request small, while
	// a typical small commit (a counter, a user secret) seals to well
	// under 1 KiB, so that dozens of commits fit before a spill moves
	// them to one chunk object. A delta above 4 KiB is cheaper in a
	// chunk of its own than re-sent with every later head.
	maxInlineSegment = 4 << 10
	maxInlineBytes   = 64 << 10

	// maxHeadSize bounds the head's data field, far below the 1 MiB an
	// object may hold.
	maxHeadSize = 768 << 10
	// maxPieceSize bounds a chunk object's data field when read;
	// defaultPieceSize is the size chunks are cut to when written.
	maxPieceSize     = 768 << 10
	defaultPieceSize = 512 << 10
	// maxHeadEntries bounds the sealed data keys in the head.
	maxHeadEntries = 16
	// maxHeadSegments bounds the segments (one base and the deltas) and
	// maxHeadChunks the chunk objects the head lists, recovery data
	// included: at most 768 MiB of state.
	maxHeadSegments = 256
	maxHeadChunks   = 1024
	// maxChunkName bounds a chunk object's name.
	maxChunkName = 253
	headTagSize  = nonceSize + tagSize
)

// chunkRef names a chunk object and pins its content: the bytes under
// key in the object's data, chunkDataKey when key is empty.
type chunkRef struct {
	name string
	key  string
	size uint32
	sum  [sha256.Size]byte
}

// dataKey is the key of the object's data that holds the piece.
func (r chunkRef) dataKey() string {
	if r.key == "" {
		return chunkDataKey
	}
	return r.key
}

// id tells pieces apart when one object holds several.
func (r chunkRef) id() string { return r.name + "/" + r.dataKey() }

// segmentKey is the data key of a packed segment in its chunk object.
func segmentKey(id uint64) string { return "segment-" + strconv.FormatUint(id, 10) }

// segment is a base or delta: nonce ‖ AES-GCM ciphertext of encoded
// entries, either cut into chunk objects (pieces) or kept in the head
// (inline, set only then).
type segment struct {
	kind   byte
	id     uint64 // the generation of the head that first listed it
	pieces []chunkRef
	inline []byte
}

func (g segment) size() int64 {
	n := int64(len(g.inline))
	for _, p := range g.pieces {
		n += int64(p.size)
	}
	return n
}

// place tells where the segment is kept.
func (g segment) place() byte {
	switch {
	case g.inline != nil:
		return placeInline
	case len(g.pieces) == 1 && g.pieces[0].key != "":
		return placePacked
	}
	return placeChunks
}

// sameAs tells whether g and n are the same segment: kind, id and sealed
// bytes, wherever each is kept. A segment moved from the head into a
// packed object is the same one when the object's piece has its size and
// digest.
func (g segment) sameAs(n segment) bool {
	if g.kind != n.kind || g.id != n.id {
		return false
	}
	switch gp, np := g.place(), n.place(); {
	case gp == placeInline && np == placeInline:
		return bytes.Equal(g.inline, n.inline)
	case gp == placeInline && np == placePacked:
		r := n.pieces[0]
		return len(g.inline) == int(r.size) && sha256.Sum256(g.inline) == r.sum
	case gp != placeInline && np != placeInline:
		return slices.Equal(g.pieces, n.pieces)
	}
	return false
}

// kubeHead is the content of the head object.
type kubeHead struct {
	version    uint16
	keyCheck   [keyCheckSize]byte
	generation uint64
	mode       seal.Mode
	// kekCheck names the key-encryption key; wrappedKey is the data key
	// under it, wrappedKEK the key-encryption key under the data key
	// (version 2).
	kekCheck   [keyCheckSize]byte
	wrappedKey []byte
	wrappedKEK []byte
	// entries are the data key sealed per seal mode (version 1 only).
	entries []sealedEntry
	// recovery holds the recovery data, unencrypted, in chunk objects.
	recoverySize uint32
	recovery     []chunkRef
	segments     []segment
}

// chunks returns the names of every chunk object h refers to.
func (h *kubeHead) chunks() map[string]bool {
	m := map[string]bool{}
	for _, r := range h.recovery {
		m[r.name] = true
	}
	for _, g := range h.segments {
		for _, r := range g.pieces {
			m[r.name] = true
		}
	}
	return m
}

func (h *kubeHead) chunkCount() int {
	n := len(h.recovery)
	for _, g := range h.segments {
		n += len(g.pieces)
	}
	return n
}

// inlineBytes is the size of the segments kept in the head.
func (h *kubeHead) inlineBytes() int {
	var n int
	for _, g := range h.segments {
		n += len(g.inline)
	}
	return n
}

// inlineSegments counts the segments kept in the head.
func (h *kubeHead) inlineSegments() int {
	var n int
	for _, g := range h.segments {
		if g.place() == placeInline {
			n++
		}
	}
	return n
}

// hasKEK tells whether the head holds its data key wrapped under a
// key-encryption key (version 2 and later).
func (h *kubeHead) hasKEK() bool { return h.version >= kekHeadVersion }

// headAAD is what the head's tag authenticates: the head's own name (so a
// head cannot be passed off as another state's) and every byte before the
// tag.
func headAAD(name string, body []byte) []byte {
	b := make([]byte, 0, 8+2+len(name)+len(body))
	b = append(b, headMagic...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name))) //nolint:gosec // G115: object names are at most 253 bytes
	b = append(b, name...)
	return append(b, body...)
}

// segmentAAD binds a segment's ciphertext to its state, kind and id.
func segmentAAD(name string, keyCheck [keyCheckSize]byte, kind byte, id uint64) []byte {
	b := make([]byte, 0, 8+2+len(name)+keyCheckSize+1+8)
	b = append(b, segmentMagic...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name))) //nolint:gosec // G115: as above
	b = append(b, name...)
	b = append(b, keyCheck[:]...)
	b = append(b, kind)
	return binary.LittleEndian.AppendUint64(b, id)
}

func appendRefs(b []byte, refs []chunkRef) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(refs))) //nolint:gosec // G115: at most maxHeadChunks, checked by encodeHead
	for _, r := range refs {
		b = appendRef(b, r)
	}
	return b
}

func appendRef(b []byte, r chunkRef) []byte {
	b = append(b, byte(len(r.name))) //nolint:gosec // G115: at most maxChunkName (253), checked by encodeHead
	b = append(b, r.name...)
	b = binary.LittleEndian.AppendUint32(b, r.size)
	return append(b, r.sum[:]...)
}

// appendSegment encodes a segment of a version 3 head.
func appendSegment(b []byte, g segment) []byte {
	b = append(b, g.kind)
	b = binary.LittleEndian.AppendUint64(b, g.id)
	p := g.place()
	b = append(b, p)
	switch p {
	case placeInline:
		b = binary.LittleEndian.AppendUint32(b, uint32(len(g.inline))) //nolint:gosec // G115: at most maxInlineSegment, checked by encodeHead
		return append(b, g.inline...)
	case placePacked:
		return appendRef(b, g.pieces[0])
	}
	return appendRefs(b, g.pieces)
}

// checkSegments tells whether the segments can be written: where each is
// kept agrees with its fields, and inline bytes are within their limits.
func checkSegments(segs []segment) error {
	inline := 0
	for i, g := range segs {
		switch g.place() {
		case placeInline:
			if g.kind != segDelta || len(g.inline) == 0 || len(g.inline) > maxInlineSegment || len(g.pieces) != 0 {
				return fmt.Errorf("head: inline segment %d of kind %d, %d bytes (limit %d)", i, g.kind, len(g.inline), maxInlineSegment)
			}
			inline += len(g.inline)
		case placePacked:
			if r := g.pieces[0]; g.kind != segDelta || r.key != segmentKey(g.id) || r.size == 0 || r.size > maxInlineSegment {
				return fmt.Errorf("head: packed segment %d of kind %d under %q, %d bytes", i, g.kind, r.key, r.size)
			}
		default:
			if len(g.pieces) == 0 {
				return fmt.Errorf("head: segment %d has no chunks", i)
			}
			for _, r := range g.pieces {
				if r.key != "" {
					return fmt.Errorf("head: chunk %s of segment %d is under data key %q", r.name, i, r.key)
				}
			}
		}
	}
	if inline > maxInlineBytes {
		return fmt.Errorf("head: %d inline bytes exceed the limit %d", inline, maxInlineBytes)
	}
	return nil
}

// encodeHead returns the head object's data, authenticated under aead.
// refLists returns every list of chunks the head names: the recovery
// data's and each segment's.
func (h kubeHead) refLists() [][]chunkRef {
	lists := [][]chunkRef{h.recovery}
	for _, g := range h.segments {
		lists = append(lists, g.pieces)
	}
	return lists
}

// wrapAAD binds a wrapped key to its state, its kind and both keys'
// checks.
func wrapAAD(name string, kind byte, keyCheck, kekCheck [keyCheckSize]byte) []byte {
	b := make([]byte, 0, 8+1+2+len(name)+2*keyCheckSize)
	b = append(b, wrapMagic...)
	b = append(b, kind)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name))) //nolint:gosec // G115: object names are at most 253 bytes
	b = append(b, name...)
	b = append(b, keyCheck[:]...)
	return append(b, kekCheck[:]...)
}

// wrapKeys returns the data key wrapped under kek and kek wrapped under
// the data key, as a version 2 head holds them.
func wrapKeys(name string, dataKey, kek []byte) (wrappedKey, wrappedKEK []byte, err error) {
	kc, kk := keyCheckOf(dataKey), kekCheckOf(kek)
	kekAEAD, err := newAEAD(kek)
	if err != nil {
		return nil, nil, err
	}
	keyAEAD, err := newAEAD(dataKey)
	if err != nil {
		return nil, nil, err
	}
	if wrappedKey, err = encrypt(nil, kekAEAD, dataKey, wrapAAD(name, wrapDataKey, kc, kk)); err != nil {
		return nil, nil, err
	}
	if wrappedKEK, err = encrypt(nil, keyAEAD, kek, wrapAAD(name, wrapKEK, kc, kk)); err != nil {
		return nil, nil, err
	}
	return wrappedKey, wrappedKEK, nil
}

// unwrapDataKey returns the data key of a version 2 head opened with kek.
// Every failure wraps ErrUnseal.
func unwrapDataKey(name string, h kubeHead, kek []byte) ([]byte, error) {
	if len(kek) != dataKeySize || kekCheckOf(kek) != h.kekCheck {
		return nil, fmt.Errorf("%w: the key-encryption key is not the one of the head", ErrUnseal)
	}
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnseal, err)
	}
	key, err := decrypt(aead, h.wrappedKey, wrapAAD(name, wrapDataKey, h.keyCheck, h.kekCheck))
	if err != nil || len(key) != dataKeySize || keyCheckOf(key) != h.keyCheck {
		return nil, corrupt("the data key wrapped in the head does not open with its key-encryption key")
	}
	return key, nil
}

// unwrapKEK returns the key-encryption key of a version 2 head opened
// with its data key. Every failure wraps ErrUnseal.
func unwrapKEK(name string, h kubeHead, dataKey []byte) ([]byte, error) {
	if len(dataKey) != dataKeySize || keyCheckOf(dataKey) != h.keyCheck {
		return nil, fmt.Errorf("%w: %w", ErrUnseal, ErrWrongDataKey)
	}
	aead, err := newAEAD(dataKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnseal, err)
	}
	kek, err := decrypt(aead, h.wrappedKEK, wrapAAD(name, wrapKEK, h.keyCheck, h.kekCheck))
	if err != nil || len(kek) != dataKeySize || kekCheckOf(kek) != h.kekCheck {
		return nil, corrupt("the key-encryption key wrapped in the head does not open with its data key")
	}
	return kek, nil
}

func encodeHead(h kubeHead, aead cipher.AEAD, name string) ([]byte, error) {
	code, err := h.mode.Code()
	if err != nil {
		return nil, fmt.Errorf("head: %w", err)
	}
	if len(h.entries) > 0 || len(h.wrappedKey) != wrappedSize || len(h.wrappedKEK) != wrappedSize {
		return nil, errors.New("head: no key-encryption key (a version 1 head is not written)")
	}
	if len(h.segments) > maxHeadSegments || h.chunkCount() > maxHeadChunks {
		return nil, fmt.Errorf("head: %d segments in %d chunks exceed the limits %d and %d", len(h.segments), h.chunkCount(), maxHeadSegments, maxHeadChunks)
	}
	for _, refs := range h.refLists() {
		for _, r := range refs {
			if !chunkNameOK(r.name) {
				return nil, fmt.Errorf("head: chunk name %q is not a lower-case name of at most %d characters", r.name, maxChunkName)
			}
		}
	}
	if err := checkSegments(h.segments); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 4096+h.inlineBytes())
	b = append(b, headMagic...)
	b = binary.LittleEndian.AppendUint16(b, headVersion)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = append(b, h.keyCheck[:]...)
	b = binary.LittleEndian.AppendUint64(b, h.generation)
	b = append(b, code)
	b = append(b, h.kekCheck[:]...)
	b = append(b, h.wrappedKey...)
	b = append(b, h.wrappedKEK...)
	b = binary.LittleEndian.AppendUint32(b, h.recoverySize)
	b = appendRefs(b, h.recovery)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h.segments))) //nolint:gosec // G115: at most maxHeadSegments, checked above
	for _, g := range h.segments {
		b = appendSegment(b, g)
	}
	if len(b)+headTagSize > maxHeadSize {
		return nil, fmt.Errorf("head of %d bytes exceeds the limit %d", len(b)+headTagSize, maxHeadSize)
	}
	return encrypt(b, aead, nil, headAAD(name, b))
}

// headReader reads fields of a head, remembering the first error.
type headReader struct {
	b   []byte
	err error
}

func (r *headReader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = fmt.Errorf("head: %s truncated", what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *headReader) u8(what string) byte {
	if v := r.take(1, what); v != nil {
		return v[0]
	}
	return 0
}

func (r *headReader) u16(what string) uint16 {
	if v := r.take(2, what); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (r *headReader) u32(what string) uint32 {
	if v := r.take(4, what); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (r *headReader) u64(what string) uint64 {
	if v := r.take(8, what); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

// refs reads a list of chunk references; total counts the chunks read so
// far, against maxHeadChunks.
func (r *headReader) refs(total *int) []chunkRef {
	n := int(r.u16("chunk count"))
	if r.err != nil {
		return nil
	}
	*total += n
	// The smallest reference is 1 + 1 + 4 + 32 bytes.
	if *total > maxHeadChunks || n > len(r.b)/38 {
		r.err = fmt.Errorf("head: %d chunks exceed the limit %d or the bytes present", *total, maxHeadChunks)
		return nil
	}
	refs := make([]chunkRef, 0, n)
	for range n {
		c := r.ref(maxPieceSize)
		if r.err != nil {
			return nil
		}
		refs = append(refs, c)
	}
	return refs
}

// ref reads one chunk reference of at most limit bytes.
func (r *headReader) ref(limit uint32) chunkRef {
	l := int(r.u8("chunk name length"))
	var c chunkRef
	c.name = string(r.take(l, "chunk name"))
	c.size = r.u32("chunk size")
	copy(c.sum[:], r.take(sha256.Size, "chunk digest"))
	if r.err == nil && (!chunkNameOK(c.name) || c.size == 0 || c.size > limit) {
		r.err = fmt.Errorf("head: chunk %q of %d bytes (limit %d)", c.name, c.size, limit)
	}
	return c
}

// segment reads a segment of a head of version v; total counts the
// chunks and inline the inline bytes read so far, against their limits.
func (r *headReader) segment(v uint16, total, inline *int) segment {
	var g segment
	g.kind = r.u8("segment kind")
	g.id = r.u64("segment id")
	p := placeChunks
	if v >= headVersion {
		p = r.u8("segment place")
	}
	if r.err != nil {
		return g
	}
	switch p {
	case placeChunks:
		g.pieces = r.refs(total)
	case placeInline:
		n := r.u32("inline segment size")
		if r.err == nil && (n == 0 || n > maxInlineSegment || *inline+int(n) > maxInlineBytes) {
			r.err = fmt.Errorf("head: inline segment of %d bytes after %d (limits %d and %d)", n, *inline, maxInlineSegment, maxInlineBytes)
			return g
		}
		*inline += int(n)
		g.inline = r.take(int(n), "inline segment")
	case placePacked:
		if *total++; *total > maxHeadChunks {
			r.err = fmt.Errorf("head: %d chunks exceed the limit %d", *total, maxHeadChunks)
			return g
		}
		c := r.ref(maxInlineSegment)
		c.key = segmentKey(g.id)
		g.pieces = []chunkRef{c}
	default:
		r.err = fmt.Errorf("head: segment place %d", p)
	}
	if r.err == nil && p != placeChunks && g.kind != segDelta {
		r.err = fmt.Errorf("head: a segment of kind %d kept in place %d", g.kind, p)
	}
	return g
}

// parseHead decodes a head without authenticating it; body is what the
// tag authenticates (see verifyHead). Allocations are bounded by len(b).
func parseHead(b []byte) (h kubeHead, body, tag []byte, err error) {
	if len(b) > maxHeadSize {
		return h, nil, nil, fmt.Errorf("head: %d bytes exceeds the limit %d", len(b), maxHeadSize)
	}
	if len(b) < len(headMagic)+headTagSize {
		return h, nil, nil, fmt.Errorf("head: %d bytes is too short", len(b))
	}
	body, tag = b[:len(b)-headTagSize], b[len(b)-headTagSize:]
	r := &headReader{b: body}
	if string(r.take(8, "magic")) != headMagic {
		return h, nil, nil, errors.New("head: bad magic (not a marblemesh state head)")
	}
	if h.version = r.u16("version"); r.err == nil {
		switch {
		case h.version > headVersion:
			return h, nil, nil, fmt.Errorf("%w: head format version %d, this build reads %d to %d; run the newer Coordinator", ErrNewerFormat, h.version, legacyHeadVersion, headVersion)
		case h.version < legacyHeadVersion:
			return h, nil, nil, fmt.Errorf("head: format version %d, this build reads %d to %d", h.version, legacyHeadVersion, headVersion)
		}
	}
	if f := r.u16("flags"); f != 0 && r.err == nil {
		return h, nil, nil, fmt.Errorf("head: unknown flags 0x%04x", f)
	}
	copy(h.keyCheck[:], r.take(keyCheckSize, "key check"))
	h.generation = r.u64("generation")
	code := r.u8("seal mode")
	if r.err != nil {
		return h, nil, nil, r.err
	}
	if h.mode, err = seal.ModeOfCode(code); err != nil {
		return h, nil, nil, fmt.Errorf("head: %w", err)
	}
	if h.hasKEK() {
		copy(h.kekCheck[:], r.take(keyCheckSize, "key-encryption key check"))
		h.wrappedKey = r.take(wrappedSize, "wrapped data key")
		h.wrappedKEK = r.take(wrappedSize, "wrapped key-encryption key")
	} else if err := parseLegacyEntries(r, &h); err != nil {
		return h, nil, nil, err
	}
	total := 0
	h.recoverySize = r.u32("recovery data size")
	h.recovery = r.refs(&total)
	if r.err == nil {
		var sum int64
		for _, p := range h.recovery {
			sum += int64(p.size)
		}
		if h.recoverySize > maxRecoveryDataSize || sum != int64(h.recoverySize) {
			return h, nil, nil, fmt.Errorf("head: recovery data of %d bytes in chunks of %d bytes (limit %d)", h.recoverySize, sum, maxRecoveryDataSize)
		}
	}
	ns := int(r.u16("segment count"))
	if r.err == nil && ns > maxHeadSegments {
		return h, nil, nil, fmt.Errorf("head: %d segments exceed the limit %d", ns, maxHeadSegments)
	}
	inline := 0
	for i := 0; i < ns && r.err == nil; i++ {
		g := r.segment(h.version, &total, &inline)
		if r.err != nil {
			break
		}
		if (g.kind != segBase || i != 0) && g.kind != segDelta || (len(g.pieces) == 0 && g.inline == nil) || g.id > h.generation {
			return h, nil, nil, fmt.Errorf("head: segment %d of kind %d, id %d, %d chunks", i, g.kind, g.id, len(g.pieces))
		}
		h.segments = append(h.segments, g)
	}
	if r.err != nil {
		return h, nil, nil, r.err
	}
	if len(r.b) != 0 {
		return h, nil, nil, fmt.Errorf("head: %d trailing bytes", len(r.b))
	}
	if len(h.segments) == 0 || h.segments[0].kind != segBase {
		return h, nil, nil, errors.New("head: no base segment")
	}
	return h, body, tag, nil
}

// parseLegacyEntries reads the sealed data keys of a version 1 head.
func parseLegacyEntries(r *headReader, h *kubeHead) error {
	var err error
	n := int(r.u16("sealed key count"))
	if r.err == nil && (n > maxHeadEntries || (n > 0) != h.mode.Seals()) {
		return fmt.Errorf("head: %d sealed keys in seal mode %s", n, h.mode)
	}
	for i := 0; i < n && r.err == nil; i++ {
		var e sealedEntry
		ec := r.u8("sealed key mode")
		copy(e.keyCheck[:], r.take(keyCheckSize, "sealed key check"))
		l := r.u32("sealed key length")
		if r.err == nil && l > maxSealedKeySize {
			return fmt.Errorf("head: sealed key %d of %d bytes exceeds the limit %d", i, l, maxSealedKeySize)
		}
		e.sealed = r.take(int(l), "sealed key")
		if r.err != nil {
			break
		}
		if e.mode, err = seal.ModeOfCode(ec); err != nil || !e.mode.Seals() {
			return fmt.Errorf("head: sealed key %d: seal mode code %d", i, ec)
		}
		h.entries = append(h.entries, e)
	}
	return nil
}

// verifyHead checks the tag of a parsed head under aead.
func verifyHead(aead cipher.AEAD, name string, body, tag []byte) error {
	if _, err := decrypt(aead, tag, headAAD(name, body)); err != nil {
		return errors.New("head: fails authentication")
	}
	return nil
}

// sealSegment encrypts entries as a segment, to be kept in the head or
// cut into pieces.
func sealSegment(aead cipher.AEAD, name string, keyCheck [keyCheckSize]byte, kind byte, id uint64, entries []byte) ([]byte, error) {
	return encrypt(nil, aead, entries, segmentAAD(name, keyCheck, kind, id))
}

// cut splits b into pieces of at most size bytes; empty b gives none.
func cut(b []byte, size int) [][]byte {
	var pieces [][]byte
	for len(b) > 0 {
		n := min(size, len(b))
		pieces = append(pieces, b[:n:n])
		b = b[n:]
	}
	return pieces
}

// checkPiece verifies a chunk's data against its reference.
func checkPiece(ref chunkRef, data []byte) error {
	if len(data) != int(ref.size) {
		return fmt.Errorf("chunk %s is %d bytes, the head says %d", ref.name, len(data), ref.size)
	}
	if sha256.Sum256(data) != ref.sum {
		return fmt.Errorf("chunk %s does not match its digest in the head", ref.name)
	}
	return nil
}

// openSegment decrypts the joined, verified pieces of a segment and
// decodes its entries (deletions only in a delta).
func openSegment(aead cipher.AEAD, name string, keyCheck [keyCheckSize]byte, g segment, sealed []byte) (map[string][]byte, error) {
	plain, err := decrypt(aead, sealed, segmentAAD(name, keyCheck, g.kind, g.id))
	if err != nil {
		return nil, fmt.Errorf("segment %d fails authentication", g.id)
	}
	m, err := decodeEntries(plain, g.kind == segDelta)
	if err != nil {
		return nil, fmt.Errorf("segment %d: %w", g.id, err)
	}
	return m, nil
}

// chunkNameOK reports whether name can be a chunk's: a DNS label-like
// name of lower-case letters, digits and '-', so that it cannot address
// anything but a Secret of the namespace.
func chunkNameOK(name string) bool {
	if name == "" || len(name) > maxChunkName {
		return false
	}
	for _, c := range []byte(name) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
