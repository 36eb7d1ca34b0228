package main

import (
	"context"
	"crypto/elliptic"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/test/coordtest"
)

func TestPercentile(t *testing.T) {
	lat := make([]time.Duration, 200)
	for i := range lat {
		lat[i] = time.Duration(i)
	}
	tests := []struct {
		sorted  []time.Duration
		percent int
		want    time.Duration
	}{
		{lat, 50, 100},
		{lat, 99, 198},
		{lat, 100, 199},
		{lat, 0, 0},
		{lat[:1], 99, 0},
		{lat[:3], 50, 1},
	}
	for _, tt := range tests {
		if got := percentile(tt.sorted, tt.percent); got != tt.want {
			t.Errorf("percentile(%d values, %d) = %v, want %v", len(tt.sorted), tt.percent, got, tt.want)
		}
	}
}

// TestMeasureOpsLimit checks that a time limit ends a run early and that
// the result counts only the operations that ran.
func TestMeasureOpsLimit(t *testing.T) {
	r, err := measureOps(load{n: 1000, c: 2, limit: 50 * time.Millisecond}, func(int) error {
		time.Sleep(10 * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.n == 0 || r.n > 20 || r.p50 < 10*time.Millisecond {
		t.Errorf("measureOps with a 50 ms limit ran %d operations, p50 %v; want a few of 10 ms", r.n, r.p50)
	}
	r, err = measureOps(load{n: 10, c: 3, pids: []int{os.Getpid()}}, func(i int) error {
		if i%2 == 0 {
			return io.EOF
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.n != 10 || r.errors != 5 || !r.cpuMeasure || r.apiMeasure {
		t.Errorf("measureOps = %d operations, %d errors, CPU measured %v, API server measured %v; want 10, 5, true, false", r.n, r.errors, r.cpuMeasure, r.apiMeasure)
	}
	if !errors.Is(r.firstErr, io.EOF) {
		t.Errorf("measureOps kept the first error %v, want %v", r.firstErr, io.EOF)
	}
	if _, err := measureOps(load{n: 4, c: 2}, func(int) error { return io.EOF }); err == nil {
		t.Error("measureOps hid that every operation failed")
	}
}

func TestSummarizeFailover(t *testing.T) {
	kill := time.Unix(1000, 0)
	at := func(ms int) time.Time { return kill.Add(time.Duration(ms) * time.Millisecond) }
	events := []loadEvent{
		{worker: 0, start: at(-50), end: at(-20), ok: true},
		{worker: 1, start: at(-30), end: at(5), ok: true},  // began before the kill
		{worker: 0, start: at(-20), end: at(1), ok: false}, // on the killed replica
		{worker: 2, start: at(-10), end: at(2), ok: false}, // on the killed replica
		{worker: 0, start: at(11), end: at(40), ok: true},  // its retry
		{worker: 1, start: at(5), end: at(30), ok: true},   // first begun after the kill
	}
	_, done, err := summarizeFailover(kill, events, 3)
	if err != nil {
		t.Fatal(err)
	}
	if done {
		t.Error("complete although worker 2 has not activated after the kill")
	}
	events = append(events, loadEvent{worker: 2, start: at(12), end: at(55), ok: true})
	r, done, err := summarizeFailover(kill, events, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !done || r.next != 30*time.Millisecond || r.longest != 55*time.Millisecond || r.failed != 2 {
		t.Errorf("summarizeFailover = %+v, complete %v; want next 30 ms, longest 55 ms, 2 failed, complete", r, done)
	}
	// No activation begun after the kill has succeeded yet.
	if _, done, _ := summarizeFailover(kill, events[:4], 2); done {
		t.Error("complete without an activation begun after the kill")
	}
	failedBefore := append([]loadEvent{{worker: 0, start: at(-40), end: at(-30), ok: false}}, events...)
	if _, _, err := summarizeFailover(kill, failedBefore, 3); err == nil {
		t.Error("a failure before the kill went unnoticed")
	}
}

// TestHAManifest sets the manifest in a core and activates both marble
// types; the limited one is counted.
func TestHAManifest(t *testing.T) {
	_, userPEM, err := newBenchUser(haUser)
	if err != nil {
		t.Fatal(err)
	}
	c, err := core.New(core.Config{
		Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: store.NewMemory(),
		DNSNames: []string{"localhost"}, RecoveryKeyBits: 2048,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics: core.NewMetrics(prometheus.NewRegistry()),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetManifest(t.Context(), haManifest("bench", haUser, userPEM)); err != nil {
		t.Fatalf("the HA manifest is refused: %v", err)
	}
	id, err := coordtest.NewMarbleIdentity(elliptic.P256(), "bench")
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"bench", haLimitedType} {
		if _, err := c.Activate(context.Background(), core.ActivationRequest{PeerCert: id.Cert, CSR: id.CSR, MarbleType: typ, UUID: uuid.NewString()}); err != nil {
			t.Errorf("activating %s: %v", typ, err)
		}
	}
}

// TestRunHA runs the whole section with tiny sizes against a real
// kube-apiserver and checks that every table is there.
func TestRunHA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kubernetes control plane and four Coordinators")
	}
	t.Chdir(filepath.Join("..", "..", ".."))
	var out strings.Builder
	o := options{marbleType: "bench", concurrency: 4, rounds: 1, rssMarbles: 20, out: &out,
		ha: haOptions{replicas: 3, n: 20, limited: 6, secrets: 6, writeC: 2, kills: 1, limit: 30 * time.Second}}
	if err := runHA(o); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	for _, want := range []string{
		"| 1 Coordinator, file store |", "| 3 replicas: replica 3 |",
		"| activation without MaxActivations | 3 replicas | 20 | 0 |",
		"| activation with MaxActivations | 1 Coordinator | 6 | 0 |",
		"| secret set | 3 replicas | 6 | 0 |",
		"3 replicas against 1: ",
		"| kill to every marble activated again (the longest wait), ms |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
}

func TestCheckModeFlags(t *testing.T) {
	tests := []struct {
		ha      bool
		set     []string
		wantErr bool
	}{
		{ha: true, set: []string{"ha", "ha-kills", "c", "rounds", "rss-marbles", "type"}},
		{ha: false, set: []string{"n", "steady", "curves", "c", "rounds"}},
		{ha: true, set: []string{"ha", "steady"}, wantErr: true},
		{ha: true, set: []string{"ha", "mesh"}, wantErr: true},
		{ha: false, set: []string{"ha-n"}, wantErr: true},
		{ha: false, set: []string{"ha-limit"}, wantErr: true},
	}
	for _, tt := range tests {
		set := map[string]bool{}
		for _, name := range tt.set {
			set[name] = true
		}
		if err := checkModeFlags(tt.ha, set); (err != nil) != tt.wantErr {
			t.Errorf("checkModeFlags(%v, %v) = %v, want error: %v", tt.ha, tt.set, err, tt.wantErr)
		}
	}
}
