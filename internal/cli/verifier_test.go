package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/attestation/sgx"
)

func TestDefaultVerifier(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	v, err := DefaultVerifier(env(nil))
	if err != nil || v == nil {
		t.Fatalf("default verifier: %v", err)
	}
	// The real verifier parses the evidence before fetching anything, so a
	// malformed quote fails without touching the network.
	if _, err := v.Verify(context.Background(), []byte{3, 0, 2}); !errors.Is(err, sgx.ErrTruncated) && !errors.Is(err, sgx.ErrMalformed) {
		t.Fatalf("malformed quote: %v", err)
	}
	if _, err := v.Verify(context.Background(), nil); err == nil {
		t.Fatal("empty (simulation) evidence accepted")
	}
	if _, err := DefaultVerifier(env(map[string]string{EnvPCCSURL: "not a url"})); err == nil {
		t.Fatal("invalid PCCS URL accepted")
	}
	for _, u := range []string{"https://pccs.example:8081", "https://pccs.example:8081/sgx/certification/v4/"} {
		if _, err := DefaultVerifier(env(map[string]string{EnvPCCSURL: u})); err != nil {
			t.Fatalf("PCCS URL %s: %v", u, err)
		}
	}
	if _, err := DefaultVerifier(env(map[string]string{EnvPCCSURL: "not a url"})); err == nil || !strings.Contains(err.Error(), EnvPCCSURL) {
		t.Fatalf("invalid PCCS URL: the error does not name %s: %v", EnvPCCSURL, err)
	}
}
