package cli

import (
	"context"
	"errors"
	"testing"

	"github.com/marblemesh/marblemesh/internal/attestation/sgx"
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
	if _, err := DefaultVerifier(env(map[string]string{EnvPCCSURL: "https://pccs.example:8081"})); err != nil {
		t.Fatalf("PCCS URL: %v", err)
	}
}
