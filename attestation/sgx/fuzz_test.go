package sgx_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

func FuzzParseQuote(f *testing.F) {
	p := newPKI(f)
	q := p.quote(f, nil)
	f.Add(q)
	f.Add(sgxtest.WithOEHeader(q))
	f.Add(q[:sgx.HeaderSize+sgx.ReportBodySize+4])
	if dir, ok := fixturePath(); ok {
		for _, name := range []string{"sgx_quote", "tdx_quote", "tdx_quote_outdated"} {
			if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := sgx.ParseEvidence(b)
		if err != nil {
			if !errors.Is(err, sgx.ErrTruncated) && !errors.Is(err, sgx.ErrTrailing) && !errors.Is(err, sgx.ErrMalformed) {
				t.Fatalf("error wraps no parser sentinel: %v", err)
			}
			return
		}
		if (q.Report != nil) != (q.BodyType == sgx.BodyTypeSGX) {
			t.Fatalf("report presence %v does not match body type %d", q.Report != nil, q.BodyType)
		}
		if len(q.Signed) < sgx.HeaderSize+len(q.Body) {
			t.Fatalf("signed part %d shorter than header and body %d", len(q.Signed), sgx.HeaderSize+len(q.Body))
		}
		if len(q.QEReport.Raw) != sgx.ReportBodySize {
			t.Fatalf("QE report is %d bytes", len(q.QEReport.Raw))
		}
	})
}

func BenchmarkVerifySynthetic(b *testing.B) {
	p := newPKI(b)
	v := p.verifier(b, p.collateral(b, nil), sgx.Options{})
	q := p.quote(b, nil)
	benchVerify(b, v, q)
}

func BenchmarkVerifyPhala(b *testing.B) {
	fx := loadPhala(b)
	v := newFixtureVerifier(b, fx.collateral, time.Unix(phalaTimeUnix, 0))
	benchVerify(b, v, fx.quote)
}

func benchVerify(b *testing.B, v *sgx.Verifier, q []byte) {
	ctx := context.Background()
	if _, err := v.Verify(ctx, q); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyPhalaCold verifies with a fresh verifier each time, so
// nothing is cached.
func BenchmarkVerifyPhalaCold(b *testing.B) {
	fx := loadPhala(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		v := newFixtureVerifier(b, fx.collateral, time.Unix(phalaTimeUnix, 0))
		if _, err := v.Verify(ctx, fx.quote); err != nil {
			b.Fatal(err)
		}
	}
}
