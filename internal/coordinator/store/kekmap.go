package store

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// ErrNeedKey is wrapped by KubeStore.Load when the state exists but this
// platform holds no usable sealed key-encryption key for it: a running
// Coordinator sharing the state can hand the key over (see KeySharer),
// otherwise the owners recover it. It wraps ErrUnseal, so a Coordinator
// that knows nothing of key sharing enters recovery.
var ErrNeedKey = fmt.Errorf("%w: this platform holds no sealed key-encryption key of the state", ErrUnseal)

// KeySharer is a store whose state can be opened on another platform with
// a key-encryption key handed over by a Coordinator that has it open, and
// that refuses to open state older than a generation it was told about.
type KeySharer interface {
	// KeyEncryptionKey returns a copy of the open state's key-encryption
	// key and the highest generation the store has read or written; ok is
	// false when no state is open.
	KeyEncryptionKey() (kek []byte, generation uint64, ok bool)
	// LoadWithKEK opens the state with kek, refusing (ErrRollback) a head
	// older than minGeneration, and seals kek for this platform. It fails
	// with an error wrapping ErrUnseal if kek does not open the state.
	LoadWithKEK(ctx context.Context, kek []byte, minGeneration uint64) (map[string][]byte, error)
	// RaiseGenerationFloor makes later loads refuse (ErrRollback) state
	// older than gen.
	RaiseGenerationFloor(gen uint64)
}

var _ KeySharer = (*KubeStore)(nil)

// DefaultKEKMapName is the default name of the ConfigMap that holds the
// key-encryption key sealed for each platform.
const DefaultKEKMapName = "marblerun-sealed-kek"

// Format and limits of the KEK map (see the package documentation).
const (
	kekRecordMagic   = "mmkekrec"
	kekRecordVersion = 1
	kekCheckLabel    = "marblemesh/store/kek-check/v1"
	objectKEKMap     = "kek-map"
	// maxSealedKEKSize bounds a sealed key-encryption key; maxKEKRecord a
	// record; maxKEKEntries the entries of the map (one per sealing
	// identity: per node and seal mode).
	maxSealedKEKSize = 512
	kekRecordFixed   = 8 + 2 + 1 + keyCheckSize + 2
	maxKEKRecord     = kekRecordFixed + maxSealedKEKSize
	maxKEKEntries    = 256
	// maxKEKMapAttempts bounds the compare-and-swap attempts of one change
	// of the map.
	maxKEKMapAttempts = 8
)

// CheckKEKMapName tells whether name can name the KEK map: a DNS
// subdomain, as a ConfigMap's name must be.
func CheckKEKMapName(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("key-encryption key map name %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// kekCheckOf returns a value that identifies kek without revealing it.
func kekCheckOf(kek []byte) [keyCheckSize]byte {
	mac := hmac.New(sha256.New, kek)
	mac.Write([]byte(kekCheckLabel))
	var kc [keyCheckSize]byte
	copy(kc[:], mac.Sum(nil))
	return kc
}

// kekRecord is one entry of the KEK map: a key-encryption key sealed by
// one sealing identity for one seal mode.
type kekRecord struct {
	mode     seal.Mode
	kekCheck [keyCheckSize]byte
	sealed   []byte
}

// kekRecordAAD binds a sealed key-encryption key to the record format,
// its key check, its seal mode and the state.
func kekRecordAAD(code byte, kekCheck [keyCheckSize]byte, name string) []byte {
	b := make([]byte, 0, 8+2+keyCheckSize+1+2+len(name))
	b = append(b, kekRecordMagic...)
	b = binary.LittleEndian.AppendUint16(b, kekRecordVersion)
	b = append(b, kekCheck[:]...)
	b = append(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name))) //nolint:gosec // G115: object names are at most 253 bytes
	return append(b, name...)
}

