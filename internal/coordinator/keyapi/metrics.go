package keyapi

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what the key API does. A nil *Metrics counts nothing.
type Metrics struct {
	served   prometheus.Counter
	refused  *prometheus.CounterVec
	joins    *prometheus.CounterVec
	requests *prometheus.CounterVec
	recovery *prometheus.CounterVec
}

// Reasons a request is refused, as the refused counter labels them.
const (
	refusedNoKey = "no_key"
	// refusedHandshake counts requesters whose certificate or evidence
	// the TLS handshake refused.
	refusedHandshake = "attestation"
)

// NewMetrics creates the key API's counters and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		served: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_key_api_requests_served_total",
			Help: "Key-encryption key requests of peers that were answered with the key.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_key_api_requests_refused_total",
			Help: "Key-encryption key requests of peers that were refused, by reason: attestation (the peer's certificate or evidence was refused) or no_key (this replica holds no key).",
		}, []string{"reason"}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_key_api_joins_total",
			Help: "Attempts of this replica to join the shared state with a key from a peer, by result: ok or failed.",
		}, []string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_key_api_peer_requests_total",
			Help: "Requests of this replica to peers for the key-encryption key, by result: ok, refused (the peer was refused or refused) or unreachable.",
		}, []string{"result"}),
		recovery: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_key_api_recovery_exchanges_total",
			Help: "Recovery secret exchanges between replicas in recovery, by result: ok and failed (this replica asked a peer), served (a peer asked this replica), decrypted (this replica decrypted a secret for a peer), decrypted_by_peer (a peer decrypted one for this replica).",
		}, []string{"result"}),
	}
	for _, r := range []string{refusedNoKey, refusedHandshake} {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "failed"} {
		m.joins.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "refused", "unreachable"} {
		m.requests.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "failed", "served", "decrypted", "decrypted_by_peer"} {
		m.recovery.WithLabelValues(r)
	}
	reg.MustRegister(m.served, m.refused, m.joins, m.requests, m.recovery)
	return m
}

func (m *Metrics) incServed() {
	if m != nil {
		m.served.Inc()
	}
}

func (m *Metrics) incRefused(reason string) {
	if m != nil {
		m.refused.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) incJoin(ok bool) {
	if m != nil {
		m.joins.WithLabelValues(result(ok, "ok", "failed")).Inc()
	}
}

func (m *Metrics) incRequest(result string) {
	if m != nil {
		m.requests.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) incExchange(result string) {
	if m != nil {
		m.recovery.WithLabelValues(result).Inc()
	}
}

func result(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}
