package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// KeySize is the size in bytes of an AESGCMSealer key (AES-256).
const KeySize = 32

// aesgcmIDLabel separates the derivation of an AESGCMSealer's ID from
// every other use of its key.
const aesgcmIDLabel = "marblemesh/seal/aesgcm-identity/v1"

// aesgcmFormat is the first byte of a value sealed by AESGCMSealer.
const aesgcmFormat byte = 0x41

// Sentinel errors of this package; errors returned by the sealers wrap one
// of them.
var (
	// ErrInvalidKey means the sealing key has the wrong size.
	ErrInvalidKey = errors.New("invalid sealing key")
	// ErrMalformed means the sealed value is too short or has an unknown
	// format.
	ErrMalformed = errors.New("malformed sealed value")
	// ErrAuthentication means the sealed value, the additional data or the
	// key differ from those used to seal.
	ErrAuthentication = errors.New("sealed value fails authentication")
)

// AESGCMSealer seals with AES-256-GCM under a caller-provided 32-byte key,
// a random 96-bit nonce per value and the additional data bound as GCM
// additional data. It is the building block for a key derived from the
// platform (an SGX seal key); it is only as secret as Key.
//
// Sealed format: 0x41 ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes). The
// format byte is authenticated together with additionalData.
//
// The zero value has no key and fails every call with ErrInvalidKey.
type AESGCMSealer struct {
	// Key is the AES-256 key; it must be KeySize bytes.
	Key []byte
}

var _ Sealer = AESGCMSealer{}

// NewAESGCMSealer returns a sealer holding a copy of key.
func NewAESGCMSealer(key []byte) (AESGCMSealer, error) {
	if len(key) != KeySize {
		return AESGCMSealer{}, fmt.Errorf("new AES-GCM sealer: key is %d bytes, want %d: %w",
			len(key), KeySize, ErrInvalidKey)
	}
	return AESGCMSealer{Key: append([]byte{}, key...)}, nil
}

// Seal encrypts plaintext and authenticates it together with
// additionalData.
func (s AESGCMSealer) Seal(plaintext, additionalData []byte) ([]byte, error) {
	aead, err := s.aead()
	if err != nil {
		return nil, fmt.Errorf("AES-GCM seal: %w", err)
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("AES-GCM seal: read nonce: %w", err)
	}
	out := make([]byte, 0, 1+len(nonce)+len(plaintext)+aead.Overhead())
	out = append(append(out, aesgcmFormat), nonce...)
	return aead.Seal(out, nonce, plaintext, boundData(additionalData)), nil
}

// Unseal decrypts a value produced by Seal with the same key and
// additionalData.
func (s AESGCMSealer) Unseal(sealed, additionalData []byte) ([]byte, error) {
	aead, err := s.aead()
	if err != nil {
		return nil, fmt.Errorf("AES-GCM unseal: %w", err)
	}
	minLen := 1 + aead.NonceSize() + aead.Overhead()
	if len(sealed) < minLen {
		return nil, fmt.Errorf("AES-GCM unseal: %d bytes is shorter than the minimum %d: %w",
			len(sealed), minLen, ErrMalformed)
	}
	if sealed[0] != aesgcmFormat {
		return nil, fmt.Errorf("AES-GCM unseal: format byte 0x%02x is not 0x%02x: %w",
			sealed[0], aesgcmFormat, ErrMalformed)
	}
	nonce := sealed[1 : 1+aead.NonceSize()]
	plaintext, err := aead.Open(nil, nonce, sealed[1+aead.NonceSize():], boundData(additionalData))
	if err != nil {
		return nil, fmt.Errorf("AES-GCM unseal: %w", ErrAuthentication)
	}
	return plaintext, nil
}

// ID is the first IDSize bytes of HMAC-SHA256(Key, label): sealers with
// the same key have the same ID, and the ID reveals nothing of the key.
// A sealer without a valid key has the zero ID.
func (s AESGCMSealer) ID() ID {
	var id ID
	if len(s.Key) != KeySize {
		return id
	}
	mac := hmac.New(sha256.New, s.Key)
	mac.Write([]byte(aesgcmIDLabel))
	copy(id[:], mac.Sum(nil))
	return id
}

// Insecure is false: the protection is that of Key.
func (AESGCMSealer) Insecure() bool { return false }

func (s AESGCMSealer) aead() (cipher.AEAD, error) {
	if len(s.Key) != KeySize {
		return nil, fmt.Errorf("key is %d bytes, want %d: %w", len(s.Key), KeySize, ErrInvalidKey)
	}
	block, err := aes.NewCipher(s.Key)
	if err != nil {
		return nil, fmt.Errorf("create AES cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("create GCM: %w", err)
	}
	return aead, nil
}

// boundData is the GCM additional data: the format byte followed by the
// caller's additional data.
func boundData(additionalData []byte) []byte {
	ad := make([]byte, 0, 1+len(additionalData))
	ad = append(ad, aesgcmFormat)
	return append(ad, additionalData...)
}
