package sgx_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/attestation/sgx"
)

func TestReadQCNLConf(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name      string
		content   *string // nil: no file
		want      sgx.CollateralSource
		wantBase  string
		wantFound bool
		wantErr   string
	}{
		{name: "missing file", wantBase: sgx.IntelPCSURL},
		{name: "chart default", content: ptr(`{"pccs_url":"https://global.acccache.azure.net/sgx/certification/v4/","use_secure_cert":true}`),
			want: sgx.CollateralSource{URL: "https://global.acccache.azure.net/sgx/certification/v4/"}, wantBase: "https://global.acccache.azure.net", wantFound: true},
		{name: "insecure PCCS", content: ptr(`{"pccs_url":"https://pccs.example.com:8081/sgx/certification/v3","use_secure_cert":false}`),
			want: sgx.CollateralSource{URL: "https://pccs.example.com:8081/sgx/certification/v3", InsecureSkipVerify: true}, wantBase: "https://pccs.example.com:8081", wantFound: true},
		{name: "string FALSE", content: ptr(`{"pccs_url":"https://pccs.internal/","use_secure_cert":"FALSE"}`),
			want: sgx.CollateralSource{URL: "https://pccs.internal/", InsecureSkipVerify: true}, wantBase: "https://pccs.internal", wantFound: true},
		{name: "empty URL selects Intel PCS", content: ptr(`{"pccs_url":"","use_secure_cert":true}`), wantBase: sgx.IntelPCSURL, wantFound: true},
		{name: "no keys", content: ptr(`{}`), wantBase: sgx.IntelPCSURL, wantFound: true},
		{name: "Intel sample with comments", content: ptr("{\n  // *** ATTENTION : This file is in JSON format\n  //PCCS server address\n  \"pccs_url\": \"https://localhost:8081/sgx/certification/v4/\"\n  /* To accept insecure HTTPS certificate, set this option to false */\n  ,\"use_secure_cert\": false\n  ,\"collateral_service\": \"https://api.trustedservices.intel.com/sgx/certification/v4/\"\n}\n"),
			want: sgx.CollateralSource{URL: "https://localhost:8081/sgx/certification/v4/", InsecureSkipVerify: true}, wantBase: "https://localhost:8081", wantFound: true},
		{name: "slashes inside a string are kept", content: ptr(`{"pccs_url":"https://pccs.internal//x"}`),
			want: sgx.CollateralSource{URL: "https://pccs.internal//x"}, wantBase: "https://pccs.internal//x", wantFound: true},
		{name: "malformed", content: ptr(`{"pccs_url": `), wantErr: "expected a JSON object"},
		{name: "not an object", content: ptr(`["https://pccs"]`), wantErr: "expected a JSON object"},
		{name: "bad use_secure_cert", content: ptr(`{"use_secure_cert":"maybe"}`), wantErr: `use_secure_cert: expected true or false, found "maybe"`},
		{name: "relative URL", content: ptr(`{"pccs_url":"pccs:8081"}`), wantErr: "pccs_url"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "qcnl-"+string(rune('a'+i))+".conf")
			if tc.content != nil {
				if err := os.WriteFile(path, []byte(*tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, found, err := sgx.ReadQCNLConf(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("got %v, want an error naming %s and containing %q", err, path, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || found != tc.wantFound || got.BaseURL() != tc.wantBase {
				t.Fatalf("got %+v (found %v, base %q), want %+v (found %v, base %q)", got, found, got.BaseURL(), tc.want, tc.wantFound, tc.wantBase)
			}
		})
	}
	unreadable := filepath.Join(dir, "folder.conf")
	if err := os.Mkdir(unreadable, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sgx.ReadQCNLConf(unreadable); err == nil || !strings.Contains(err.Error(), unreadable) {
		t.Fatalf("a folder as QCNL file: %v", err)
	}
}

func ptr(s string) *string { return &s }

// TestNewDCAPVerifierFetchesFromPCCS verifies a quote through a PCCS
// served over TLS with a self-signed certificate, named the way quote
// provider configurations name it (with the /sgx/certification/v4/ path).
func TestNewDCAPVerifierFetchesFromPCCS(t *testing.T) {
	p := newPKI(t)
	var hits atomic.Int32
	srv := httptest.NewTLSServer(pcsHandler(p.collateral(t, nil), &hits, ""))
	t.Cleanup(srv.Close)
	q := p.quote(t, nil)
	opts := sgx.Options{Root: p.Root, Now: func() time.Time { return time.Unix(pkiNowUnix, 0) }}

	insecure := sgx.CollateralSource{URL: srv.URL + "/sgx/certification/v4/", InsecureSkipVerify: true}
	v, err := sgx.NewDCAPVerifier(insecure, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), q); err != nil {
		t.Fatalf("use_secure_cert=false: %v", err)
	}
	if _, err := v.Verify(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 4 {
		t.Fatalf("requests for two verifications: expected 4 (cached), found %d", n)
	}

	v, err = sgx.NewDCAPVerifier(sgx.CollateralSource{URL: srv.URL}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), q); !errors.Is(err, sgx.ErrFetch) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("use_secure_cert=true against a self-signed PCCS: expected a certificate error, found %v", err)
	}
	if _, err := sgx.NewDCAPVerifier(sgx.CollateralSource{URL: "not a url"}, sgx.Options{}); !errors.Is(err, sgx.ErrFetch) {
		t.Fatalf("bad URL: %v", err)
	}
}
