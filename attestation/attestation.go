// Package attestation defines how evidence about a trusted execution
// environment is produced (Issuer) and checked (Verifier).
//
// Evidence binds a 64-byte report-data value. Marbles bind
// SHA-256(DER of the TLS certificate they present) followed by 32 zero
// bytes; the Coordinator binds SHA-256(root certificate DER), or
// SHA-256(root DER ‖ nonce) for a fresh quote.
//
// Simulation is a deliberate, insecure mode: its evidence is empty, and
// only a party that was explicitly configured for simulation accepts it.
package attestation

import (
	"context"
	"crypto/sha256"
	"errors"
)

// ErrUnavailable is wrapped by verification errors that come from a service
// the Verifier could not reach or that answered with a temporary failure
// (e.g. a PCCS that is down): the evidence was not judged, and asking again
// later may succeed.
var ErrUnavailable = errors.New("attestation service temporarily unavailable")

// ReportDataSize is the size of SGX REPORTDATA.
const ReportDataSize = 64

// Issuer produces evidence inside a trusted execution environment.
type Issuer interface {
	// Issue returns evidence binding reportData.
	Issue(ctx context.Context, reportData [ReportDataSize]byte) ([]byte, error)
	// Insecure reports whether the evidence proves nothing (simulation).
	Insecure() bool
}

// Claims are what verified evidence says about the enclave that produced it.
type Claims struct {
	UniqueID        []byte
	SignerID        []byte
	ProductID       uint16
	SecurityVersion uint16
	Debug           bool
	ReportData      [ReportDataSize]byte
	TCBStatus       string
	Advisories      []string
}

// Verifier checks evidence and returns its claims.
type Verifier interface {
	Verify(ctx context.Context, evidence []byte) (*Claims, error)
}

// SimulationIssuer returns empty evidence, as MarbleRun's simulation does.
type SimulationIssuer struct{}

// Issue returns empty evidence.
func (SimulationIssuer) Issue(context.Context, [ReportDataSize]byte) ([]byte, error) {
	return []byte{}, nil
}

// Insecure is always true.
func (SimulationIssuer) Insecure() bool { return true }

// BindHash returns report data whose first half is SHA-256(parts...) and
// whose second half is zero.
func BindHash(parts ...[]byte) [ReportDataSize]byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	var rd [ReportDataSize]byte
	copy(rd[:], h.Sum(nil))
	return rd
}
