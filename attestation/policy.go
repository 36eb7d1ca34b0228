package attestation

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrPolicy is wrapped by every policy rejection.
var ErrPolicy = errors.New("attestation policy")

// DebugRule says how a Policy treats the DEBUG attribute. A debug enclave's
// memory can be read by its host, so it proves nothing about its secrets.
type DebugRule int

const (
	// DebugRefused accepts only production enclaves. It is the zero value.
	DebugRefused DebugRule = iota
	// DebugAccepted accepts debug and production enclaves: a client that
	// tolerates a debug Coordinator (the era config's Debug: true).
	DebugAccepted
	// DebugRequired accepts only debug enclaves: a manifest package marked
	// Debug: true describes a debug build, and a production build does not
	// match it.
	DebugRequired
)

func (r DebugRule) String() string {
	switch r {
	case DebugRefused:
		return "a production enclave"
	case DebugAccepted:
		return "a debug or production enclave"
	case DebugRequired:
		return "a debug enclave"
	}
	return fmt.Sprintf("DebugRule(%d)", int(r))
}

func (r DebugRule) allows(debug bool) bool {
	switch r {
	case DebugAccepted:
		return true
	case DebugRequired:
		return debug
	}
	return !debug
}

// Policy is what a verifier of evidence requires of an enclave. The
// Coordinator checks each marble against the Policy of its manifest
// package, and a client checks the Coordinator against the Policy of its
// era config: one set of rules in both directions.
type Policy struct {
	// UniqueID is the required MRENCLAVE; empty means any.
	UniqueID []byte
	// SignerID is the required MRSIGNER; empty means any.
	SignerID []byte
	// ProductID is the required ISVPRODID; nil means any.
	ProductID *uint16
	// SecurityVersion is the minimum ISVSVN; nil means any.
	SecurityVersion *uint16
	// Debug says whether debug enclaves are refused (the zero value),
	// accepted, or required.
	Debug DebugRule
	// AcceptedTCBStatuses defaults to DefaultAcceptedTCBStatuses when
	// empty; names compare case-insensitively. A status the Verifier
	// reports that is not a known name is refused.
	AcceptedTCBStatuses []string
	// AcceptedAdvisories lists tolerated advisory IDs; empty accepts all.
	AcceptedAdvisories []string
}

// Check returns nil if claims satisfy p. A rejection wraps ErrPolicy and
// names the field, the expected and the found value.
func (p Policy) Check(c *Claims) error {
	if c == nil {
		return fmt.Errorf("%w: claims: expected verified claims, found none", ErrPolicy)
	}
	if !p.Debug.allows(c.Debug) {
		found := "a production enclave"
		if c.Debug {
			found = "a debug enclave, whose memory its host can read"
		}
		return fmt.Errorf("%w: Debug: expected %s, found %s", ErrPolicy, p.Debug, found)
	}
	if len(p.UniqueID) != 0 && !bytes.Equal(p.UniqueID, c.UniqueID) {
		return fmt.Errorf("%w: UniqueID (MRENCLAVE): expected %x, found %x", ErrPolicy, p.UniqueID, c.UniqueID)
	}
	if len(p.SignerID) != 0 && !bytes.Equal(p.SignerID, c.SignerID) {
		return fmt.Errorf("%w: SignerID (MRSIGNER): expected %x, found %x", ErrPolicy, p.SignerID, c.SignerID)
	}
	if p.ProductID != nil && *p.ProductID != c.ProductID {
		return fmt.Errorf("%w: ProductID: expected %d, found %d", ErrPolicy, *p.ProductID, c.ProductID)
	}
	if p.SecurityVersion != nil && c.SecurityVersion < *p.SecurityVersion {
		return fmt.Errorf("%w: SecurityVersion: expected at least %d, found %d", ErrPolicy, *p.SecurityVersion, c.SecurityVersion)
	}
	accepted := p.AcceptedTCBStatuses
	if len(accepted) == 0 {
		accepted = DefaultAcceptedTCBStatuses()
	}
	status, known := CanonicalTCBStatus(c.TCBStatus)
	if !known || !containsFold(accepted, status) {
		found := c.TCBStatus
		if found == "" {
			found = "(none reported)"
		}
		return fmt.Errorf("%w: TCBStatus: expected one of [%s], found %s", ErrPolicy, strings.Join(accepted, " "), found)
	}
	if len(p.AcceptedAdvisories) != 0 {
		for _, a := range c.Advisories {
			if !containsFold(p.AcceptedAdvisories, a) {
				return fmt.Errorf("%w: Advisories: expected only [%s], found %s (in %v)", ErrPolicy, strings.Join(p.AcceptedAdvisories, " "), a, c.Advisories)
			}
		}
	}
	return nil
}

func containsFold(list []string, s string) bool {
	s = strings.TrimSpace(s)
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(strings.TrimSpace(x), s) })
}

// NewPolicy builds a Policy from the values manifests and era configs
// write: hex-encoded UniqueID and SignerID (empty means any), and a
// product ID and security version that must fit in 16 bits.
func NewPolicy(debug DebugRule, uniqueID, signerID string, productID *uint64, securityVersion *uint, acceptedTCBStatuses, acceptedAdvisories []string) (Policy, error) {
	p := Policy{Debug: debug, AcceptedTCBStatuses: acceptedTCBStatuses, AcceptedAdvisories: acceptedAdvisories}
	var err error
	if p.UniqueID, err = decodeID("UniqueID", uniqueID); err != nil {
		return Policy{}, err
	}
	if p.SignerID, err = decodeID("SignerID", signerID); err != nil {
		return Policy{}, err
	}
	if productID != nil {
		if *productID > 0xffff {
			return Policy{}, fmt.Errorf("%w: ProductID: expected at most 65535, found %d", ErrPolicy, *productID)
		}
		v := uint16(*productID)
		p.ProductID = &v
	}
	if securityVersion != nil {
		if *securityVersion > 0xffff {
			return Policy{}, fmt.Errorf("%w: SecurityVersion: expected at most 65535, found %d", ErrPolicy, *securityVersion)
		}
		v := uint16(*securityVersion)
		p.SecurityVersion = &v
	}
	return p, nil
}

func decodeID(field, s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("%w: %s: expected 64 hex digits, found %q", ErrPolicy, field, s)
	}
	return b, nil
}
