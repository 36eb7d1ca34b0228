package marble

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/issuer"
	"github.com/marblemesh/marblemesh/test/issuertest"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

// gramineDir lays out a fake Gramine attestation folder: attestation_type
// (when typ is not empty), user_report_data, keys/ and, when quote is not
// nil, a quote file holding it.
func gramineDir(t *testing.T, typ string, quote []byte) string {
	t.Helper()
	if typ != "" {
		typ += "\n"
	}
	return issuertest.Gramine{AttestationType: typ, Quote: quote, UserReportData: true, Keys: true}.Create(t)
}

func TestIssuerFromEnv(t *testing.T) {
	pki, err := sgxtest.New()
	if err != nil {
		t.Fatal(err)
	}
	rd := attestation.BindHash([]byte("marble certificate"))
	quote, err := sgxtest.Issuer{PKI: pki}.Issue(t.Context(), rd)
	if err != nil {
		t.Fatal(err)
	}
	withQuote := gramineDir(t, "dcap", quote)
	withoutQuote := gramineDir(t, "none", nil)
	empty := t.TempDir()
	missing := filepath.Join(t.TempDir(), "absent")
	quoteFolder := t.TempDir()
	if err := os.Mkdir(filepath.Join(quoteFolder, "quote"), 0o700); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		env     map[string]string
		want    string // "simulation" or the Gramine folder
		noTEE   bool
		wantErr []string
	}{
		{name: "simulation wins over a Gramine folder", env: map[string]string{EnvSimulation: "1", EnvAttestationDir: withQuote}, want: "simulation"},
		{name: "Gramine quote file", env: map[string]string{EnvAttestationDir: withQuote}, want: withQuote},
		{name: "Gramine with OE_SIMULATION=0", env: map[string]string{EnvSimulation: "0", EnvAttestationDir: " " + withQuote + " "}, want: withQuote},
		{name: "OE_SIMULATION=true is not simulation", env: map[string]string{EnvSimulation: "true", EnvAttestationDir: empty}, noTEE: true,
			wantErr: []string{"looked for Gramine's quote file " + filepath.Join(empty, "quote")}},
		{name: "empty folder", env: map[string]string{EnvAttestationDir: empty}, noTEE: true,
			wantErr: []string{"looked for Gramine's quote file " + filepath.Join(empty, "quote"), "found none", EnvAttestationDir + " names another folder",
				`sgx.remote_attestation = "dcap"`, "configfs-tsm", "not SGX evidence", "set OE_SIMULATION=1", "INSECURE", "simulation mode"}},
		{name: "missing folder", env: map[string]string{EnvAttestationDir: missing}, noTEE: true,
			wantErr: []string{filepath.Join(missing, "quote"), "found none", "OE_SIMULATION=1"}},
		{name: "Gramine without remote attestation", env: map[string]string{EnvAttestationDir: withoutQuote}, noTEE: true,
			wantErr: []string{filepath.Join(withoutQuote, "keys") + "/ exists but " + filepath.Join(withoutQuote, "quote") + " does not",
				`attestation_type "none"`, "gramine-direct", `sgx.remote_attestation = "none"`, `sgx.remote_attestation = "dcap"`, "OE_SIMULATION=1"}},
		{name: "quote is a folder", env: map[string]string{EnvAttestationDir: quoteFolder}, noTEE: true,
			wantErr: []string{EnvAttestationDir, filepath.Join(quoteFolder, "quote") + " is not a file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			iss, err := IssuerFromEnv(mapGetenv(tc.env))
			if tc.wantErr != nil {
				if iss != nil || err == nil {
					t.Fatalf("issuer %T, error %v: want an error", iss, err)
				}
				if !errors.Is(err, ErrNoTEE) {
					t.Errorf("error %v does not wrap ErrNoTEE", err)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "simulation" {
				if _, ok := iss.(attestation.SimulationIssuer); !ok || !iss.Insecure() {
					t.Fatalf("issuer %T, want the insecure simulation issuer", iss)
				}
				return
			}
			g, ok := iss.(*issuer.Gramine)
			if !ok || g.Insecure() {
				t.Fatalf("issuer %T, want the Gramine issuer", iss)
			}
			// The issuer uses the named folder: it writes the report
			// data there and returns the pre-filled quote.
			got, err := g.Issue(t.Context(), rd)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, quote) {
				t.Fatal("the issuer did not return the folder's quote")
			}
			if written, err := os.ReadFile(filepath.Join(tc.want, "user_report_data")); err != nil || !bytes.Equal(written, rd[:]) {
				t.Fatalf("user_report_data holds %x (%v), want %x", written, err, rd)
			}
		})
	}
}

func TestIssuerFromEnvDefaultFolder(t *testing.T) {
	if _, err := os.Stat(filepath.Join(issuer.GramineDir, "quote")); err == nil {
		t.Skipf("%s/quote exists on this machine: the default folder is a real Gramine folder", issuer.GramineDir)
	}
	_, err := IssuerFromEnv(mapGetenv(nil))
	if !errors.Is(err, ErrNoTEE) || !strings.Contains(err.Error(), filepath.Join(issuer.GramineDir, "quote")) {
		t.Fatalf("error %v: want ErrNoTEE naming %s/quote", err, issuer.GramineDir)
	}
}
