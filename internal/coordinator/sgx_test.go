package coordinator_test

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/marble"
	"github.com/marblemesh/marblemesh/marble/marbleenv"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

// sgxManifest admits the enclave of sgxtest.DefaultQuoteParts (MRENCLAVE
// 00…1F, MRSIGNER 80…9F, ISVPRODID 7, ISVSVN 3, not debug) by UniqueID
// ("byEnclave") and by SignerID, ProductID and SecurityVersion
// ("bySigner"), and requires SecurityVersion 4 of "needsSVN4".
func sgxManifest() []byte {
	qp := sgxtest.DefaultQuoteParts()
	return fmt.Appendf(nil, `{
  "Packages": {
    "enclave": {"UniqueID": %q, "Debug": false},
    "signed":  {"SignerID": %q, "ProductID": 7, "SecurityVersion": 3, "Debug": false},
    "newer":   {"SignerID": %q, "ProductID": 7, "SecurityVersion": 4, "Debug": false}
  },
  "Marbles": {
    "byEnclave": {"Package": "enclave", "Parameters": {"Env": {"ROLE": "enclave"}}},
    "bySigner":  {"Package": "signed", "Parameters": {"Env": {"ROLE": "signer"}}},
    "needsSVN4": {"Package": "newer"}
  }
}`, hex.EncodeToString(qp.MREnclave[:]), hex.EncodeToString(qp.MRSigner[:]), hex.EncodeToString(qp.MRSigner[:]))
}

