package issuer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/attestation"
)

func writeFake(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// fakeQuote is a v3-shaped quote carrying rd as REPORTDATA.
func fakeQuote(rd [attestation.ReportDataSize]byte) []byte {
	q := make([]byte, 1020)
	binary.LittleEndian.PutUint16(q, 3)
	copy(q[reportDataOffset:], rd[:])
	return q
}

func TestGramine(t *testing.T) {
	rd := attestation.BindHash([]byte("cert"))
	tests := []struct {
		name  string
		files map[string][]byte
		msg   string
	}{
		{"ok", map[string][]byte{"attestation_type": []byte("dcap\n"), "user_report_data": make([]byte, 64), "quote": fakeQuote(rd)}, ""},
		{"no attestation", map[string][]byte{"attestation_type": []byte("none"), "user_report_data": make([]byte, 64)}, `attestation_type: expected dcap, found "none"`},
		{"gramine-direct", map[string][]byte{}, "attestation_type: open"},
		{"no quote", map[string][]byte{"attestation_type": []byte("dcap"), "user_report_data": make([]byte, 64)}, "Gramine quote: open"},
		{"no report data file", map[string][]byte{"attestation_type": []byte("dcap"), "quote": fakeQuote(rd)}, "user_report_data: open"},
		{"other report data", map[string][]byte{"attestation_type": []byte("dcap"), "user_report_data": make([]byte, 64), "quote": fakeQuote([64]byte{9})}, "REPORTDATA: expected"},
		{"short quote", map[string][]byte{"attestation_type": []byte("dcap"), "user_report_data": make([]byte, 64), "quote": make([]byte, 100)}, "quote length: expected at least 432 bytes, found 100"},
		{"version 4", map[string][]byte{"attestation_type": []byte("dcap"), "user_report_data": make([]byte, 64), "quote": append([]byte{4, 0}, fakeQuote(rd)[2:]...)}, "quote version: expected 3, found 4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFake(t, dir, tc.files)
			g := NewGramine(dir)
			if g.Insecure() {
				t.Fatal("Gramine issuer must not be insecure")
			}
			q, err := g.Issue(context.Background(), rd)
			if tc.msg != "" {
				if !errors.Is(err, ErrIssue) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("expected error containing %q, found %v", tc.msg, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(q, tc.files["quote"]) {
				t.Fatal("returned quote differs from the quote file")
			}
			written, err := os.ReadFile(filepath.Join(dir, "user_report_data"))
			if err != nil || !bytes.Equal(written, rd[:]) {
				t.Fatalf("user_report_data: expected %x, found %x (%v)", rd, written, err)
			}
		})
	}
	if NewGramine("").dir != GramineDir {
		t.Fatalf("default folder: expected %s", GramineDir)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewGramine(t.TempDir()).Issue(ctx, rd); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: expected context.Canceled, found %v", err)
	}
}

func TestTSM(t *testing.T) {
	rd := attestation.BindHash([]byte("td"))
	base := func() map[string][]byte {
		return map[string][]byte{"inblob": nil, "outblob": []byte("td-quote"), "provider": []byte("tdx_guest\n"), "generation": []byte("7\n")}
	}
	tests := []struct {
		name     string
		provider string
		mod      func(map[string][]byte)
		msg      string
	}{
		{"ok", "tdx_guest", nil, ""},
		{"any provider", "", func(m map[string][]byte) { m["provider"] = []byte("sev_guest") }, ""},
		{"wrong provider", "tdx_guest", func(m map[string][]byte) { m["provider"] = []byte("sev_guest") }, `provider: expected "tdx_guest", found "sev_guest"`},
		{"empty outblob", "tdx_guest", func(m map[string][]byte) { m["outblob"] = nil }, "outblob: expected a report, found 0 bytes"},
		{"no outblob", "tdx_guest", func(m map[string][]byte) { delete(m, "outblob") }, "outblob: open"},
		{"bad generation", "tdx_guest", func(m map[string][]byte) { m["generation"] = []byte("x") }, `generation: expected a decimal counter, found "x"`},
		{"no inblob", "tdx_guest", func(m map[string][]byte) { delete(m, "inblob") }, "inblob: open"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files := base()
			if tc.mod != nil {
				tc.mod(files)
			}
			dir := t.TempDir()
			writeFake(t, dir, files)
			iss := NewTSM(dir, tc.provider)
			if iss.Insecure() {
				t.Fatal("TSM issuer must not be insecure")
			}
			out, err := iss.Issue(context.Background(), rd)
			if tc.msg != "" {
				if !errors.Is(err, ErrIssue) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("expected error containing %q, found %v", tc.msg, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != "td-quote" {
				t.Fatalf("outblob: expected td-quote, found %q", out)
			}
			in, err := os.ReadFile(filepath.Join(dir, "inblob"))
			if err != nil || !bytes.Equal(in, rd[:]) {
				t.Fatalf("inblob: expected %x, found %x (%v)", rd, in, err)
			}
		})
	}
}

func TestInspectGramine(t *testing.T) {
	full := t.TempDir()
	writeFake(t, full, map[string][]byte{"quote": nil, "attestation_type": []byte("dcap\n")})
	if err := os.Mkdir(filepath.Join(full, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	keysOnly := t.TempDir()
	if err := os.Mkdir(filepath.Join(keysOnly, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	quoteDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(quoteDir, "quote"), 0o700); err != nil {
		t.Fatal(err)
	}
	keysFile := t.TempDir()
	writeFake(t, keysFile, map[string][]byte{"keys": nil})
	tests := []struct {
		name              string
		dir               string
		hasQuote, hasKeys bool
		attType           string
		msg               string
	}{
		{name: "quote and keys", dir: full, hasQuote: true, hasKeys: true, attType: `"dcap"`},
		{name: "keys only", dir: keysOnly, hasKeys: true, attType: "unreadable"},
		{name: "missing folder", dir: filepath.Join(keysOnly, "absent"), attType: "unreadable"},
		{name: "quote folder", dir: quoteDir, msg: "quote is not a file"},
		{name: "keys file", dir: keysFile, msg: "keys is not a folder"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := InspectGramine(tc.dir)
			if tc.msg != "" {
				if err == nil || !strings.Contains(err.Error(), filepath.Join(tc.dir, tc.msg)) {
					t.Fatalf("expected an error containing %q, found %v", tc.msg, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.HasQuote != tc.hasQuote || f.HasKeys != tc.hasKeys || f.AttestationType() != tc.attType {
				t.Fatalf("quote %v, keys %v, attestation_type %s: expected %v, %v, %s", f.HasQuote, f.HasKeys, f.AttestationType(), tc.hasQuote, tc.hasKeys, tc.attType)
			}
			if f.QuotePath != filepath.Join(tc.dir, "quote") || f.KeysPath != filepath.Join(tc.dir, "keys") || f.Issuer().dir != tc.dir {
				t.Fatalf("paths %s, %s, issuer folder %s: expected them in %s", f.QuotePath, f.KeysPath, f.Issuer().dir, tc.dir)
			}
		})
	}
	if f, err := InspectGramine(""); err != nil || f.Dir != GramineDir {
		t.Fatalf("default folder: %+v, %v; expected %s", f, err, GramineDir)
	}
}
