package sgx_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/attestation/sgx"
)

func bundle(t *testing.T, c *sgx.Collateral, mod func(map[string]any)) []byte {
	t.Helper()
	m := map[string]any{
		"tcb_info":                 string(c.TCBInfo),
		"tcb_info_signature":       hex.EncodeToString(c.TCBInfoSignature),
		"tcb_info_issuer_chain":    string(c.TCBInfoIssuerChain),
		"qe_identity":              string(c.QEIdentity),
		"qe_identity_signature":    hex.EncodeToString(c.QEIdentitySignature),
		"qe_identity_issuer_chain": string(c.QEIdentityIssuerChain),
		"pck_crl":                  hex.EncodeToString(c.PCKCRL),
		"pck_crl_issuer_chain":     string(c.PCKCRLIssuerChain),
		"root_ca_crl":              string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: c.RootCACRL})),
		"extra":                    "ignored",
	}
	if mod != nil {
		mod(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCollateralJSON(t *testing.T) {
	p := newPKI(t)
	c := p.collateral(t, nil)
	parsed, err := sgx.ParseCollateralJSON(bundle(t, c, nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.verifier(t, parsed, sgx.Options{}).Verify(context.Background(), p.quote(t, nil)); err != nil {
		t.Fatalf("bundle round trip: %v", err)
	}
	tests := map[string]struct {
		mod func(map[string]any)
		msg string
	}{
		"missing key":   {func(m map[string]any) { delete(m, "qe_identity") }, `bundle key "qe_identity": expected a string, found none`},
		"bad signature": {func(m map[string]any) { m["tcb_info_signature"] = "xyz" }, `bundle key "tcb_info_signature": expected hex`},
		"bad CRL":       {func(m map[string]any) { m["pck_crl"] = "not a crl" }, `bundle key "pck_crl": expected hex DER or PEM`},
		"wrong type":    {func(m map[string]any) { m["pck_crl"] = 5 }, "bundle: json"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := sgx.ParseCollateralJSON(bundle(t, c, tc.mod))
			if !errors.Is(err, sgx.ErrCollateral) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("expected %q, found %v", tc.msg, err)
			}
		})
	}
	if _, err := (sgx.StaticProvider{}).Collateral(context.Background(), sgx.CollateralRequest{}); !errors.Is(err, sgx.ErrCollateral) {
		t.Fatalf("empty static provider: expected ErrCollateral, found %v", err)
	}
}
