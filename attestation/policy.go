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

// Default accepted TCB statuses when a policy lists none.
const (
	TCBStatusUpToDate          = "UpToDate"
	TCBStatusSWHardeningNeeded = "SWHardeningNeeded"
)

// Policy is what a manifest package requires of an enclave.
type Policy struct {
	// UniqueID is the required MRENCLAVE; empty means any.
	UniqueID []byte
	// SignerID is the required MRSIGNER; empty means any.
	SignerID []byte
	// ProductID is the required ISVPRODID; nil means any.
	ProductID *uint16
	// SecurityVersion is the minimum ISVSVN; nil means any.
	SecurityVersion *uint16
	// Debug must equal the enclave's DEBUG attribute.
	Debug bool
	// AcceptedTCBStatuses defaults to UpToDate and SWHardeningNeeded when
	// empty; names compare case-insensitively.
	AcceptedTCBStatuses []string
	// AcceptedAdvisories lists tolerated advisory IDs; empty accepts all.
	AcceptedAdvisories []string
}

// Check returns nil if claims satisfy p. A rejection names the field, the
// expected and the found value.
func (p Policy) Check(c *Claims) error {
	if c == nil {
		return fmt.Errorf("%w: claims: expected verified claims, found none", ErrPolicy)
	}
	if p.Debug != c.Debug {
		return fmt.Errorf("%w: Debug: expected %v, found %v", ErrPolicy, p.Debug, c.Debug)
	}
	if len(p.UniqueID) != 0 && !bytes.Equal(p.UniqueID, c.UniqueID) {
		return fmt.Errorf("%w: UniqueID: expected %x, found %x", ErrPolicy, p.UniqueID, c.UniqueID)
	}
	if len(p.SignerID) != 0 && !bytes.Equal(p.SignerID, c.SignerID) {
		return fmt.Errorf("%w: SignerID: expected %x, found %x", ErrPolicy, p.SignerID, c.SignerID)
	}
	if p.ProductID != nil && *p.ProductID != c.ProductID {
		return fmt.Errorf("%w: ProductID: expected %d, found %d", ErrPolicy, *p.ProductID, c.ProductID)
	}
	if p.SecurityVersion != nil && c.SecurityVersion < *p.SecurityVersion {
		return fmt.Errorf("%w: SecurityVersion: expected at least %d, found %d", ErrPolicy, *p.SecurityVersion, c.SecurityVersion)
	}
	accepted := p.AcceptedTCBStatuses
	if len(accepted) == 0 {
		accepted = []string{TCBStatusUpToDate, TCBStatusSWHardeningNeeded}
	}
	if c.TCBStatus == "" || !containsFold(accepted, c.TCBStatus) {
		found := c.TCBStatus
		if found == "" {
			found = "(none reported)"
		}
		return fmt.Errorf("%w: TCBStatus: expected one of %v, found %s", ErrPolicy, accepted, found)
	}
	if len(p.AcceptedAdvisories) != 0 {
		for _, a := range c.Advisories {
			if !containsFold(p.AcceptedAdvisories, a) {
				return fmt.Errorf("%w: Advisories: expected only %v, found %s (in %v)", ErrPolicy, p.AcceptedAdvisories, a, c.Advisories)
			}
		}
	}
	return nil
}

func containsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, s) })
}

// NewPolicy builds a Policy from manifest-style values: hex-encoded
// UniqueID and SignerID (empty means any), and a product ID and security
// version that must fit in 16 bits.
func NewPolicy(debug bool, uniqueID, signerID string, productID *uint64, securityVersion *uint, acceptedTCBStatuses, acceptedAdvisories []string) (Policy, error) {
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
