package main

import (
	"context"
	"crypto/elliptic"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/marblemesh/marblemesh/internal/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/coordtest"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
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
	if _, err := c.SetManifest(benchManifest(marbleType)); err != nil {
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
