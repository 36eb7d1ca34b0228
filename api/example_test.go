package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log"
	"math/big"
	"time"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

// A program outside this repository verifies a Coordinator with api and
// the DCAP verifier of attestation/sgx, then uses the attested root
// certificate for every other call.
func Example_verifyCoordinator() {
	ctx := context.Background()
	// Collateral comes from the PCCS of the cluster (or Intel's PCS when
	// the URL is empty); its signatures are checked up to Intel's SGX Root CA.
	verifier, err := sgx.NewDCAPVerifier(sgx.CollateralSource{URL: "https://pccs.example:8081"}, sgx.Options{})
	if err != nil {
		log.Fatal(err)
	}
	productID, securityVersion := uint16(1), uint(3)
	att, err := api.VerifyCoordinator(ctx, "coordinator.example:4433", api.VerifyOptions{
		SignerID:        "43361affedeb75affee9baec7e054a5e14883213e5a121b67d74a0e12e9d2b7a",
		ProductID:       &productID,
		SecurityVersion: &securityVersion,
		Verifier:        verifier,
	})
	if err != nil {
		log.Fatal(err)
	}
	status, err := api.Status(ctx, "coordinator.example:4433", att.Root)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(api.Fingerprint(att.Root), status.Message)
}

// VerifyQuote is the check VerifyCoordinator makes once it has the quote.
// Here the quote comes from the synthetic SGX PKI of the tests instead of
// a Coordinator, and the verifier trusts that PKI's root instead of Intel's.
func ExampleVerifyQuote() {
	ctx := context.Background()
	pki, err := sgxtest.New()
	if err != nil {
		log.Fatal(err)
	}
	collateral, err := pki.Collateral(nil)
	if err != nil {
		log.Fatal(err)
	}
	verifier, err := pki.Verifier(collateral, sgx.Options{})
	if err != nil {
		log.Fatal(err)
	}
	root, err := selfSignedRoot()
	if err != nil {
		log.Fatal(err)
	}
	// The Coordinator's quote binds SHA-256 of its root certificate.
	evidence, err := sgxtest.Issuer{PKI: pki}.Issue(ctx, attestation.BindHash(root.Raw))
	if err != nil {
		log.Fatal(err)
	}

	productID, securityVersion := uint16(7), uint(3)
	opts := api.VerifyOptions{
		SignerID:        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
		ProductID:       &productID,
		SecurityVersion: &securityVersion,
		Verifier:        verifier,
	}
	att, err := api.VerifyQuote(ctx, &api.Quote{Root: root, Evidence: evidence}, opts)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("verified:", att.Claims.TCBStatus, att.Claims.Advisories)

	// The same quote against stricter requirements.
	opts.AcceptedTCBStatuses = []string{attestation.TCBUpToDate}
	_, err = api.VerifyQuote(ctx, &api.Quote{Root: root, Evidence: evidence}, opts)
	fmt.Println("refused:", err)
	// Output:
	// verified: SWHardeningNeeded [INTEL-SA-00615]
	// refused: the Coordinator's quote does not match the expected identity: attestation policy: TCBStatus: expected one of [UpToDate], found SWHardeningNeeded
}

func selfSignedRoot() (*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Example Coordinator Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}
