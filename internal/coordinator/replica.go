package coordinator

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/internal/coordinator/health"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
)

// Bounds of checkStore.
const (
	// probeInterval is how often the head of a shared store is read.
	probeInterval = time.Second
	// probeTimeout bounds one such read.
	probeTimeout = 2 * time.Second
)

// replicaName names the Coordinator in status: cfg.ReplicaName, else the
// host name.
func replicaName(cfg Config) string {
	if cfg.ReplicaName != "" {
		return cfg.ReplicaName
	}
	if h, err := os.Hostname(); err == nil {
		return h
	}
	return "unknown"
}

// verdict returns the Coordinator's health now, and what its core serves.
func (s *Server) verdict() (health.Verdict, health.Serving) {
	state, _ := s.core.Status()
	// A replica in recovery that does not wait for a key (its store's
	// key opens nothing) waits for the owners alone.
	noPeerKey := s.replicas != nil && (!s.core.NeedsKey() || s.replicas.api.NoPeerHoldsKey())
	sv := health.ServingOf(state, s.health.Shared(), noPeerKey)
	return s.health.Verdict(sv), sv
}

// Replica describes this Coordinator: status reports it, and GET /readyz
// answers from it. A Coordinator is Ready when it has started, holds the
// key and the state (it is not in recovery) and, on a shared store, the
// state it serves is current (see package health). A Coordinator alone on
// the file store in recovery is not Ready either; it still takes the
// owners' recovery secrets, and GET /readyz?exclude=recovery, which the
// chart probes for it, keeps it reachable through its Service meanwhile.
func (s *Server) Replica() wire.ReplicaStatus {
	v, sv := s.verdict()
	rs := wire.ReplicaStatus{
		Name:         s.name,
		Ready:        v.Ready,
		Degraded:     v.Degraded(sv),
		Reason:       v.Reason,
		StoreBackend: s.cfg.storeBackend(),
	}
	if g, ok := s.store.(interface{ Generation() uint64 }); ok {
		rs.Generation = g.Generation()
	}
	return rs
}

// Replicas describes every replica of a distributed Coordinator, this
// one first, as keyapi.KeyAPI.Replicas does; it is nil outside
// distributed mode.
func (s *Server) Replicas(ctx context.Context) []wire.ReplicaStatus {
	if s.replicas == nil {
		return nil
	}
	return s.replicas.api.Replicas(ctx)
}

// Ready tells whether the Coordinator is Ready, and if not why.
func (s *Server) Ready() (bool, string) {
	v, _ := s.verdict()
	return v.Ready, v.Reason
}

// ReadyExcept tells whether the Coordinator is Ready with the named
// readiness checks (health.Checks) left out, and if not why.
func (s *Server) ReadyExcept(exclude []string) (bool, string) {
	v, _ := s.verdict()
	return v.ReadyExcept(exclude)
}

// Alive tells whether the Coordinator is alive (GET /healthz): its core
// is not wedged behind one operation (health.Alive). That the request is
// answered at all proves the client API serves.
func (s *Server) Alive() (bool, string) { return health.Alive(s.core.Held()) }

// registerHealthMetrics adds coordinator_ready,
// coordinator_state_current and coordinator_core_lock_held_seconds,
// computed when scraped.
func registerHealthMetrics(reg prometheus.Registerer, s *Server) {
	b := func(ok bool) float64 {
		if ok {
			return 1
		}
		return 0
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coordinator_ready",
			Help: "1 when this Coordinator is Ready (holds the key and the current state; GET /readyz answers 200), else 0.",
		}, func() float64 { v, _ := s.verdict(); return b(v.Ready) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coordinator_state_current",
			Help: "1 when the state this Coordinator serves is the stored one as far as it can tell (always on the file store), else 0: it then refuses writes.",
		}, func() float64 { v, _ := s.verdict(); return b(v.Current) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coordinator_core_lock_held_seconds",
			Help: fmt.Sprintf("How long the operation that holds the Coordinator's core (state changes and store writes) has held it, 0 when none does; GET /healthz fails above %g.", health.WedgeBound.Seconds()),
		}, func() float64 { return s.core.Held().Seconds() }),
	)
}

// checkStore reads the head of ks every probeInterval, each read bounded
// by probeTimeout, until ctx is done: it tells s.health whether the
// Kubernetes API answered, queues a reload when the head changed or a
// reload is owed (one that failed is tried again), and logs when the
// Coordinator stops or starts being Ready.
func (s *Server) checkStore(ctx context.Context, ks *store.KubeStore, reload func()) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	ready := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		changed, err := ks.Check(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			s.health.Observe(health.ContactFailed, err.Error())
		case changed:
			s.health.Observe(health.ChangeSeen, "")
		default:
			s.health.Observe(health.ContactOK, "")
		}
		v, _ := s.verdict()
		if v.NeedsReload {
			reload()
		}
		switch {
		case ready && !v.Ready:
			s.log.Warn("this Coordinator is not Ready", "reason", v.Reason, "current", v.Current)
		case !ready && v.Ready:
			s.log.Info("this Coordinator is Ready again")
		}
		ready = v.Ready
	}
}
