package core

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/internal/version"
)

// Metrics are the Coordinator core's Prometheus metrics. A nil *Metrics
// records nothing.
type Metrics struct {
	state       prometheus.Gauge
	simulation  prometheus.Gauge
	tee         *prometheus.GaugeVec
	sealMode    *prometheus.GaugeVec
	activations *prometheus.CounterVec
	successes   *prometheus.CounterVec
	rollback    prometheus.Gauge
	reloads     *prometheus.CounterVec
}

// Kinds of the reloads counted by coordinator_state_reloads_total.
const (
	// reloadUnchanged is a reload that found the stored state unchanged.
	reloadUnchanged = "unchanged"
	// reloadIncremental is a reload that took over changed activation
	// counts, monotonic counters or update log entries only.
	reloadIncremental = "incremental"
	// reloadFull is a reload that read the whole stored state again.
	reloadFull = "full"
)

// NewMetrics registers the core's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		state: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_state",
			Help: "State of the Coordinator: 1 recovery, 2 accepting manifest, 3 accepting marbles.",
		}),
		simulation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_simulation",
			Help: "1 if the Coordinator runs in simulation mode and admits marbles without verifying their evidence.",
		}),
		tee: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coordinator_tee_info",
			Help: "1, labelled with the trusted execution environment the Coordinator runs in (\"simulation\" in simulation mode).",
		}, []string{"tee"}),
		sealMode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coordinator_seal_mode_info",
			Help: "1, labelled with the seal mode in force: ProductKey, UniqueKey or Disabled (nothing sealed: every restart needs the recovery keys).",
		}, []string{"mode"}),
		// Activations are labelled by marble type only: a label per marble
		// UUID would add series for every instance ever started, without
		// bound. Per-instance history is in /events and the logs.
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_marble_activations_total",
			Help: "Activation requests of known marble types.",
		}, []string{"type"}),
		successes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_marble_activations_success_total",
			Help: "Successful marble activations.",
		}, []string{"type"}),
		rollback: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_state_rollback_refused",
			Help: "1 while the stored state read last is older than state this Coordinator has seen (rolled back): it serves what it had and refuses writes.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_state_reloads_total",
			Help: "Reads of the stored state after the start that were served, by kind: unchanged (nothing to take over), incremental (only activation counts, monotonic counters or update log entries changed, and only they were taken over) or full (the whole state was parsed again).",
		}, []string{"kind"}),
	}
	for _, kind := range []string{reloadUnchanged, reloadIncremental, reloadFull} {
		m.reloads.WithLabelValues(kind)
	}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "coordinator_version_info",
		Help: "Version of the Coordinator.",
	}, []string{"version", "commit"})
	v := version.Get()
	info.WithLabelValues(v.Version, v.Commit).Set(1)
	reg.MustRegister(m.state, m.simulation, m.tee, m.sealMode, m.activations, m.successes, m.rollback, m.reloads, info)
	return m
}

func (m *Metrics) setState(s State) {
	if m != nil {
		m.state.Set(float64(s))
	}
}

func (m *Metrics) setRollback(refused bool) {
	if m == nil {
		return
	}
	if refused {
		m.rollback.Set(1)
	} else {
		m.rollback.Set(0)
	}
}

func (m *Metrics) setSimulation(sim bool) {
	if m != nil && sim {
		m.simulation.Set(1)
	}
}

func (m *Metrics) setTEE(name string) {
	if m != nil {
		m.tee.WithLabelValues(name).Set(1)
	}
}

func (m *Metrics) setSealMode(mode seal.Mode) {
	if m == nil {
		return
	}
	m.sealMode.Reset()
	m.sealMode.WithLabelValues(string(mode)).Set(1)
}

func (m *Metrics) activation(marbleType string, success bool) {
	if m == nil {
		return
	}
	if success {
		m.successes.WithLabelValues(marbleType).Inc()
		return
	}
	m.activations.WithLabelValues(marbleType).Inc()
}

func (m *Metrics) reload(kind string) {
	if m != nil {
		m.reloads.WithLabelValues(kind).Inc()
	}
}
