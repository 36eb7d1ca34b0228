package sgx_test

import (
	"testing"

	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

// pkiNowUnix is the verification time of the synthetic PKI.
const pkiNowUnix = sgxtest.NowUnix

// testPKI adapts sgxtest.PKI to tests: failures end the test.
type testPKI struct{ *sgxtest.PKI }

func newPKI(t testing.TB) testPKI {
	t.Helper()
	p, err := sgxtest.New()
	if err != nil {
		t.Fatal(err)
	}
	return testPKI{p}
}

func (p testPKI) setLeaf(t testing.TB, e sgxtest.PCKExt) {
	t.Helper()
	if err := p.SetLeaf(e); err != nil {
		t.Fatal(err)
	}
}

func (p testPKI) quote(t testing.TB, mod func(*sgxtest.QuoteParts)) []byte {
	t.Helper()
	q, err := p.Quote(mod)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func (p testPKI) collateral(t testing.TB, mod func(*sgxtest.CollateralParts)) *sgx.Collateral {
	t.Helper()
	c, err := p.Collateral(mod)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (p testPKI) verifier(t testing.TB, c *sgx.Collateral, opts sgx.Options) *sgx.Verifier {
	t.Helper()
	v, err := p.Verifier(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
