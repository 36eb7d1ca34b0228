package cli

import (
	"fmt"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/internal/attestation/sgx"
)

// EnvPCCSURL names the PCCS (or Intel's PCS) from which the CLI fetches the
// collateral it needs to verify the Coordinator's SGX quote.
const EnvPCCSURL = "MARBLERUN_PCCS_URL"

// DefaultVerifier returns the SGX DCAP verifier the CLI uses: quotes are
// checked against the pinned Intel SGX Root CA with collateral fetched
// from $MARBLERUN_PCCS_URL, or Intel's PCS when it is not set. Nothing is
// fetched until a quote is verified.
func DefaultVerifier(getenv func(string) string) (api.Verifier, error) {
	url := getenv(EnvPCCSURL)
	if url == "" {
		url = sgx.IntelPCSURL
	}
	pcs, err := sgx.NewPCSClient(url, sgx.PCSOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvPCCSURL, err)
	}
	v, err := sgx.NewVerifier(pcs, sgx.Options{})
	if err != nil {
		return nil, fmt.Errorf("creating the quote verifier: %w", err)
	}
	return v, nil
}
