// Package issuertest lays out fake device folders for tests of the evidence
// issuers and of what detects them.
package issuertest

import (
	"os"
	"path/filepath"
	"testing"
)

// Gramine describes a fake Gramine /dev/attestation folder. Zero fields
// leave their file out.
type Gramine struct {
	// AttestationType is the content of attestation_type ("dcap", "none").
	AttestationType string
	// Quote is the content of quote; nil leaves the file out, an empty
	// slice creates it empty.
	Quote []byte
	// UserReportData creates user_report_data with 64 zero bytes.
	UserReportData bool
	// Keys creates keys/; SignerKey and EnclaveKey are then written to
	// keys/_sgx_mrsigner and keys/_sgx_mrenclave when not nil.
	Keys                  bool
	SignerKey, EnclaveKey []byte
}

// Create lays the folder out in a new temporary folder and returns its
// path.
func (g Gramine) Create(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if g.AttestationType != "" {
		write("attestation_type", []byte(g.AttestationType))
	}
	if g.Quote != nil {
		write("quote", g.Quote)
	}
	if g.UserReportData {
		write("user_report_data", make([]byte, 64))
	}
	if g.Keys {
		if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
			t.Fatal(err)
		}
		if g.SignerKey != nil {
			write(filepath.Join("keys", "_sgx_mrsigner"), g.SignerKey)
		}
		if g.EnclaveKey != nil {
			write(filepath.Join("keys", "_sgx_mrenclave"), g.EnclaveKey)
		}
	}
	return dir
}
