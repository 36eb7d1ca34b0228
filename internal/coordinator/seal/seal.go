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
}
