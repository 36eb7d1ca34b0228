package sgx_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/sgx"
)

// pcsServer serves collateral c with the PCS v4 API on 127.0.0.1.
func pcsServer(t *testing.T, c *sgx.Collateral, hits *atomic.Int32, drop string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(pcsHandler(c, hits, drop))
	t.Cleanup(srv.Close)
	return srv
}

// pcsHandler serves collateral c with the PCS v4 API, counting requests
// in hits and leaving out the header named drop.
func pcsHandler(c *sgx.Collateral, hits *atomic.Int32, drop string) http.Handler {
	mux := http.NewServeMux()
	signed := func(key string, obj, sig, chain []byte, header string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			if header != drop {
				w.Header().Set(header, url.QueryEscape(string(chain)))
			}
			fmt.Fprintf(w, `{%q:%s,"signature":%q}`, key, obj, hex.EncodeToString(sig))
		}
	}
	mux.HandleFunc("/sgx/certification/v4/tcb", func(w http.ResponseWriter, r *http.Request) {
		if got := r.URL.Query().Get("fmspc"); got != "00906ED50000" {
			http.Error(w, "unknown fmspc "+got, http.StatusNotFound)
			return
		}
		signed("tcbInfo", c.TCBInfo, c.TCBInfoSignature, c.TCBInfoIssuerChain, "TCB-Info-Issuer-Chain")(w, r)
	})
	mux.HandleFunc("/sgx/certification/v4/qe/identity", signed("enclaveIdentity", c.QEIdentity, c.QEIdentitySignature, c.QEIdentityIssuerChain, "SGX-Enclave-Identity-Issuer-Chain"))
	mux.HandleFunc("/sgx/certification/v4/pckcrl", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Query().Get("ca") != "processor" || r.URL.Query().Get("encoding") != "der" {
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		w.Header().Set("SGX-PCK-CRL-Issuer-Chain", url.QueryEscape(string(c.PCKCRLIssuerChain)))
		_, _ = w.Write(c.PCKCRL)
	})
	mux.HandleFunc("/sgx/certification/v4/rootcacrl", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, hex.EncodeToString(c.RootCACRL))
	})
	return mux
}

func TestPCSClientVerifiesAndCaches(t *testing.T) {
	p := newPKI(t)
	var hits atomic.Int32
	srv := pcsServer(t, p.collateral(t, nil), &hits, "")
	clock := time.Unix(pkiNowUnix, 0)
	now := func() time.Time { return clock }
	client, err := sgx.NewPCSClient(srv.URL, sgx.PCSOptions{HTTPClient: srv.Client(), TTL: time.Minute, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	v, err := sgx.NewVerifier(client, sgx.Options{Root: p.Root, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	q := p.quote(t, nil)
	for range 3 {
		if _, err := v.Verify(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	if n := hits.Load(); n != 4 {
		t.Fatalf("requests: expected 4 (one fetch, then cache), found %d", n)
	}
	clock = clock.Add(2 * time.Minute)
	if _, err := v.Verify(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 8 {
		t.Fatalf("requests after TTL: expected 8, found %d", n)
	}
}

func TestPCSClientErrors(t *testing.T) {
	p := newPKI(t)
	col := p.collateral(t, nil)
	req := sgx.CollateralRequest{FMSPC: p.Ext.FMSPC, CA: "processor"}
	var hits atomic.Int32

	missing := pcsServer(t, col, &hits, "TCB-Info-Issuer-Chain")
	c, err := sgx.NewPCSClient(missing.URL, sgx.PCSOptions{HTTPClient: missing.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Collateral(context.Background(), req); !errors.Is(err, sgx.ErrFetch) || !strings.Contains(err.Error(), "expected header TCB-Info-Issuer-Chain, found none") {
		t.Fatalf("missing header: found %v", err)
	}

	srv := pcsServer(t, col, &hits, "")
	c, err = sgx.NewPCSClient(srv.URL, sgx.PCSOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	other := sgx.CollateralRequest{FMSPC: []byte{1, 2, 3, 4, 5, 6}, CA: "processor"}
	if _, err := c.Collateral(context.Background(), other); !errors.Is(err, sgx.ErrFetch) || !strings.Contains(err.Error(), "expected status 200, found 404") ||
		errors.Is(err, attestation.ErrUnavailable) {
		t.Fatalf("unknown FMSPC: found %v, want a final (not temporary) fetch error", err)
	}
	if _, err := c.Collateral(context.Background(), sgx.CollateralRequest{FMSPC: p.Ext.FMSPC, CA: "root"}); !errors.Is(err, sgx.ErrFetch) || !strings.Contains(err.Error(), `CA: expected processor or platform, found "root"`) {
		t.Fatalf("bad CA: found %v", err)
	}

	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	c, err = sgx.NewPCSClient(downURL, sgx.PCSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Collateral(context.Background(), req); !errors.Is(err, sgx.ErrFetch) || !strings.Contains(err.Error(), "TCB Info: GET "+downURL) ||
		!errors.Is(err, attestation.ErrUnavailable) {
		t.Fatalf("unreachable: found %v, want a temporary fetch error", err)
	}

	for _, code := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusBadGateway} {
		busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }))
		c, err := sgx.NewPCSClient(busy.URL, sgx.PCSOptions{HTTPClient: busy.Client()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Collateral(context.Background(), req); !errors.Is(err, attestation.ErrUnavailable) {
			t.Errorf("status %d: found %v, want a temporary fetch error", code, err)
		}
		busy.Close()
	}
	if _, err := sgx.NewPCSClient("localhost:8081", sgx.PCSOptions{}); !errors.Is(err, sgx.ErrFetch) {
		t.Fatalf("relative URL: expected ErrFetch, found %v", err)
	}
	intel, err := sgx.NewPCSClient(sgx.IntelPCSURL, sgx.PCSOptions{})
	if err != nil || intel.RootCRLURL() != sgx.IntelRootCACRLURL {
		t.Fatalf("Intel PCS root CRL URL: expected %s, found %v (%v)", sgx.IntelRootCACRLURL, intel, err)
	}
}
