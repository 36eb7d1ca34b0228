package cli

import (
	"crypto/x509"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

// TestVerificationWithDCAPVerifier runs the CLI with the real DCAP
// verifier on synthetic SGX quotes (status SWHardeningNeeded, advisory
// INTEL-SA-00615), so that --accepted-tcb-statuses, --accepted-advisories
// and --nonce are judged against what the verifier computed.
func TestVerificationWithDCAPVerifier(t *testing.T) {
	t.Parallel()
	pki, err := sgxtest.New()
	if err != nil {
		t.Fatal(err)
	}
	col, err := pki.Collateral(nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := pki.Verifier(col, sgx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t)
	c.SetManifest(t, readTestdata(t, "manifest.json"))
	qp := sgxtest.DefaultQuoteParts()
	era := map[string]any{"UniqueID": hex.EncodeToString(qp.MREnclave[:])}
	quote := func(bindNonce bool) issuer {
		return func(root *x509.Certificate, nonce []byte) []byte {
			if !bindNonce {
				nonce = nil
			}
			q, err := sgxtest.Issuer{PKI: pki}.Issue(t.Context(), attestation.BindHash(root.Raw, nonce))
			if err != nil {
				t.Error(err)
			}
			return q
		}
	}
	for _, tc := range []struct {
		name  string
		iss   issuer
		flags []string
		want  []string // empty: must succeed
	}{
		{name: "default statuses accept SWHardeningNeeded", iss: quote(true)},
		{name: "status flag", iss: quote(true), flags: []string{"--accepted-tcb-statuses", "UpToDate"},
			want: []string{"TCBStatus: expected one of [UpToDate], found SWHardeningNeeded"}},
		{name: "advisory accepted", iss: quote(true), flags: []string{"--accepted-advisories", "INTEL-SA-00615"}},
		{name: "advisory not accepted", iss: quote(true), flags: []string{"--accepted-advisories", "INTEL-SA-00334"},
			want: []string{"Advisories: expected only [INTEL-SA-00334], found INTEL-SA-00615"}},
		{name: "nonce bound", iss: quote(true), flags: []string{"--nonce", "fresh-1"}},
		{name: "nonce not bound", iss: quote(false), flags: []string{"--nonce", "fresh-1"},
			want: []string{"report data is not the SHA-256 of the root certificate and the nonce"}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			proxy := newAttestingProxy(t, c, tc.iss)
			addr := strings.TrimPrefix(proxy.URL, "https://")
			e := newEnv(t)
			e.verifier = v
			args := append([]string{"manifest", "get", addr, "--era-config", e.writeEra("era.json", era)}, tc.flags...)
			if len(tc.want) > 0 {
				e.fail(tc.want, args...)
				return
			}
			if r := e.ok(args...); r.stdout != string(readTestdata(t, "manifest.json")) {
				t.Errorf("manifest get printed %q", r.stdout)
			}
		})
	}
}
