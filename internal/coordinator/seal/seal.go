// Package seal protects the Coordinator's data key so that only the same
// enclave identity on the same platform can read it back.
package seal

// Sealer seals and unseals small secrets (the data key).
type Sealer interface {
	// Seal protects plaintext; additionalData is bound but not encrypted.
	Seal(plaintext, additionalData []byte) ([]byte, error)
	// Unseal reverses Seal; it fails if the sealed value, the additional
	// data or the platform identity differ.
	Unseal(sealed, additionalData []byte) ([]byte, error)
	// Insecure reports whether sealing offers no protection (simulation).
	Insecure() bool
	// ID names the sealing identity without revealing anything secret:
	// two sealers with the same ID unseal each other's values. It lets
	// several Coordinators keep one sealed value each in a shared place.
	ID() ID
}

// IDSize is the size in bytes of a sealing identity's ID.
const IDSize = 16

// ID names a sealing identity (see Sealer.ID).
type ID [IDSize]byte
