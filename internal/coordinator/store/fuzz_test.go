package store

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

func fuzzAEAD(t testing.TB) (cipher.AEAD, [keyCheckSize]byte) {
	t.Helper()
	key := bytes.Repeat([]byte{0x42}, dataKeySize)
	aead, err := newAEAD(key)
	if err != nil {
		t.Fatal(err)
	}
	return aead, keyCheckOf(key)
}

// boundedAllocs fails if f allocates more than a small multiple of n
// bytes plus a constant: decoders must not trust length fields.
func boundedAllocs(t *testing.T, n int, f func()) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	limit := uint64(64*n + 1<<20)
	if got := after.TotalAlloc - before.TotalAlloc; got > limit {
		t.Fatalf("decoding %d bytes allocated %d bytes (limit %d)", n, got, limit)
	}
}

func FuzzSnapshot(f *testing.F) {
	aead, kc := fuzzAEAD(f)
	for _, st := range []map[string][]byte{{}, kv("a", "1", "b", ""), bigState(8, 20)} {
		b, err := encodeSnapshot(snapshotHeader{generation: 3, keyCheck: kc, mode: seal.ModeUniqueKey, recovery: []byte("r")}, aead, st)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(snapshotMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		boundedAllocs(t, len(b), func() {
			h, aad, sealed, err := parseSnapshot(b)
			if err != nil {
				return
			}
			if len(aad)+len(sealed) != len(b) || !bytes.Equal(aad, b[:len(aad)]) {
				t.Fatalf("parseSnapshot split %d bytes into %d and %d", len(b), len(aad), len(sealed))
			}
			if len(h.legacySealedKey) > maxSealedKeySize || len(h.recovery) > maxRecoveryDataSize {
				t.Fatal("parseSnapshot returned a field above its limit")
			}
			state, err := openSnapshot(aead, aad, sealed)
			if err != nil {
				return
			}
			if h.version == legacySnapshotVersion {
				h.mode = seal.ModeProductKey // a legacy snapshot is rewritten in the default mode
			}
			again, err := encodeSnapshot(h, aead, state)
			if err != nil {
				t.Fatal(err)
			}
			h2, aad2, sealed2, err := parseSnapshot(again)
			if err != nil {
				t.Fatal(err)
			}
			state2, err := openSnapshot(aead, aad2, sealed2)
			if err != nil || h2.generation != h.generation || !equalStates(state, state2) {
				t.Fatalf("re-encoded snapshot differs: %v", err)
			}
		})
	})
}

func FuzzJournal(f *testing.F) {
	aead, _ := fuzzAEAD(f)
	const gen = 5
	j := encodeJournalHeader(gen)
	f.Add(bytes.Clone(j))
	for i, ch := range []map[string][]byte{kv("a", "1"), kv("a", "<nil>", "b", ""), kv("c", "333")} {
		rec, err := encodeRecord(aead, gen, uint64(i+1), encodeEntries(ch))
		if err != nil {
			f.Fatal(err)
		}
		j = append(j, rec...)
		f.Add(bytes.Clone(j))
	}
	f.Add(append(bytes.Clone(j), make([]byte, 40)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		boundedAllocs(t, len(b), func() {
			g, err := parseJournalHeader(b)
			if err != nil {
				return
			}
			state := map[string][]byte{}
			r, err := replayJournal(b, g, aead, state)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrUnseal) {
					t.Fatalf("replay error does not wrap ErrCorrupt and ErrUnseal: %v", err)
				}
				return
			}
			if r.end < journalHeaderSize || r.end > len(b) {
				t.Fatalf("replay end %d outside [%d, %d]", r.end, journalHeaderSize, len(b))
			}
			// The valid prefix replays to the same state, completely.
			again := map[string][]byte{}
			r2, err := replayJournal(b[:r.end], g, aead, again)
			if err != nil || r2.end != r.end || r2.records != r.records || !equalStates(state, again) {
				t.Fatalf("replaying the valid prefix differs: %v", err)
			}
		})
	})
}

