package core

import (
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/manifest"
)

// TestPolicyBothDirections runs the same claims through the Coordinator's
// check of a marble (a manifest package) and a client's check of the
// Coordinator (an era config) that name the same identity. Both are one
// attestation.Policy; they differ only where a package describes a debug
// build, which a production enclave does not match, while an era config's
// Debug only tolerates a debug enclave.
func TestPolicyBothDirections(t *testing.T) {
	uniqueID, signerID := strings.Repeat("11", 32), strings.Repeat("22", 32)
	pid, svn := uint64(3), uint(5)
	pid16 := uint16(3)
	base := func() attestation.Claims {
		return attestation.Claims{UniqueID: bytesRepeat(0x11), SignerID: bytesRepeat(0x22), ProductID: 3, SecurityVersion: 5, TCBStatus: attestation.TCBUpToDate}
	}
	type outcome struct{ marble, coordinator string } // "" accepts, otherwise a substring of the rejection
	for _, tc := range []struct {
		name     string
		debug    bool
		statuses []string
		advs     []string
		claims   func(*attestation.Claims)
		want     outcome
	}{
		{name: "match", want: outcome{}},
		{name: "higher security version", claims: func(c *attestation.Claims) { c.SecurityVersion = 9 }},
		{name: "lower security version", claims: func(c *attestation.Claims) { c.SecurityVersion = 4 },
			want: outcome{"SecurityVersion: expected at least 5, found 4", "SecurityVersion: expected at least 5, found 4"}},
		{name: "other MRENCLAVE", claims: func(c *attestation.Claims) { c.UniqueID = bytesRepeat(0x99) },
			want: outcome{"UniqueID (MRENCLAVE): expected 1111", "UniqueID (MRENCLAVE): expected 1111"}},
		{name: "other MRSIGNER", claims: func(c *attestation.Claims) { c.SignerID = bytesRepeat(0x99) },
			want: outcome{"SignerID (MRSIGNER): expected 2222", "SignerID (MRSIGNER): expected 2222"}},
		{name: "other product", claims: func(c *attestation.Claims) { c.ProductID = 4 },
			want: outcome{"ProductID: expected 3, found 4", "ProductID: expected 3, found 4"}},
		{name: "debug enclave refused", claims: func(c *attestation.Claims) { c.Debug = true },
			want: outcome{"Debug: expected a production enclave", "Debug: expected a production enclave"}},
		{name: "debug enclave allowed", debug: true, claims: func(c *attestation.Claims) { c.Debug = true }},
		{name: "production enclave, debug allowed", debug: true,
			want: outcome{marble: "Debug: expected a debug enclave, found a production enclave"}},
		{name: "SWHardeningNeeded by default", claims: func(c *attestation.Claims) { c.TCBStatus = attestation.TCBSWHardeningNeeded }},
		{name: "OutOfDate by default", claims: func(c *attestation.Claims) { c.TCBStatus = attestation.TCBOutOfDate },
			want: outcome{"TCBStatus: expected one of [UpToDate SWHardeningNeeded], found OutOfDate", "TCBStatus: expected one of [UpToDate SWHardeningNeeded], found OutOfDate"}},
		{name: "OutOfDate listed in another case", statuses: []string{"outofdate"}, claims: func(c *attestation.Claims) { c.TCBStatus = attestation.TCBOutOfDate }},
		{name: "no status reported", claims: func(c *attestation.Claims) { c.TCBStatus = "" },
			want: outcome{"found (none reported)", "found (none reported)"}},
		{name: "advisory listed", advs: []string{"INTEL-SA-00615"}, claims: func(c *attestation.Claims) { c.Advisories = []string{"INTEL-SA-00615"} }},
		{name: "advisory not listed", advs: []string{"INTEL-SA-00615"}, claims: func(c *attestation.Claims) { c.Advisories = []string{"INTEL-SA-00334"} },
			want: outcome{"Advisories: expected only [INTEL-SA-00615], found INTEL-SA-00334", "Advisories: expected only [INTEL-SA-00615], found INTEL-SA-00334"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			if tc.claims != nil {
				tc.claims(&c)
			}
			pkg := manifest.Package{Debug: tc.debug, UniqueID: uniqueID, SignerID: signerID, ProductID: &pid, SecurityVersion: &svn, AcceptedTCBStatuses: tc.statuses, AcceptedAdvisories: tc.advs}
			era := api.VerifyOptions{Debug: tc.debug, UniqueID: uniqueID, SignerID: signerID, ProductID: &pid16, SecurityVersion: &svn, AcceptedTCBStatuses: tc.statuses, AcceptedAdvisories: tc.advs}
			policy, err := era.Policy()
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range []struct {
				name string
				err  error
				want string
			}{
				{"marble (manifest package)", checkPackage(pkg, &c), tc.want.marble},
				{"Coordinator (era config)", policy.Check(&c), tc.want.coordinator},
			} {
				if d.want == "" && d.err != nil {
					t.Errorf("%s: expected acceptance, found %v", d.name, d.err)
				}
				if d.want != "" && (d.err == nil || !strings.Contains(d.err.Error(), d.want)) {
					t.Errorf("%s: expected a rejection containing %q, found %v", d.name, d.want, d.err)
				}
			}
		})
	}
}

func bytesRepeat(b byte) []byte { return []byte(strings.Repeat(string([]byte{b}), 32)) }
