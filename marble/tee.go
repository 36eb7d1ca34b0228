package marble

import (
	"errors"
	"fmt"
	"strings"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/issuer"
)

// ErrNoTEE is wrapped by IssuerFromEnv (and so ConfigFromEnv) when the
// marble runs outside simulation and finds no source of evidence. The
// error says what was looked for and how to run in simulation.
var ErrNoTEE = errors.New("no trusted execution environment: this marble cannot produce attestation evidence for the Coordinator")

// simulationHint ends every ErrNoTEE message.
const simulationHint = "To run without attestation, set " + EnvSimulation + "=1: simulation is INSECURE, nothing proves what code " +
	"this marble runs, and only a Coordinator in simulation mode admits it"

// IssuerFromEnv chooses the marble's evidence issuer, reading the
// environment through getenv:
//
//   - OE_SIMULATION=1 selects attestation.SimulationIssuer (insecure).
//   - Otherwise Gramine's issuer, when the quote file exists in the folder
//     named by EDG_MARBLE_ATTESTATION_DIR (default /dev/attestation):
//     gramine-sgx with sgx.remote_attestation = "dcap".
//   - Otherwise it fails closed with an error wrapping ErrNoTEE. Linux
//     configfs-tsm reports (TDX, SEV-SNP) are not SGX evidence, so they
//     are not a fallback for SGX marbles.
func IssuerFromEnv(getenv func(string) string) (attestation.Issuer, error) {
	if getenv(EnvSimulation) == "1" {
		return attestation.SimulationIssuer{}, nil
	}
	f, err := issuer.InspectGramine(strings.TrimSpace(getenv(EnvAttestationDir)))
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %w", ErrNoTEE, EnvAttestationDir, err)
	}
	if f.HasQuote {
		return f.Issuer(), nil
	}
	if f.HasKeys {
		return nil, fmt.Errorf("%w: %s/ exists but %s does not (attestation_type %s): Gramine runs without remote attestation "+
			"(gramine-direct, or gramine-sgx with sgx.remote_attestation = \"none\"). Run the marble under gramine-sgx with "+
			"sgx.remote_attestation = \"dcap\". %s", ErrNoTEE, f.KeysPath, f.QuotePath, f.AttestationType(), simulationHint)
	}
	return nil, fmt.Errorf("%w: looked for Gramine's quote file %s (%s names another folder) and found none. "+
		"An SGX marble attests through Gramine's attestation folder (gramine-sgx with sgx.remote_attestation = \"dcap\"); "+
		"configfs-tsm reports (TDX, SEV-SNP) are not SGX evidence and are not used. %s",
		ErrNoTEE, f.QuotePath, EnvAttestationDir, simulationHint)
}