func FuzzEntries(f *testing.F) {
	f.Add(encodeEntries(kv("a", "1", "b", "<nil>", "", "")))
	f.Add(encodeEntries(map[string][]byte{}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		boundedAllocs(t, len(b), func() {
			m, err := decodeEntries(b, true)
			if err != nil {
				return
			}
			back, err := decodeEntries(encodeEntries(m), true)
			if err != nil {
				t.Fatalf("re-encoded entries fail to decode: %v", err)
			}
			if len(back) != len(m) {
				t.Fatalf("round trip changed %d entries into %d", len(m), len(back))
			}
			for k, v := range m {
				w, ok := back[k]
				if !ok || (v == nil) != (w == nil) || !bytes.Equal(v, w) {
					t.Fatalf("round trip changed entry %q", k)
				}
			}
		})
	})
}

func FuzzSealedKey(f *testing.F) {
	_, kc := fuzzAEAD(f)
	one, err := encodeSealedKey([]sealedEntry{{mode: seal.ModeProductKey, keyCheck: kc, sealed: []byte("sealed key")}})
	if err != nil {
		f.Fatal(err)
	}
	two, err := encodeSealedKey([]sealedEntry{{mode: seal.ModeProductKey, keyCheck: kc, sealed: []byte("a")}, {mode: seal.ModeUniqueKey, keyCheck: kc, sealed: nil}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(one)
	f.Add(two)
	f.Add([]byte(sealedKeyMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		boundedAllocs(t, len(b), func() {
			entries, err := parseSealedKey(b)
			if err != nil {
				return
			}
			if len(entries) == 0 || len(entries) > maxSealedKeyEntries {
				t.Fatalf("parseSealedKey returned %d entries", len(entries))
			}
			again, err := encodeSealedKey(entries)
			if err != nil {
				t.Fatalf("re-encoding parsed entries: %v", err)
			}
			if !bytes.Equal(again, b) {
				t.Fatal("a parsed sealed_key file does not re-encode to the same bytes")
			}
		})
	})
}

// kubeFuzzHead returns an authentic head listing a base, a delta and
// recovery data; with inline, also deltas kept in the head and one moved
// from there into a packed chunk object.
func kubeFuzzHead(t testing.TB, aead cipher.AEAD, kc [keyCheckSize]byte, inline bool) []byte {
	t.Helper()
	ref := func(name string, size uint32) chunkRef {
		return chunkRef{name: name, size: size, sum: sha256.Sum256([]byte(name))}
	}
	h := kubeHead{
		keyCheck: kc, generation: 9, mode: seal.ModeUniqueKey,
		kekCheck: kc, wrappedKey: bytes.Repeat([]byte{1}, wrappedSize), wrappedKEK: bytes.Repeat([]byte{2}, wrappedSize),
		recoverySize: 10, recovery: []chunkRef{ref("s-7-r-0", 10)},
		segments: []segment{
			{kind: segBase, id: 3, pieces: []chunkRef{ref("s-3-a-0", 100), ref("s-3-b-1", 20)}},
			{kind: segDelta, id: 7, pieces: []chunkRef{ref("s-7-c-0", 40)}},
		},
	}
	if inline {
		packed := ref("s-8-d-p", 30)
		packed.key = segmentKey(8)
		h.segments = append(h.segments,
			segment{kind: segDelta, id: 8, pieces: []chunkRef{packed}},
			segment{kind: segDelta, id: 9, inline: bytes.Repeat([]byte{9}, 50)})
	}
	b, err := encodeHead(h, aead, "s")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzKubeHead(f *testing.F) {
	aead, kc := fuzzAEAD(f)
	f.Add(kubeFuzzHead(f, aead, kc, false))
	f.Add(kubeFuzzHead(f, aead, kc, true))
	disabled, err := encodeHead(kubeHead{keyCheck: kc, generation: 1, mode: seal.ModeDisabled,
		wrappedKey: make([]byte, wrappedSize), wrappedKEK: make([]byte, wrappedSize),
		segments: []segment{{kind: segBase, id: 1, pieces: []chunkRef{{name: "x", size: 1}}}}}, aead, "s")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(disabled)
	f.Add(encodeLegacyHead(f, kubeHead{keyCheck: kc, generation: 7, mode: seal.ModeProductKey,
		entries:  []sealedEntry{{mode: seal.ModeProductKey, keyCheck: kc, sealed: []byte("sealed key")}},
		segments: []segment{{kind: segBase, id: 1, pieces: []chunkRef{{name: "x", size: 1}}}}}, aead, "s"))
	f.Add([]byte(headMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		boundedAllocs(t, len(b), func() {
			h, body, tag, err := parseHead(b)
			if err != nil {
				return
			}
			if len(body)+len(tag) != len(b) || h.chunkCount() > maxHeadChunks || len(h.entries) > maxHeadEntries ||
				len(h.segments) > maxHeadSegments || h.inlineBytes() > maxInlineBytes {
				t.Fatalf("parseHead accepted a head beyond its limits")
			}
			if h.version < headVersion && h.inlineBytes()+h.inlineSegments() > 0 {
				t.Fatalf("a version %d head keeps segments inline", h.version)
			}
			if err := checkSegments(h.segments); err != nil {
				t.Fatalf("parseHead accepted segments that are not written: %v", err)
			}
			if verifyHead(aead, "s", body, tag) != nil {
				return
			}
			if h.version == legacyHeadVersion {
				return
			}
			// An authentic head re-encodes to one that parses the same.
			again, err := encodeHead(h, aead, "s")
			if err != nil {
				t.Fatal(err)
			}
			h2, _, _, err := parseHead(again)
			if err != nil || h2.generation != h.generation || h2.chunkCount() != h.chunkCount() || h2.mode != h.mode ||
				h2.kekCheck != h.kekCheck || !bytes.Equal(h2.wrappedKey, h.wrappedKey) || !bytes.Equal(h2.wrappedKEK, h.wrappedKEK) ||
				len(h2.segments) != len(h.segments) {
				t.Fatalf("re-encoded head differs: %v", err)
			}
			for i, g := range h.segments {
				if !g.sameAs(h2.segments[i]) || g.place() != h2.segments[i].place() {
					t.Fatalf("re-encoded segment %d differs", i)
				}
			}
		})
	})
}

func FuzzKubeSegment(f *testing.F) {
	aead, kc := fuzzAEAD(f)
	for _, st := range []map[string][]byte{{}, kv("a", "1", "b", "<nil>"), bigState(8, 20)} {
		sealed, err := sealSegment(aead, "s", kc, segDelta, 4, encodeEntries(st))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sealed, byte(segDelta))
	}
	f.Add([]byte{}, byte(segBase))
	f.Fuzz(func(t *testing.T, b []byte, kind byte) {
		boundedAllocs(t, len(b), func() {
			m, err := openSegment(aead, "s", kc, segment{kind: kind, id: 4}, b)
			if err != nil {
				return
			}
			if kind != segDelta {
				t.Fatal("a delta opened as another kind")
			}
			if err := checkPiece(chunkRef{name: "p", size: uint32(len(b)), sum: sha256.Sum256(b)}, b); err != nil { //nolint:gosec // G115: test input
				t.Fatal(err)
			}
			_ = m
		})
	})
}

// TestKubeHeadRefusesChunkNames checks that a head is never written with a
// chunk name that its one-byte length field or parseHead could not carry.
func TestKubeHeadRefusesChunkNames(t *testing.T) {
	aead, kc := fuzzAEAD(t)
	for _, name := range []string{"", strings.Repeat("a", maxChunkName+1), "Upper", "a/b"} {
		h := kubeHead{keyCheck: kc, generation: 1, mode: seal.ModeDisabled,
			wrappedKey: make([]byte, wrappedSize), wrappedKEK: make([]byte, wrappedSize),
			segments: []segment{{kind: segBase, id: 1, pieces: []chunkRef{{name: name, size: 1}}}}}
		if _, err := encodeHead(h, aead, "s"); err == nil || !strings.Contains(err.Error(), "chunk name") {
			t.Errorf("chunk name %q: expected a refusal, found %v", name, err)
		}
	}
}