// activateMarble runs the marble runtime's activation against c with
// issuer as the marble's evidence issuer.
func activateMarble(t *testing.T, c *coordtest.Coordinator, marbleType string, issuer attestation.Issuer) (map[string][]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := marble.Activate(ctx, marble.Config{
		MarbleType:      marbleType,
		CoordinatorAddr: c.MeshAddr(),
		UUIDFile:        filepath.Join(t.TempDir(), "uuid"),
		Issuer:          issuer,
		RetryTimeout:    5 * time.Second,
		Logger:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	return p.GetEnv(), nil
}

// oeIssuer wraps another issuer's quotes in an Open Enclave header, as
// EGo marbles send them.
type oeIssuer struct{ attestation.Issuer }

func (o oeIssuer) Issue(ctx context.Context, rd [attestation.ReportDataSize]byte) ([]byte, error) {
	q, err := o.Issuer.Issue(ctx, rd)
	return sgxtest.WithOEHeader(q), err
}

func TestSGXActivation(t *testing.T) {
	platform := coordtest.NewSGX(t)
	c := coordtest.Start(t, platform.Option())
	c.SetManifest(t, sgxManifest())
	other, err := sgxtest.New()
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := coordtest.NewMarbleIdentity(elliptic.P256(), "stranger")
	if err != nil {
		t.Fatal(err)
	}
	strangerRD := stranger.ReportData()

	tests := []struct {
		name       string
		marbleType string
		issuer     attestation.Issuer
		wantRole   string
		wantReason []string
	}{
		{name: "UniqueID matches", marbleType: "byEnclave", issuer: platform.Issuer(nil), wantRole: "enclave"},
		{name: "SignerID, ProductID and SecurityVersion match", marbleType: "bySigner", issuer: platform.Issuer(nil), wantRole: "signer"},
		{name: "higher SecurityVersion", marbleType: "bySigner", issuer: platform.Issuer(func(q *sgxtest.QuoteParts) { q.SVN = 9 }), wantRole: "signer"},
		{name: "EGo-style OE report", marbleType: "byEnclave", issuer: oeIssuer{platform.Issuer(nil)}, wantRole: "enclave"},
		{name: "wrong UniqueID", marbleType: "byEnclave", issuer: platform.Issuer(func(q *sgxtest.QuoteParts) { q.MREnclave[31] ^= 0xff }),
			wantReason: []string{`package "enclave"`, "UniqueID (MRENCLAVE): expected 000102", "1d1e1f, found 000102", "1d1ee0"}},
		{name: "wrong SignerID", marbleType: "bySigner", issuer: platform.Issuer(func(q *sgxtest.QuoteParts) { q.MRSigner[0] = 0 }),
			wantReason: []string{`package "signed"`, "SignerID (MRSIGNER): expected 808182", "found 008182"}},
		{name: "wrong ProductID", marbleType: "bySigner", issuer: platform.Issuer(func(q *sgxtest.QuoteParts) { q.ProdID = 8 }),
			wantReason: []string{"ProductID: expected 7, found 8"}},
		{name: "SecurityVersion too low", marbleType: "needsSVN4", issuer: platform.Issuer(nil),
			wantReason: []string{`package "newer"`, "SecurityVersion: expected at least 4, found 3"}},
		{name: "debug enclave", marbleType: "byEnclave", issuer: platform.Issuer(func(q *sgxtest.QuoteParts) { q.Flags = 0x07 }),
			wantReason: []string{"Debug: expected a production enclave, found a debug enclave"}},
		{name: "empty (simulation) evidence", marbleType: "byEnclave", issuer: attestation.SimulationIssuer{},
			wantReason: []string{"invalid evidence", "evidence: expected an SGX quote, found empty (simulation) evidence"}},
		{name: "quote bound to another certificate", marbleType: "byEnclave", issuer: platform.Issuer(func(q *sgxtest.QuoteParts) { q.ReportData = strangerRD }),
			wantReason: []string{"does not bind the presented TLS certificate", "ReportData: expected", "found " + hex.EncodeToString(strangerRD[:])}},
		{name: "quote from an untrusted PKI", marbleType: "byEnclave", issuer: sgxtest.Issuer{PKI: other},
			wantReason: []string{"invalid evidence", "PCK chain root SHA-256: expected"}},
		{name: "garbage evidence", marbleType: "byEnclave", issuer: fixedIssuer("not a quote"),
			wantReason: []string{"invalid evidence", "sgx quote"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := activateMarble(t, c, tc.marbleType, tc.issuer)
			if tc.wantReason == nil {
				if err != nil {
					t.Fatal(err)
				}
				if string(env["ROLE"]) != tc.wantRole || len(env[marbleenv.CertificateChain]) == 0 || len(env[marbleenv.PrivateKey]) == 0 {
					t.Fatalf("parameters: ROLE %q, chain %d bytes", env["ROLE"], len(env[marbleenv.CertificateChain]))
				}
				return
			}
			var rejected *marble.RejectedError
			if !errors.As(err, &rejected) {
				t.Fatalf("got %v, want a rejection", err)
			}
			if rejected.Code != codes.PermissionDenied {
				t.Errorf("code %s, want %s (reason %q)", rejected.Code, codes.PermissionDenied, rejected.Reason)
			}
			for _, w := range tc.wantReason {
				if !strings.Contains(rejected.Reason, w) {
					t.Errorf("reason %q lacks %q", rejected.Reason, w)
				}
			}
		})
	}
	t.Run("unknown marble type", func(t *testing.T) {
		_, err := activateMarble(t, c, "nobody", platform.Issuer(nil))
		var rejected *marble.RejectedError
		if !errors.As(err, &rejected) || rejected.Code != codes.PermissionDenied || !strings.Contains(rejected.Reason, "unknown marble type") {
			t.Fatalf("got %v", err)
		}
	})
}

// fixedIssuer returns the same bytes whatever the report data.
type fixedIssuer string

func (f fixedIssuer) Issue(context.Context, [attestation.ReportDataSize]byte) ([]byte, error) {
	return []byte(f), nil
}
func (fixedIssuer) Insecure() bool { return false }

func TestSGXCoordinatorQuote(t *testing.T) {
	platform := coordtest.NewSGX(t)
	c := coordtest.Start(t, platform.Option(), coordtest.WithPrometheus())
	root := c.RootCertificate()
	ctx := context.Background()

	code, body := call(t, c, http.MethodGet, "/api/v2/quote", nil)
	if code != http.StatusOK {
		t.Fatalf("quote: %d %s", code, body.Message)
	}
	var q struct {
		Cert  string `json:"cert"`
		Quote []byte `json:"quote"`
	}
	if err := json.Unmarshal(body.Data, &q); err != nil {
		t.Fatal(err)
	}
	claims, err := platform.Verifier.Verify(ctx, q.Quote)
	if err != nil {
		t.Fatalf("the Coordinator's quote does not verify: %v", err)
	}
	if claims.ReportData != attestation.BindHash(root.Raw) {
		t.Fatal("the quote's report data is not SHA-256(root certificate DER)")
	}
	if parsedRoot, _, err := api.ParseCertificateChain([]byte(q.Cert)); err != nil || !parsedRoot.Equal(root) {
		t.Fatalf("the quote's chain does not hold the root: %v", err)
	}

	// The client library verifies it too, with a fresh nonce and the
	// identity of sgxtest.DefaultQuoteParts.
	qp := sgxtest.DefaultQuoteParts()
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	att, err := api.VerifyCoordinator(ctx, c.ClientAddr(), api.VerifyOptions{UniqueID: hex.EncodeToString(qp.MREnclave[:]), Verifier: platform.Verifier, Nonce: nonce})
	if err != nil {
		t.Fatalf("api.VerifyCoordinator: %v", err)
	}
	if !att.Root.Equal(root) || att.Claims.ReportData != attestation.BindHash(root.Raw, nonce) {
		t.Fatal("the nonce quote does not bind root ‖ nonce")
	}
	if _, err := api.VerifyCoordinator(ctx, c.ClientAddr(), api.VerifyOptions{UniqueID: strings.Repeat("ab", 32), Verifier: platform.Verifier}); !errors.Is(err, api.ErrVerification) {
		t.Fatalf("a wrong UniqueID was accepted: %v", err)
	}

	// Status and metrics name the TEE.
	code, body = call(t, c, http.MethodGet, "/api/v2/status", nil)
	if code != http.StatusOK || !strings.Contains(string(body.Data), "TEE: gramine-sgx.") || strings.Contains(string(body.Data), "SIMULATION") {
		t.Fatalf("status %d %s", code, body.Data)
	}
	resp, err := http.Get("http://" + c.Server.PrometheusAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`coordinator_tee_info{tee="gramine-sgx"} 1`, "coordinator_simulation 0"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// sealFiles returns the contents of every file in dir.
func sealFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		out[path] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSGXRestartWithGramineSealKey(t *testing.T) {
	platform := coordtest.NewSGX(t)
	sealDir := t.TempDir()
	start := func(t *testing.T, opts ...coordtest.Option) *coordtest.Coordinator {
		t.Helper()
		return coordtest.Start(t, append([]coordtest.Option{platform.Option(), coordtest.WithSealDir(sealDir)}, opts...)...)
	}
	c := start(t)
	c.SetManifest(t, sgxManifest())
	root := c.RootCertificate()
	if _, err := activateMarble(t, c, "byEnclave", platform.Issuer(nil)); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	sealed := sealFiles(t, sealDir)
	if len(sealed) == 0 {
		t.Fatal("nothing was sealed")
	}
	signerKeyFile := filepath.Join(platform.AttestationDir, "keys", "_sgx_mrsigner")
	signerKey, err := os.ReadFile(signerKeyFile)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("same key file resumes", func(t *testing.T) {
		c := start(t)
		if got := statusCode(t, c); got != 3 {
			t.Fatalf("status %d, want 3", got)
		}
		if !c.RootCertificate().Equal(root) {
			t.Fatal("the root changed across the restart")
		}
		if _, err := activateMarble(t, c, "bySigner", platform.Issuer(nil)); err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		sealed = sealFiles(t, sealDir)
	})

	recoveryCases := []struct {
		name string
		prep func(t *testing.T) []coordtest.Option
	}{
		{"another sealing key", func(t *testing.T) []coordtest.Option {
			other := bytes.Clone(signerKey)
			other[0] ^= 1
			coordtest.WriteFile(t, signerKeyFile, other)
			t.Cleanup(func() { coordtest.WriteFile(t, signerKeyFile, signerKey) })
			return nil
		}},
	}
	for _, rc := range recoveryCases {
		t.Run(rc.name+" enters recovery", func(t *testing.T) {
			c := start(t, rc.prep(t)...)
			if got := statusCode(t, c); got != 1 {
				t.Fatalf("status %d, want 1 (recovery)", got)
			}
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
			after := sealFiles(t, sealDir)
			if len(after) != len(sealed) {
				t.Fatalf("seal folder has %d files after recovery, had %d", len(after), len(sealed))
			}
			for path, content := range sealed {
				if after[path] != content {
					t.Fatalf("%s changed in recovery", path)
				}
			}
		})
	}

	t.Run("without sealed_key enters recovery", func(t *testing.T) {
		keyFile := filepath.Join(sealDir, "sealed_key")
		if err := os.Rename(keyFile, keyFile+".aside"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Rename(keyFile+".aside", keyFile) })
		c := start(t)
		if got := statusCode(t, c); got != 1 {
			t.Fatalf("status %d, want 1 (recovery)", got)
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		after := sealFiles(t, sealDir)
		for path, content := range sealed {
			if path != keyFile && path != keyFile+".aside" && after[path] != content {
				t.Fatalf("%s changed in recovery", path)
			}
		}
	})

	t.Run("the original key opens the untouched state", func(t *testing.T) {
		c := start(t)
		if got := statusCode(t, c); got != 3 {
			t.Fatalf("status %d, want 3", got)
		}
		if !c.RootCertificate().Equal(root) {
			t.Fatal("the root changed")
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
	})

	// The manifest leaves SealMode empty, so the configured mode rules; the
	// sealed key records the mode that sealed it, so a restart with another
	// configured mode unseals with the right Gramine key and re-seals.
	enclaveKeyFile := filepath.Join(platform.AttestationDir, "keys", "_sgx_mrenclave")
	enclaveKey, err := os.ReadFile(enclaveKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []coordinator.SealMode{coordinator.SealModeUniqueKey, coordinator.SealModeProductKey, coordinator.SealModeProductKey} {
		t.Run("configured "+string(mode), func(t *testing.T) {
			c := start(t, coordtest.WithSealMode(mode))
			code, body := call(t, c, http.MethodGet, "/api/v2/status", nil)
			if code != http.StatusOK || !strings.Contains(string(body.Data), `"code":3`) || !strings.Contains(string(body.Data), "Seal mode: "+string(mode)+".") {
				t.Fatalf("status %d %s", code, body.Data)
			}
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("the key of the recorded mode is the one used", func(t *testing.T) {
		// Sealed in ProductKey now: a broken _sgx_mrenclave does not matter,
		// a broken _sgx_mrsigner does.
		other := bytes.Clone(enclaveKey)
		other[0] ^= 1
		coordtest.WriteFile(t, enclaveKeyFile, other)
		defer coordtest.WriteFile(t, enclaveKeyFile, enclaveKey)
		c := start(t, coordtest.WithSealMode(coordinator.SealModeProductKey))
		if got := statusCode(t, c); got != 3 {
			t.Fatalf("status %d with a changed _sgx_mrenclave, want 3", got)
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		other = bytes.Clone(signerKey)
		other[0] ^= 1
		coordtest.WriteFile(t, signerKeyFile, other)
		defer coordtest.WriteFile(t, signerKeyFile, signerKey)
		c = start(t, coordtest.WithSealMode(coordinator.SealModeUniqueKey))
		if got := statusCode(t, c); got != 1 {
			t.Fatalf("status %d with a changed _sgx_mrsigner, want 1 (recovery)", got)
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSGXStartRefusals(t *testing.T) {
	platform := coordtest.NewSGX(t)
	tests := []struct {
		name string
		opts []coordtest.Option
		want string
	}{
		{"keys without quote", []coordtest.Option{coordtest.WithAttestationDir(coordtest.NewGramineDir(t, false)), coordtest.WithIssuer(platform.Issuer(nil)), coordtest.WithVerifier(platform.Verifier)},
			`attestation_type "none"`},
		{"no attestation folder", []coordtest.Option{coordtest.WithAttestationDir(t.TempDir())}, "found neither"},
		{"simulation issuer outside simulation", []coordtest.Option{platform.Option(), coordtest.WithIssuer(attestation.SimulationIssuer{})}, "issuer is insecure"},
		{"issuer in simulation", []coordtest.Option{coordtest.WithIssuer(platform.Issuer(nil))}, "simulation mode, which uses neither"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := coordtest.TryStart(t, tc.opts...)
			if err == nil {
				_ = c.Stop()
				t.Fatal("the Coordinator started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q lacks %q", err, tc.want)
			}
		})
	}
}
