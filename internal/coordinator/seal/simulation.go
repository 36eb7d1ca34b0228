package seal

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// simulationFormat is the first byte of a value sealed by SimulationSealer.
const simulationFormat byte = 0x53

// simulationTagLabel separates the simulation checksum from any other
// SHA-256 use.
const simulationTagLabel = "marblemesh/seal/simulation/v1"

// SimulationSealer is the sealer used without SGX. It is insecure by
// declaration and offers NO confidentiality: the sealed value contains the
// plaintext as is. It only appends an unkeyed SHA-256 checksum over the
// additional data and the plaintext, so accidental corruption and a wrong
// additionalData are detected; anyone able to write the sealed value can
// forge it.
//
// Sealed format: 0x53 ‖ plaintext ‖ SHA-256(label ‖ len(ad) ‖ ad ‖ plaintext).
type SimulationSealer struct{}

var _ Sealer = SimulationSealer{}

// Seal returns plaintext followed by a checksum bound to additionalData.
func (SimulationSealer) Seal(plaintext, additionalData []byte) ([]byte, error) {
	out := make([]byte, 0, 1+len(plaintext)+sha256.Size)
	out = append(out, simulationFormat)
	out = append(out, plaintext...)
	tag := simulationTag(plaintext, additionalData)
	return append(out, tag[:]...), nil
}

// Unseal checks the checksum against additionalData and returns a copy of
// the plaintext.
func (SimulationSealer) Unseal(sealed, additionalData []byte) ([]byte, error) {
	if len(sealed) < 1+sha256.Size {
		return nil, fmt.Errorf("simulation unseal: %d bytes is shorter than the minimum %d: %w",
			len(sealed), 1+sha256.Size, ErrMalformed)
	}
	if sealed[0] != simulationFormat {
		return nil, fmt.Errorf("simulation unseal: format byte 0x%02x is not 0x%02x: %w",
			sealed[0], simulationFormat, ErrMalformed)
	}
	body := sealed[1 : len(sealed)-sha256.Size]
	want := simulationTag(body, additionalData)
	if subtle.ConstantTimeCompare(want[:], sealed[len(sealed)-sha256.Size:]) != 1 {
		return nil, fmt.Errorf("simulation unseal: %w", ErrAuthentication)
	}
	return append([]byte{}, body...), nil
}

// ID is all zeros: every SimulationSealer unseals every other's values.
func (SimulationSealer) ID() ID { return ID{} }

// Insecure is always true.
func (SimulationSealer) Insecure() bool { return true }

func simulationTag(plaintext, additionalData []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(simulationTagLabel))
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(additionalData)))
	h.Write(n[:])
	h.Write(additionalData)
	h.Write(plaintext)
	var tag [sha256.Size]byte
	h.Sum(tag[:0])
	return tag
}