// encodeKEKRecord returns the map value of r.
func encodeKEKRecord(r kekRecord) ([]byte, error) {
	code, err := r.mode.Code()
	if err != nil || !r.mode.Seals() {
		return nil, fmt.Errorf("key-encryption key record: seal mode %q", r.mode)
	}
	if len(r.sealed) > maxSealedKEKSize {
		return nil, fmt.Errorf("key-encryption key record: sealed key of %d bytes exceeds the limit %d", len(r.sealed), maxSealedKEKSize)
	}
	b := make([]byte, 0, kekRecordFixed+len(r.sealed))
	b = append(b, kekRecordMagic...)
	b = binary.LittleEndian.AppendUint16(b, kekRecordVersion)
	b = append(b, code)
	b = append(b, r.kekCheck[:]...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(r.sealed))) //nolint:gosec // G115: at most maxSealedKEKSize, checked above
	return append(b, r.sealed...), nil
}

// parseKEKRecord decodes a map value without unsealing it. The record is
// checked against maxKEKRecord before anything is allocated.
func parseKEKRecord(b []byte) (kekRecord, error) {
	var r kekRecord
	if len(b) > maxKEKRecord {
		return r, fmt.Errorf("key-encryption key record of %d bytes exceeds the limit %d", len(b), maxKEKRecord)
	}
	if len(b) < kekRecordFixed || string(b[:8]) != kekRecordMagic {
		return r, errors.New("key-encryption key record: too short or bad magic")
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != kekRecordVersion {
		return r, fmt.Errorf("key-encryption key record: format version %d, this build reads %d", v, kekRecordVersion)
	}
	mode, err := seal.ModeOfCode(b[10])
	if err != nil || !mode.Seals() {
		return r, fmt.Errorf("key-encryption key record: seal mode code %d", b[10])
	}
	r.mode = mode
	copy(r.kekCheck[:], b[11:11+keyCheckSize])
	n := int(binary.LittleEndian.Uint16(b[11+keyCheckSize:]))
	if rest := b[kekRecordFixed:]; n != len(rest) || n > maxSealedKEKSize {
		return r, fmt.Errorf("key-encryption key record: sealed key of %d bytes, %d present", n, len(rest))
	}
	r.sealed = bytes.Clone(b[kekRecordFixed:])
	return r, nil
}

// kekKeyCheckLen is how many bytes of the KEK check name an entry's key.
const kekKeyCheckLen = 8

// kekMapKey is the map key of the entry of a sealing identity for the
// key-encryption key named kekCheck: "<hex id>.<hex of the first 8 bytes
// of the KEK check>". Writers of one identity racing with different keys
// thus never replace each other's entries.
func kekMapKey(id seal.ID, kekCheck [keyCheckSize]byte) string {
	return hex.EncodeToString(id[:]) + "." + hex.EncodeToString(kekCheck[:kekKeyCheckLen])
}

// kekEntryOK tells whether the entry stored under key is readable and
// stored under the key its record calls for. Entries that fail this
// (other formats among them) open nothing and may be removed by anyone.
func kekEntryOK(key string, value []byte) bool {
	idHex, checkHex, ok := strings.Cut(key, ".")
	if !ok || len(idHex) != 2*len(seal.ID{}) || len(checkHex) != 2*kekKeyCheckLen {
		return false
	}
	if _, err := hex.DecodeString(idHex); err != nil {
		return false
	}
	r, err := parseKEKRecord(value)
	return err == nil && checkHex == hex.EncodeToString(r.kekCheck[:kekKeyCheckLen])
}

func (s *KubeStore) configMaps() typedcorev1.ConfigMapInterface {
	return s.client.CoreV1().ConfigMaps(s.ns)
}

// checkKEKMap bounds a map read from the API before any entry is decoded.
func checkKEKMap(cm *corev1.ConfigMap) error {
	if n := len(cm.BinaryData) + len(cm.Data); n > maxKEKEntries {
		return fmt.Errorf("key-encryption key map %s has %d entries, more than the limit %d", cm.Name, n, maxKEKEntries)
	}
	for k, v := range cm.BinaryData {
		if len(v) > maxKEKRecord {
			return fmt.Errorf("key-encryption key map %s: entry %.40q of %d bytes exceeds the limit %d", cm.Name, k, len(v), maxKEKRecord)
		}
	}
	return nil
}

// sealedKEK returns the key-encryption key of h from this platform's
// entry of the map, for h's seal mode. Every failure wraps ErrNeedKey.
func (s *KubeStore) sealedKEK(ctx context.Context, h kubeHead) ([]byte, error) {
	if !h.mode.Seals() {
		return nil, fmt.Errorf("%w: the state's seal mode is %s, so no platform keeps its key", ErrNeedKey, h.mode)
	}
	sealer := s.sealers[h.mode]
	if sealer == nil {
		return nil, fmt.Errorf("%w: the state is sealed in seal mode %s, for which this Coordinator has no sealer", ErrNeedKey, h.mode)
	}
	cm, err := s.configMaps().Get(ctx, s.kekMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: the key-encryption key map %s does not exist", ErrNeedKey, s.kekMap)
	}
	if err != nil {
		return nil, fmt.Errorf("read the key-encryption key map: %w", err)
	}
	if err := checkKEKMap(cm); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNeedKey, err)
	}
	raw, ok := cm.BinaryData[kekMapKey(sealer.ID(), h.kekCheck)]
	if !ok {
		return nil, fmt.Errorf("%w: the key-encryption key map has no entry of the state's key-encryption key for this platform's seal identity", ErrNeedKey)
	}
	r, err := parseKEKRecord(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNeedKey, err)
	}
	if r.mode != h.mode || r.kekCheck != h.kekCheck {
		return nil, fmt.Errorf("%w: this platform's entry for the state's key-encryption key is of another key or seal mode", ErrNeedKey)
	}
	code, _ := h.mode.Code()
	kek, err := sealer.Unseal(r.sealed, kekRecordAAD(code, h.kekCheck, s.name))
	if err != nil {
		return nil, fmt.Errorf("%w: unseal the key-encryption key: %w", ErrNeedKey, err)
	}
	if len(kek) != dataKeySize || kekCheckOf(kek) != h.kekCheck {
		return nil, fmt.Errorf("%w: the unsealed key-encryption key does not match the head", ErrNeedKey)
	}
	return kek, nil
}

