package cli

import (
	"errors"
	"fmt"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/attestation/sgx"
)

// EnvPCCSURL names the PCCS (or Intel's PCS) from which the CLI fetches the
// collateral it needs to verify the Coordinator's SGX quote.
const EnvPCCSURL = "MARBLERUN_PCCS_URL"

// DefaultVerifier returns the SGX DCAP verifier the CLI uses: quotes are
// checked against the pinned Intel SGX Root CA with collateral fetched
// from $MARBLERUN_PCCS_URL, or Intel's PCS when it is not set (the
// Coordinator builds its verifier the same way, from its QCNL file).
// Nothing is fetched until a quote is verified.
func DefaultVerifier(getenv func(string) string) (api.Verifier, error) {
	v, err := sgx.NewDCAPVerifier(sgx.CollateralSource{URL: getenv(EnvPCCSURL)}, sgx.Options{})
	if errors.Is(err, sgx.ErrFetch) {
		return nil, fmt.Errorf("%s: %w", EnvPCCSURL, err)
	}
	if err != nil {
		return nil, fmt.Errorf("creating the quote verifier: %w", err)
	}
	return v, nil
}
