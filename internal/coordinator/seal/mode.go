package seal

import "fmt"

// Mode is how the Coordinator's data key is kept across restarts, with
// MarbleRun's names. It is chosen by the manifest's Config.SealMode and,
// before a manifest is set or when it leaves the mode empty, by the
// Coordinator's configuration.
type Mode string

// Seal modes.
const (
	// ModeProductKey seals with a key bound to the enclave's signer
	// (Gramine's keys/_sgx_mrsigner): later versions by the same signer
	// can unseal.
	ModeProductKey Mode = "ProductKey"
	// ModeUniqueKey seals with a key bound to this exact enclave
	// (keys/_sgx_mrenclave).
	ModeUniqueKey Mode = "UniqueKey"
	// ModeDisabled seals nothing: the data key is kept in memory only, so
	// every start needs the owners' recovery keys.
	ModeDisabled Mode = "Disabled"
)

// Code returns the one-byte code of m in the store's files.
func (m Mode) Code() (byte, error) {
	switch m {
	case ModeProductKey:
		return 1, nil
	case ModeUniqueKey:
		return 2, nil
	case ModeDisabled:
		return 3, nil
	}
	return 0, fmt.Errorf("unknown seal mode %q (want %s, %s or %s)", string(m), ModeProductKey, ModeUniqueKey, ModeDisabled)
}

// ModeOfCode reverses Code.
func ModeOfCode(c byte) (Mode, error) {
	switch c {
	case 1:
		return ModeProductKey, nil
	case 2:
		return ModeUniqueKey, nil
	case 3:
		return ModeDisabled, nil
	}
	return "", fmt.Errorf("unknown seal mode code %d", c)
}

// Seals reports whether m keeps a sealed data key (every mode but
// Disabled).
func (m Mode) Seals() bool { return m != ModeDisabled }
