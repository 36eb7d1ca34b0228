package coordinator_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/marble"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

// switchProvider serves whichever collateral was set last.
type switchProvider struct {
	c atomic.Pointer[sgx.Collateral]
}

func (p *switchProvider) Collateral(context.Context, sgx.CollateralRequest) (*sgx.Collateral, error) {
	return p.c.Load(), nil
}

var allTCBStatuses = []string{
	attestation.TCBUpToDate, attestation.TCBSWHardeningNeeded, attestation.TCBConfigurationNeeded, attestation.TCBConfigurationAndSWHardeningNeeded,
	attestation.TCBOutOfDate, attestation.TCBOutOfDateConfigurationNeeded, attestation.TCBRevoked,
}

// policyManifest has, for the enclave of sgxtest.DefaultQuoteParts, a
// package (and a marble of the same name) without TCB lists ("default"),
// one accepting only each TCB status ("only<Status>"), and two with
// advisory lists.
func policyManifest(t *testing.T) []byte {
	t.Helper()
	qp := sgxtest.DefaultQuoteParts()
	id := hex.EncodeToString(qp.MREnclave[:])
	pkgs := map[string]map[string]any{
		"default":   {"UniqueID": id},
		"advListed": {"UniqueID": id, "AcceptedAdvisories": []string{"intel-sa-00615"}},
		"advOther":  {"UniqueID": id, "AcceptedAdvisories": []string{"INTEL-SA-00334"}},
	}
	for _, s := range allTCBStatuses {
		pkgs["only"+s] = map[string]any{"UniqueID": id, "AcceptedTCBStatuses": []string{s}}
	}
	marbles := map[string]map[string]any{}
	for name := range pkgs {
		marbles[name] = map[string]any{"Package": name}
	}
	m, err := json.Marshal(map[string]any{"Packages": pkgs, "Marbles": marbles})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// wantActivation activates marbleType and checks the outcome: accepted
// when reasons is empty, otherwise rejected with all of them.
func wantActivation(t *testing.T, c *coordtest.Coordinator, platform *coordtest.SGX, marbleType string, reasons ...string) {
	t.Helper()
	_, err := activateMarble(t, c, marbleType, platform.Issuer(nil))
	if len(reasons) == 0 {
		if err != nil {
			t.Errorf("marble %s: %v, want activation", marbleType, err)
		}
		return
	}
	var rejected *marble.RejectedError
	if !errors.As(err, &rejected) || rejected.Code != codes.PermissionDenied {
		t.Errorf("marble %s: %v, want a PermissionDenied rejection", marbleType, err)
		return
	}
	for _, w := range reasons {
		if !strings.Contains(rejected.Reason, w) {
			t.Errorf("marble %s: reason %q lacks %q", marbleType, rejected.Reason, w)
		}
	}
}

// TestSGXManifestTCBPolicy checks that the Coordinator's activation path
// applies each package's AcceptedTCBStatuses (default UpToDate and
// SWHardeningNeeded) and AcceptedAdvisories to the TCB status and
// advisories its DCAP verifier computed, for every TCB status.
func TestSGXManifestTCBPolicy(t *testing.T) {
	platform := coordtest.NewSGX(t)
	prov := &switchProvider{}
	v, err := sgx.NewVerifier(prov, sgx.Options{Root: platform.PKI.Root, Now: sgxtest.Now})
	if err != nil {
		t.Fatal(err)
	}
	c := coordtest.Start(t, platform.Option(), coordtest.WithVerifier(v))
	c.SetManifest(t, policyManifest(t))

	for _, status := range allTCBStatuses {
		t.Run(status, func(t *testing.T) {
			// The synthetic PCK leaf has every component SVN at 5.
			col, err := platform.PKI.Collateral(func(cp *sgxtest.CollateralParts) {
				cp.TCBInfo.TCBLevels = []sgx.TCBLevel{sgxtest.TCBLevel(6, 10, attestation.TCBUpToDate), sgxtest.TCBLevel(5, 10, status, "SA-"+status)}
			})
			if err != nil {
				t.Fatal(err)
			}
			prov.c.Store(col)
			other := "only" + attestation.TCBUpToDate
			if status == attestation.TCBUpToDate {
				other = "only" + attestation.TCBOutOfDate
			}
			if status == attestation.TCBRevoked {
				// The verifier rejects Revoked whatever the package says.
				for _, m := range []string{"default", "only" + status, other} {
					wantActivation(t, c, platform, m, "invalid evidence", "TCB status: expected not Revoked, found Revoked")
				}
				return
			}
			if slices.Contains([]string{attestation.TCBUpToDate, attestation.TCBSWHardeningNeeded}, status) {
				wantActivation(t, c, platform, "default")
			} else {
				wantActivation(t, c, platform, "default", `package "default"`, "TCBStatus: expected one of [UpToDate SWHardeningNeeded], found "+status)
			}
			wantActivation(t, c, platform, "only"+status)
			wantActivation(t, c, platform, other, `package "`+other+`"`, "TCBStatus: expected one of ["+strings.TrimPrefix(other, "only")+"], found "+status)
		})
	}

	t.Run("advisories", func(t *testing.T) {
		// Default collateral: SWHardeningNeeded with INTEL-SA-00615.
		col, err := platform.PKI.Collateral(nil)
		if err != nil {
			t.Fatal(err)
		}
		prov.c.Store(col)
		wantActivation(t, c, platform, "default")
		wantActivation(t, c, platform, "advListed")
		wantActivation(t, c, platform, "advOther", `package "advOther"`, "Advisories: expected only [INTEL-SA-00334], found INTEL-SA-00615")
	})
}

// TestSGXCollateralUnreachable checks that a marble rejected because the
// PCCS cannot be reached is told so, with the URL.
func TestSGXCollateralUnreachable(t *testing.T) {
	platform := coordtest.NewSGX(t)
	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL
	down.Close()
	v, err := sgx.NewDCAPVerifier(sgx.CollateralSource{URL: url + "/sgx/certification/v4/"}, sgx.Options{Root: platform.PKI.Root, Now: sgxtest.Now})
	if err != nil {
		t.Fatal(err)
	}
	c := coordtest.Start(t, platform.Option(), coordtest.WithVerifier(v))
	c.SetManifest(t, policyManifest(t))
	// An unreachable PCCS does not judge the marble: the Coordinator answers
	// Unavailable, and the marble retries until its retry period ends.
	_, err = activateMarble(t, c, "default", platform.Issuer(nil))
	var unavailable *marble.UnavailableError
	if !errors.As(err, &unavailable) || unavailable.Attempts < 2 || status.Code(unavailable.Last) != codes.Unavailable {
		t.Fatalf("activation with the PCCS down: %v, want retried Unavailable answers", err)
	}
	for _, w := range []string{"cannot be verified right now", "DCAP collateral: fetching for FMSPC", "GET " + url + "/sgx/certification/v4/tcb?", "connection refused"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}

// flakyProvider fails as an unreachable PCCS does until up is set.
type flakyProvider struct {
	up    atomic.Bool
	calls atomic.Int32
	next  sgx.CollateralProvider
}

func (p *flakyProvider) Collateral(ctx context.Context, req sgx.CollateralRequest) (*sgx.Collateral, error) {
	if p.calls.Add(1); !p.up.Load() {
		return nil, fmt.Errorf("GET https://pccs.invalid/tcb: connection refused (%w)", attestation.ErrUnavailable)
	}
	return p.next.Collateral(ctx, req)
}

// TestSGXCollateralRecovers shows why Unavailable matters: a marble that
// starts while the PCCS is down activates once it is back, without a
// restart.
func TestSGXCollateralRecovers(t *testing.T) {
	platform := coordtest.NewSGX(t)
	col, err := platform.PKI.Collateral(nil)
	if err != nil {
		t.Fatal(err)
	}
	prov := &flakyProvider{next: sgx.StaticProvider{C: col}}
	v, err := sgx.NewVerifier(prov, sgx.Options{Root: platform.PKI.Root, Now: sgxtest.Now})
	if err != nil {
		t.Fatal(err)
	}
	c := coordtest.Start(t, platform.Option(), coordtest.WithVerifier(v))
	c.SetManifest(t, policyManifest(t))
	go func() {
		for prov.calls.Load() < 2 {
			time.Sleep(10 * time.Millisecond)
		}
		prov.up.Store(true)
	}()
	if _, err := activateMarble(t, c, "default", platform.Issuer(nil)); err != nil {
		t.Fatalf("activation after the PCCS came back: %v", err)
	}
	if n := prov.calls.Load(); n < 3 {
		t.Errorf("collateral asked %d times, want the failed tries and a successful one", n)
	}
}
