package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/test/coordtest"
)

// ownWork measures the Coordinator's own work for one activation of the
// benchmark manifest's marble type: the core as the mesh API calls it,
// with logging (JSON, discarded) and metrics, without TLS and gRPC.
func ownWork(marbleType string) (testing.BenchmarkResult, error) {
	c, err := core.New(core.Config{
		Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: store.NewMemory(),
		DNSNames: []string{"localhost"}, RecoveryKeyBits: 2048,
		Logger:  slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Metrics: core.NewMetrics(prometheus.NewRegistry()),
	})
	if err != nil {
		return testing.BenchmarkResult{}, err
	}
	if _, err := c.SetManifest(context.Background(), benchManifest(marbleType)); err != nil {
		return testing.BenchmarkResult{}, fmt.Errorf("setting the benchmark manifest: %w", err)
	}
	id, err := coordtest.NewMarbleIdentity(elliptic.P256(), marbleType)
	if err != nil {
		return testing.BenchmarkResult{}, err
	}
	req := core.ActivationRequest{PeerCert: id.Cert, CSR: id.CSR, MarbleType: marbleType}
	var failed error
	r := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req.UUID = uuid.NewString()
			if _, err := c.Activate(context.Background(), req); err != nil {
				failed = err
				b.FailNow()
			}
		}
	})
	if failed != nil {
		return r, fmt.Errorf("activating in the core: %w", failed)
	}
	return r, nil
}

// signatureCosts measures one ECDSA signature and one verification on
// curve in one goroutine: the machine's speed at the operations that
// dominate an activation, for comparing runs and machines.
func signatureCosts(curve elliptic.Curve) (sign, verify time.Duration, err error) {
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return 0, 0, err
	}
	digest := sha256.Sum256([]byte("activation"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return 0, 0, err
	}
	s := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			_, _ = ecdsa.SignASN1(rand.Reader, key, digest[:])
		}
	})
	v := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
				b.Fatal("signature does not verify")
			}
		}
	})
	return time.Duration(s.NsPerOp()), time.Duration(v.NsPerOp()), nil
}
