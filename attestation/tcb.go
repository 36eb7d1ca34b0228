package attestation

import (
	"fmt"
	"strings"
)

// TCB status names, spelt as Intel's TCB Info and QE Identity collateral
// spell them. A Verifier reports one of them in Claims.TCBStatus; a Policy
// lists the ones it accepts.
const (
	TCBUpToDate                          = "UpToDate"
	TCBSWHardeningNeeded                 = "SWHardeningNeeded"
	TCBConfigurationNeeded               = "ConfigurationNeeded"
	TCBConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	TCBOutOfDate                         = "OutOfDate"
	TCBOutOfDateConfigurationNeeded      = "OutOfDateConfigurationNeeded"
	TCBRevoked                           = "Revoked"
	TCBUnknown                           = "Unknown"
)

// KnownTCBStatuses returns every TCB status name in canonical spelling.
func KnownTCBStatuses() []string {
	return []string{
		TCBUpToDate, TCBSWHardeningNeeded, TCBConfigurationNeeded, TCBConfigurationAndSWHardeningNeeded,
		TCBOutOfDate, TCBOutOfDateConfigurationNeeded, TCBRevoked, TCBUnknown,
	}
}

// DefaultAcceptedTCBStatuses are accepted by a Policy that lists none.
func DefaultAcceptedTCBStatuses() []string { return []string{TCBUpToDate, TCBSWHardeningNeeded} }

// CanonicalTCBStatus returns the canonical spelling of a TCB status name,
// compared case-insensitively and without surrounding space, and whether
// the name is known.
func CanonicalTCBStatus(s string) (string, bool) {
	s = strings.TrimSpace(s)
	for _, k := range KnownTCBStatuses() {
		if strings.EqualFold(s, k) {
			return k, true
		}
	}
	return "", false
}

// CheckTCBStatusNames returns an error naming the first unknown status in
// names, so that a misspelt requirement is refused rather than never met.
func CheckTCBStatusNames(names []string) error {
	for _, s := range names {
		if _, ok := CanonicalTCBStatus(s); !ok {
			return fmt.Errorf("%w: AcceptedTCBStatuses: unknown TCB status %q (known: %s)", ErrPolicy, s, strings.Join(KnownTCBStatuses(), ", "))
		}
	}
	return nil
}