// putKEKEntry seals kek for this platform in mode and adds it as this
// platform's entry for kek to the map, keeping every other entry. It does
// nothing in a mode that does not seal or when the entry is already there,
// and reports whether it added the entry.
func (s *KubeStore) putKEKEntry(ctx context.Context, kek []byte, mode seal.Mode, inForce *[keyCheckSize]byte) (bool, error) {
	if !mode.Seals() {
		return false, nil
	}
	sealer := s.sealers[mode]
	if sealer == nil {
		return false, fmt.Errorf("seal the key-encryption key: this Coordinator has no sealer for seal mode %s", mode)
	}
	code, err := mode.Code()
	if err != nil {
		return false, err
	}
	kc := kekCheckOf(kek)
	key := kekMapKey(sealer.ID(), kc)
	var value []byte
	added := false
	err = s.changeKEKMap(ctx, func(entries map[string][]byte) (bool, error) {
		added = false
		if r, err := parseKEKRecord(entries[key]); err == nil && r.mode == mode && r.kekCheck == kc {
			return false, nil
		}
		if value == nil {
			sealed, err := sealer.Seal(kek, kekRecordAAD(code, kc, s.name))
			if err != nil {
				return false, fmt.Errorf("seal the key-encryption key in seal mode %s: %w", mode, err)
			}
			if value, err = encodeKEKRecord(kekRecord{mode: mode, kekCheck: kc, sealed: sealed}); err != nil {
				return false, err
			}
		}
		if _, ok := entries[key]; !ok && len(entries) >= maxKEKEntries {
			if pruned := pruneKEKEntries(entries, kc, inForce); pruned > 0 {
				s.log.Warn("store: the key-encryption key map was full; removed the entries of keys that neither the state in force nor this write uses",
					"map", s.kekMap, "removed", pruned)
			}
		}
		if _, ok := entries[key]; !ok && len(entries) >= maxKEKEntries {
			return false, fmt.Errorf("%w: the key-encryption key map %s is full (%d entries, the limit): "+
				"entries of key-encryption keys that no head uses must be removed from it", ErrKEKMapFull, s.kekMap, len(entries))
		}
		entries[key] = value
		added = true
		return true, nil
	})
	return added, err
}

