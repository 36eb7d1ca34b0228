package cli

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/marblemesh/marblemesh/api"
)

// hintedError carries advice on what to do next.
type hintedError struct {
	err  error
	hint string
}

func (e *hintedError) Error() string { return e.err.Error() }
func (e *hintedError) Unwrap() error { return e.err }

// withHint attaches advice to err.
func withHint(err error, hint string) error { return &hintedError{err: err, hint: hint} }

// hintFor returns advice for err: an attached hint, or one derived from
// the kind of failure.
func hintFor(err error, addr, certFile string) string {
	var he *hintedError
	if errors.As(err, &he) {
		return he.hint
	}
	if addr == "" {
		addr = "<IP:PORT>"
	}
	var (
		apiErr    *api.Error
		dnsErr    *net.DNSError
		recordErr tls.RecordHeaderError
		opErr     *net.OpError
		netErr    net.Error
	)
	switch {
	case errors.Is(err, api.ErrInvalidAddress):
		return "Give the Coordinator's client API address as HOST:PORT; it listens on port 4433 by default."
	case errors.Is(err, api.ErrUntrustedCertificate):
		return fmt.Sprintf("The Coordinator at %s does not present the certificate pinned in %s. If it is in recovery mode, it serves a temporary "+
			"certificate until it is recovered with 'marblerun recover'. If it was re-installed or its state was reset, "+
			"verify it again with 'marblerun manifest verify <manifest> %s', which checks its attestation and manifest and pins its new certificate. "+
			"Otherwise you may be talking to a different Coordinator than you think.", addr, certFile, addr)
	case errors.Is(err, api.ErrSimulation):
		return "A Coordinator in simulation mode proves nothing. For test setups, pass --insecure (-i) to talk to it anyway."
	case errors.Is(err, api.ErrNoVerifier):
		return "This build of marblerun has no SGX quote verifier. For test setups, pass --insecure (-i) to skip the verification."
	case errors.Is(err, api.ErrVerification):
		return "Do not trust this Coordinator until this is explained. Check the era config (--era-config) and the " +
			"--accepted-tcb-statuses and --accepted-advisories flags against the Coordinator you expect."
	case errors.Is(err, api.ErrNoPendingUpdate):
		return fmt.Sprintf("Start an update with 'marblerun manifest update apply <manifest> %s'.", addr)
	case errors.Is(err, api.ErrNoManifest):
		return fmt.Sprintf("Set one with 'marblerun manifest set <manifest> %s'.", addr)
	case errors.Is(err, api.ErrUnsupported):
		return "Update the Coordinator to a version with the v2 API."
	case errors.As(err, &apiErr):
		return hintForStatus(apiErr, addr)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("Nothing accepts connections at %s. Check the address and port (the client API listens on 4433 by default) and that the Coordinator runs.", addr)
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("The host name in %s cannot be resolved. Check the address.", addr)
	case errors.As(err, &recordErr) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Sprintf("The server at %s does not speak TLS. Is this the Coordinator's client API port (4433 by default)?", addr)
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		return fmt.Sprintf("The TLS handshake with %s failed. Is this the Coordinator's client API port (4433 by default), not the mesh port (2001)?", addr)
	case errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("%s did not answer in time. Check the address, firewalls and port-forwards.", addr)
	}
	return ""
}

func hintForStatus(e *api.Error, addr string) string {
	switch e.StatusCode {
	case http.StatusUnauthorized:
		return "The Coordinator did not accept you as a user: pass the certificate and key of a user in the manifest with --cert and --key."
	case http.StatusForbidden:
		return "Your user lacks the permission for this (or the feature is disabled): see the manifest's Users, Roles and Config.FeatureGates."
	case http.StatusNotImplemented:
		return "This Coordinator does not implement this request yet."
	case http.StatusGone:
		return "This Coordinator disabled the legacy form of this request."
	case http.StatusBadRequest:
		if strings.Contains(strings.ToLower(e.Message), "state") || strings.Contains(strings.ToLower(e.Message), "recovery") {
			return fmt.Sprintf("The Coordinator may not be in the right state for this: see 'marblerun status %s'.", addr)
		}
	}
	return ""
}
