// Package api is a client for the Coordinator's REST API, usable by any Go
// program: the marblerun CLI is built on it.
//
// Trust starts with VerifyCoordinator, which fetches the Coordinator's
// quote and certificate chain and checks, through a Verifier, that the
// quote comes from the expected enclave and binds the root certificate.
// Every other function takes that verified root certificate (trustedRoot)
// and only talks to a server whose TLS certificate chains to it; host
// names are not checked, because the attested root, not the name, is what
// identifies the Coordinator.
//
// Each call tries the /api/v2 path first and falls back to the legacy
// unprefixed path only when the Coordinator answers 405 (Method Not
// Allowed), so the package works with old and new Coordinators, MarbleRun's
// included. Endpoints that only exist in v2 (recovery, the recovery public
// key, sign-quote, monotonic counters and quotes with a nonce) do not fall
// back.
//
// Errors the Coordinator reports are returned as *Error; failures to reach
// it keep their network error in the chain (errors.Is / errors.As work).
package api

import (
	"errors"
	"fmt"

	"github.com/marblemesh/marblemesh/attestation"
)

// Verifier checks SGX evidence and returns what it proves. A DCAP
// verifier, or a fake in tests, implements it.
type Verifier = attestation.Verifier

// Claims are what verified evidence says about the enclave that produced it.
type Claims = attestation.Claims

// ReportDataSize is the size of the report data a quote binds.
const ReportDataSize = attestation.ReportDataSize

var (
	// ErrInvalidAddress is returned for a Coordinator address that is not
	// HOST:PORT.
	ErrInvalidAddress = errors.New("invalid Coordinator address")
	// ErrSimulation is returned by verification when the Coordinator sent
	// an empty quote: it runs in simulation mode and proves nothing.
	ErrSimulation = errors.New("the Coordinator runs in simulation mode: its quote is empty and proves nothing")
	// ErrNoVerifier is returned by verification when the quote is not
	// empty but no Verifier was configured.
	ErrNoVerifier = errors.New("no SGX quote verifier is available, so the Coordinator's quote cannot be verified")
	// ErrVerification is wrapped by every error that says the quote does
	// not prove what the options require.
	ErrVerification = errors.New("the Coordinator's quote does not match the expected identity")
	// ErrUntrustedCertificate is wrapped when the Coordinator presents a TLS
	// certificate that does not chain to the trusted root.
	ErrUntrustedCertificate = errors.New("the Coordinator's TLS certificate does not chain to the trusted root certificate")
	// ErrNoManifest is returned when the Coordinator has no manifest yet.
	ErrNoManifest = errors.New("the Coordinator has no manifest yet")
	// ErrNoPendingUpdate is returned when no manifest update is pending.
	ErrNoPendingUpdate = errors.New("no manifest update is pending")
	// ErrUnsupported is wrapped when the Coordinator does not have a
	// v2-only endpoint (it answered 405).
	ErrUnsupported = errors.New("the Coordinator does not support this request")
)

// Error is an error answer of the Coordinator.
type Error struct {
	// StatusCode is the HTTP status code.
	StatusCode int
	// Method and Path identify the request.
	Method, Path string
	// Message is the Coordinator's explanation, if it gave one.
	Message string
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "no explanation given"
	}
	return fmt.Sprintf("the Coordinator refused %s %s with HTTP %d: %s", e.Method, e.Path, e.StatusCode, msg)
}
