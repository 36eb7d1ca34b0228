package injector

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const metricsNamespace = "marble_injector"

// Error kinds counted by the errors metric.
const (
	errUnsupportedMediaType = "unsupported_media_type"
	errMethodNotAllowed     = "method_not_allowed"
	errReadBody             = "read_body"
	errBodyTooLarge         = "body_too_large"
	errBadReview            = "bad_review"
	errWriteResponse        = "write_response"
)

func errorKinds() []string {
	return []string{errUnsupportedMediaType, errMethodNotAllowed, errReadBody, errBodyTooLarge, errBadReview, errWriteResponse}
}

// metrics holds the injector's collectors. Label values are resolved once,
// so the request path touches no label maps.
type metrics struct {
	requests     prometheus.Counter
	mutations    prometheus.Counter
	patchOps     prometheus.Counter
	skips        map[Reason]prometheus.Counter
	denials      map[Reason]prometheus.Counter
	errors       map[string]prometheus.Counter
	latency      prometheus.Histogram
	certReloadOK prometheus.Counter
	certReloadKO prometheus.Counter
	certNotAfter prometheus.Gauge
}

// newMetrics creates the collectors and registers them, with the process and
// Go runtime collectors, on reg.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	skipVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "skips_total",
		Help: "Pods admitted unchanged, by reason.",
	}, []string{"reason"})
	denyVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "denials_total",
		Help: "Admission requests denied, by reason.",
	}, []string{"reason"})
	errVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "errors_total",
		Help: "HTTP requests to /mutate answered with an HTTP error or not answered, by kind.",
	}, []string{"kind"})
	reloadVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "certificate_reloads_total",
		Help: "Attempts to load a changed serving certificate, by result.",
	}, []string{"result"})
	m := &metrics{
		requests: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "admission_requests_total",
			Help: "HTTP requests received on /mutate.",
		}),
		mutations: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "mutations_total",
			Help: "Pods admitted with a patch.",
		}),
		patchOps: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "patch_operations_total",
			Help: "JSON Patch operations returned.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "admission_duration_seconds",
			Help:    "Time to answer a request on /mutate, from headers read to response written.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1},
		}),
		certNotAfter: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "certificate_expiry_timestamp_seconds",
			Help: "NotAfter of the serving certificate in use, as a Unix time.",
		}),
		skips:        map[Reason]prometheus.Counter{},
		denials:      map[Reason]prometheus.Counter{},
		errors:       map[string]prometheus.Counter{},
		certReloadOK: reloadVec.WithLabelValues("success"),
		certReloadKO: reloadVec.WithLabelValues("error"),
	}
	for _, r := range skipReasons() {
		m.skips[r] = skipVec.WithLabelValues(string(r))
	}
	for _, r := range denyReasons() {
		m.denials[r] = denyVec.WithLabelValues(string(r))
	}
	for _, k := range errorKinds() {
		m.errors[k] = errVec.WithLabelValues(k)
	}
	for _, c := range []prometheus.Collector{
		m.requests, m.mutations, m.patchOps, skipVec, denyVec, errVec, m.latency, reloadVec, m.certNotAfter,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}

// observe counts the outcome of a review.
func (m *metrics) observe(d Decision) {
	switch d.Outcome {
	case Mutated:
		m.mutations.Inc()
		m.patchOps.Add(float64(d.Ops))
	case Unchanged:
		if c, ok := m.skips[d.Reason]; ok {
			c.Inc()
		}
	case Denied:
		if c, ok := m.denials[d.Reason]; ok {
			c.Inc()
		}
	}
}
