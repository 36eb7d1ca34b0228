package marble_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/issuer"
	"github.com/marblemesh/marblemesh/marble"
	"github.com/marblemesh/marblemesh/marble/marbleenv"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

// fakeGramine is a Gramine attestation folder whose user_report_data and
// quote are named pipes served by a goroutine: like gramine-sgx, it
// answers the report data written to user_report_data with a quote
// binding it, produced here by a synthetic SGX issuer.
type fakeGramine struct {
	dir string
	mu  sync.Mutex
	rds [][attestation.ReportDataSize]byte
}

func newFakeGramine(t *testing.T, quotes attestation.Issuer) *fakeGramine {
	t.Helper()
	f := &fakeGramine{dir: t.TempDir()}
	if err := os.WriteFile(filepath.Join(f.dir, "attestation_type"), []byte("dcap"), 0o600); err != nil {
		t.Fatal(err)
	}
	rdPath, quotePath := filepath.Join(f.dir, "user_report_data"), filepath.Join(f.dir, "quote")
	for _, p := range []string{rdPath, quotePath} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			// Opening blocks until the issuer opens the pipe for writing;
			// reading ends when it closes it.
			rd, err := os.ReadFile(rdPath)
			if ctx.Err() != nil {
				return
			}
			var q []byte
			if err == nil && len(rd) != attestation.ReportDataSize {
				err = fmt.Errorf("expected %d bytes, found %d", attestation.ReportDataSize, len(rd))
			}
			if err == nil {
				var data [attestation.ReportDataSize]byte
				copy(data[:], rd)
				f.mu.Lock()
				f.rds = append(f.rds, data)
				f.mu.Unlock()
				q, err = quotes.Issue(ctx, data)
			}
			if err != nil {
				t.Errorf("fake Gramine: %v", err)
			}
			// An empty quote makes the issuer fail rather than hang.
			if err := os.WriteFile(quotePath, q, 0o600); err != nil && ctx.Err() == nil {
				t.Errorf("fake Gramine: writing the quote: %v", err)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		// Opening a pipe read-write never blocks and releases the
		// goroutine from whichever open it waits in.
		for {
			for _, p := range []string{rdPath, quotePath} {
				if fh, err := os.OpenFile(p, os.O_RDWR, 0); err == nil {
					_ = fh.Close()
				}
			}
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	return f
}

func (f *fakeGramine) reportData() [][attestation.ReportDataSize]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][attestation.ReportDataSize]byte(nil), f.rds...)
}

// TestGramineMarbleActivatesOutsideSimulation runs the marble runtime as
// under gramine-sgx: ConfigFromEnv selects the Gramine issuer from the
// attestation folder, whose quote an in-process Coordinator outside
// simulation verifies against its synthetic DCAP PKI and the manifest.
func TestGramineMarbleActivatesOutsideSimulation(t *testing.T) {
	platform := coordtest.NewSGX(t)
	c := coordtest.Start(t, platform.Option())
	qp := sgxtest.DefaultQuoteParts()
	c.SetManifest(t, fmt.Appendf(nil, `{
  "Packages": {
    "enclave": {"UniqueID": %q, "Debug": false},
    "upToDateOnly": {"UniqueID": %q, "Debug": false, "AcceptedTCBStatuses": ["UpToDate"]}
  },
  "Marbles": {
    "backend": {"Package": "enclave", "Parameters": {"Env": {"ROLE": "backend"}}},
    "strict":  {"Package": "upToDateOnly"}
  }
}`, hex.EncodeToString(qp.MREnclave[:]), hex.EncodeToString(qp.MREnclave[:])))

	activate := func(t *testing.T, marbleType string, quotes attestation.Issuer) (map[string][]byte, *fakeGramine, error) {
		t.Helper()
		g := newFakeGramine(t, quotes)
		env := map[string]string{
			marble.EnvMarbleType:      marbleType,
			marble.EnvCoordinatorAddr: c.MeshAddr(),
			marble.EnvUUIDFile:        filepath.Join(t.TempDir(), "uuid"),
			marble.EnvSimulation:      "0",
			marble.EnvAttestationDir:  g.dir,
		}
		cfg, err := marble.ConfigFromEnv(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := cfg.Issuer.(*issuer.Gramine); !ok || cfg.Issuer.Insecure() {
			t.Fatalf("issuer %T, want the Gramine issuer", cfg.Issuer)
		}
		cfg.RetryTimeout, cfg.Logger = 5*time.Second, slog.New(slog.DiscardHandler)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		p, err := marble.Activate(ctx, cfg)
		return p.GetEnv(), g, err
	}

	t.Run("activated", func(t *testing.T) {
		env, g, err := activate(t, "backend", platform.Issuer(nil))
		if err != nil {
			t.Fatal(err)
		}
		if string(env["ROLE"]) != "backend" || len(env[marbleenv.CertificateChain]) == 0 || len(env[marbleenv.PrivateKey]) == 0 {
			t.Fatalf("parameters: ROLE %q, chain %d bytes, key %d bytes", env["ROLE"], len(env[marbleenv.CertificateChain]), len(env[marbleenv.PrivateKey]))
		}
		rds := g.reportData()
		if len(rds) != 1 || rds[0] == ([attestation.ReportDataSize]byte{}) {
			t.Fatalf("report data written to user_report_data: %x, want one non-zero value", rds)
		}
	})

	rejections := []struct {
		name       string
		marbleType string
		quotes     attestation.Issuer
		want       []string
	}{
		{"debug enclave", "backend", platform.Issuer(func(q *sgxtest.QuoteParts) { q.Flags = 0x07 }), []string{`package "enclave"`, "Debug: expected a production enclave, found a debug enclave"}},
		{"TCB status not accepted by the package", "strict", platform.Issuer(nil), []string{`package "upToDateOnly"`, "TCBStatus: expected one of [UpToDate], found SWHardeningNeeded"}},
		{"quote bound to other report data", "backend", platform.Issuer(func(q *sgxtest.QuoteParts) { q.ReportData[0] ^= 1 }), nil},
	}
	for _, tc := range rejections {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := activate(t, tc.marbleType, tc.quotes)
			if tc.want == nil {
				// The Gramine issuer refuses a quote that does not carry
				// the report data it wrote, before the Coordinator is asked.
				if !errors.Is(err, issuer.ErrIssue) || !strings.Contains(err.Error(), "Gramine quote REPORTDATA: expected") {
					t.Fatalf("err = %v, want the issuer's REPORTDATA mismatch", err)
				}
				return
			}
			var rejected *marble.RejectedError
			if !errors.As(err, &rejected) {
				t.Fatalf("err = %v, want a rejection", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(rejected.Reason, w) {
					t.Errorf("reason %q lacks %q", rejected.Reason, w)
				}
			}
		})
	}
}
