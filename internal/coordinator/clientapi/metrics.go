package clientapi

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	reqSize  *prometheus.HistogramVec
	respSize *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	sizeBuckets := prometheus.ExponentialBuckets(100, 10, 6)
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_client_api_requests_total",
			Help: "Client API requests by path, status code and method.",
		}, []string{"path", "code", "method"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coordinator_client_api_request_duration_seconds",
			Help:    "Client API request latency.",
			Buckets: []float64{.005, .025, .1, .5, 1, 2.5, 5},
		}, []string{"path", "method"}),
		reqSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coordinator_client_api_request_size_bytes",
			Help:    "Client API request sizes.",
			Buckets: sizeBuckets,
		}, []string{"path", "method"}),
		respSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coordinator_client_api_response_size_bytes",
			Help:    "Client API response sizes.",
			Buckets: sizeBuckets,
		}, []string{"path", "method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_client_api_requests_in_flight",
			Help: "Client API requests being served.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.reqSize, m.respSize, m.inFlight)
	return m
}

// instrument wraps h with the metrics, labelled with a fixed path so that
// arbitrary request paths cannot create new series.
func (m *httpMetrics) instrument(path string, h http.HandlerFunc) http.HandlerFunc {
	l := prometheus.Labels{"path": path}
	var handler http.Handler = h
	handler = promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(l), handler)
	handler = promhttp.InstrumentHandlerDuration(m.duration.MustCurryWith(l), handler)
	handler = promhttp.InstrumentHandlerRequestSize(m.reqSize.MustCurryWith(l), handler)
	handler = promhttp.InstrumentHandlerResponseSize(m.respSize.MustCurryWith(l), handler)
	handler = promhttp.InstrumentHandlerInFlight(m.inFlight, handler)
	return handler.ServeHTTP
}
