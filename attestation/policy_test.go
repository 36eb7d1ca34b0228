package attestation

import (
	"errors"
	"strings"
	"testing"
)

func TestPolicyCheck(t *testing.T) {
	u16 := func(v uint16) *uint16 { return &v }
	base := func() Claims {
		return Claims{UniqueID: []byte{1, 2}, SignerID: []byte{3, 4}, ProductID: 7, SecurityVersion: 5, TCBStatus: "UpToDate"}
	}
	full := Policy{UniqueID: []byte{1, 2}, SignerID: []byte{3, 4}, ProductID: u16(7), SecurityVersion: u16(5)}
	tests := []struct {
		name   string
		policy Policy
		claims func(*Claims)
		msg    string
	}{
		{"all match", full, nil, ""},
		{"empty policy", Policy{}, nil, ""},
		{"higher svn", full, func(c *Claims) { c.SecurityVersion = 9 }, ""},
		{"lower svn", full, func(c *Claims) { c.SecurityVersion = 4 }, "SecurityVersion: expected at least 5, found 4"},
		{"unique id", full, func(c *Claims) { c.UniqueID = []byte{9} }, "UniqueID (MRENCLAVE): expected 0102, found 09"},
		{"signer id", full, func(c *Claims) { c.SignerID = []byte{9} }, "SignerID (MRSIGNER): expected 0304, found 09"},
		{"product id", full, func(c *Claims) { c.ProductID = 8 }, "ProductID: expected 7, found 8"},
		{"debug enclave refused", full, func(c *Claims) { c.Debug = true }, "Debug: expected a production enclave, found a debug enclave"},
		{"debug required, production found", Policy{Debug: DebugRequired}, nil, "Debug: expected a debug enclave, found a production enclave"},
		{"debug required", Policy{Debug: DebugRequired}, func(c *Claims) { c.Debug = true }, ""},
		{"debug accepted, debug found", Policy{Debug: DebugAccepted}, func(c *Claims) { c.Debug = true }, ""},
		{"debug accepted, production found", Policy{Debug: DebugAccepted}, nil, ""},
		{"unknown status reported", Policy{AcceptedTCBStatuses: []string{"UpToDat"}}, func(c *Claims) { c.TCBStatus = "UpToDat" }, "TCBStatus: expected one of [UpToDat], found UpToDat"},
		{"status spelt in another case", Policy{}, func(c *Claims) { c.TCBStatus = "uptodate" }, ""},
		{"sw hardening default", Policy{}, func(c *Claims) { c.TCBStatus = "SWHardeningNeeded" }, ""},
		{"out of date default", Policy{}, func(c *Claims) { c.TCBStatus = "OutOfDate" }, "TCBStatus: expected one of [UpToDate SWHardeningNeeded], found OutOfDate"},
		{"no status", Policy{}, func(c *Claims) { c.TCBStatus = "" }, "found (none reported)"},
		{"out of date accepted", Policy{AcceptedTCBStatuses: []string{"outofdate"}}, func(c *Claims) { c.TCBStatus = "OutOfDate" }, ""},
		{"explicit list replaces default", Policy{AcceptedTCBStatuses: []string{"OutOfDate"}}, nil, "TCBStatus: expected one of [OutOfDate], found UpToDate"},
		{"advisories all", Policy{}, func(c *Claims) { c.Advisories = []string{"INTEL-SA-00615"} }, ""},
		{"advisory listed", Policy{AcceptedAdvisories: []string{"intel-sa-00615"}}, func(c *Claims) { c.Advisories = []string{"INTEL-SA-00615"} }, ""},
		{"advisory not listed", Policy{AcceptedAdvisories: []string{"INTEL-SA-00615"}}, func(c *Claims) { c.Advisories = []string{"INTEL-SA-00615", "INTEL-SA-00289"} }, "Advisories: expected only [INTEL-SA-00615], found INTEL-SA-00289"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			if tc.claims != nil {
				tc.claims(&c)
			}
			err := tc.policy.Check(&c)
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("expected acceptance, found %v", err)
				}
				return
			}
			if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("expected rejection containing %q, found %v", tc.msg, err)
			}
		})
	}
	if err := (Policy{}).Check(nil); !errors.Is(err, ErrPolicy) {
		t.Fatalf("nil claims: expected ErrPolicy, found %v", err)
	}
}

// TestPolicyEachTCBStatus checks every TCB status against the default
// list (UpToDate and SWHardeningNeeded) and against a list naming it.
func TestPolicyEachTCBStatus(t *testing.T) {
	for _, tc := range []struct {
		status    string
		byDefault bool
	}{
		{"UpToDate", true},
		{"SWHardeningNeeded", true},
		{"ConfigurationNeeded", false},
		{"ConfigurationAndSWHardeningNeeded", false},
		{"OutOfDate", false},
		{"OutOfDateConfigurationNeeded", false},
		{"Revoked", false},
	} {
		t.Run(tc.status, func(t *testing.T) {
			c := &Claims{TCBStatus: tc.status}
			err := Policy{}.Check(c)
			if tc.byDefault && err != nil {
				t.Fatalf("default policy: %v, want acceptance", err)
			}
			if !tc.byDefault && (!errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), "TCBStatus: expected one of [UpToDate SWHardeningNeeded], found "+tc.status)) {
				t.Fatalf("default policy: %v, want a TCBStatus rejection naming %s", err, tc.status)
			}
			if err := (Policy{AcceptedTCBStatuses: []string{tc.status}}).Check(c); err != nil {
				t.Fatalf("policy listing %s: %v", tc.status, err)
			}
			other := "UpToDate"
			if tc.status == other {
				other = "OutOfDate"
			}
			if err := (Policy{AcceptedTCBStatuses: []string{other}}).Check(c); !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), "found "+tc.status) {
				t.Fatalf("policy listing only %s: %v, want a rejection", other, err)
			}
		})
	}
}

func TestNewPolicy(t *testing.T) {
	id := strings.Repeat("ab", 32)
	pid, svn := uint64(3), uint(5)
	p, err := NewPolicy(DebugRefused, id, strings.ToUpper(id), &pid, &svn, []string{"UpToDate"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := Claims{UniqueID: bytesOf(0xab), SignerID: bytesOf(0xab), ProductID: 3, SecurityVersion: 5, TCBStatus: "UpToDate"}
	if err := p.Check(&c); err != nil {
		t.Fatal(err)
	}
	c.SecurityVersion = 4
	if err := p.Check(&c); err == nil || !strings.Contains(err.Error(), "SecurityVersion: expected at least 5, found 4") {
		t.Fatalf("expected SecurityVersion rejection, found %v", err)
	}
	big64, bigU := uint64(70000), uint(70000)
	bad := []struct {
		name     string
		unique   string
		pid      *uint64
		svn      *uint
		expected string
	}{
		{"bad hex", "zz", nil, nil, `UniqueID: expected 64 hex digits, found "zz"`},
		{"short id", "abcd", nil, nil, `UniqueID: expected 64 hex digits, found "abcd"`},
		{"large product", "", &big64, nil, "ProductID: expected at most 65535, found 70000"},
		{"large svn", "", nil, &bigU, "SecurityVersion: expected at most 65535, found 70000"},
	}
	for _, tc := range bad {
		if _, err := NewPolicy(DebugRefused, tc.unique, "", tc.pid, tc.svn, nil, nil); !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.expected) {
			t.Fatalf("%s: expected %q, found %v", tc.name, tc.expected, err)
		}
	}
}

func bytesOf(b byte) []byte {
	out := make([]byte, 32)
	for i := range out {
		out[i] = b
	}
	return out
}