// pruneKEKEntries removes from a full map the entries that cannot be read
// and those of key-encryption keys other than kc (the one being added) and
// inForce (the one of the head in force, when known): leftovers of writers
// that crashed or failed to clean up after a lost race. It returns how
// many it removed.
func pruneKEKEntries(entries map[string][]byte, kc [keyCheckSize]byte, inForce *[keyCheckSize]byte) int {
	n := 0
	for k, v := range entries {
		r, err := parseKEKRecord(v)
		keep := err == nil && kekEntryOK(k, v) && (r.kekCheck == kc || (inForce != nil && r.kekCheck == *inForce))
		if !keep {
			delete(entries, k)
			n++
		}
	}
	return n
}

// dropOwnKEKEntry removes this platform's entry for the key-encryption key
// named kekCheck in mode: a new key whose head write lost a race, which no
// head uses and no other writer made.
func (s *KubeStore) dropOwnKEKEntry(ctx context.Context, kekCheck [keyCheckSize]byte, mode seal.Mode) {
	sealer := s.sealers[mode]
	if !mode.Seals() || sealer == nil {
		return
	}
	key := kekMapKey(sealer.ID(), kekCheck)
	err := s.changeKEKMap(ctx, func(entries map[string][]byte) (bool, error) {
		_, ok := entries[key]
		delete(entries, key)
		return ok, nil
	})
	if err != nil {
		s.log.Warn("store: could not remove this platform's entry of a key-encryption key that lost a race", "map", s.kekMap, "err", err)
	}
}

// dropReplacedKEK removes the entries of the key-encryption key named
// replaced, of a head this store has replaced, and entries that cannot be
// read. A key never comes back once its head is replaced, so no head
// written later can need them; entries of any other key are kept, since
// they may open a head written after this store's.
func (s *KubeStore) dropReplacedKEK(ctx context.Context, replaced [keyCheckSize]byte, known bool) error {
	return s.changeKEKMap(ctx, func(entries map[string][]byte) (bool, error) {
		changed := false
		for k, v := range entries {
			if !kekEntryOK(k, v) {
				delete(entries, k)
				changed = true
				continue
			}
			if r, _ := parseKEKRecord(v); known && r.kekCheck == replaced {
				delete(entries, k)
				changed = true
			}
		}
		return changed, nil
	})
}

// changeKEKMap applies change to the map's entries by compare-and-swap on
// its resourceVersion, starting over when another writer changed it
// first, at most maxKEKMapAttempts times. change reports whether it
// changed anything; it must be safe to call again.
func (s *KubeStore) changeKEKMap(ctx context.Context, change func(entries map[string][]byte) (bool, error)) error {
	for range maxKEKMapAttempts {
		cm, err := s.configMaps().Get(ctx, s.kekMap, metav1.GetOptions{})
		exists := err == nil
		switch {
		case apierrors.IsNotFound(err):
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: s.kekMap}}
		case err != nil:
			return fmt.Errorf("read the key-encryption key map: %w", err)
		}
		if err := checkKEKMap(cm); err != nil {
			return err
		}
		entries := make(map[string][]byte, len(cm.BinaryData)+1)
		for k, v := range cm.BinaryData {
			entries[k] = v
		}
		changed, err := change(entries)
		if err != nil {
			return err
		}
		if !changed {
			return nil
		}
		cm.BinaryData = entries
		cm.Labels = map[string]string{LabelManagedBy: ManagedByValue, LabelState: s.name, LabelObject: objectKEKMap}
		if exists {
			_, err = s.configMaps().Update(ctx, cm, metav1.UpdateOptions{})
		} else {
			_, err = s.configMaps().Create(ctx, cm, metav1.CreateOptions{})
		}
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || (exists && apierrors.IsNotFound(err)) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write the key-encryption key map: %w", err)
		}
		return nil
	}
	return fmt.Errorf("write the key-encryption key map: changed by other writers during each of %d attempts", maxKEKMapAttempts)
}
