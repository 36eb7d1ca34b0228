package promreg

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestDescribe: every registered metric is described, labelled ones
// without series included, with its type, sorted labels (constant ones
// too) and help; help with quotes survives.
func TestDescribe(t *testing.T) {
	r := New()
	r.MustRegister(
		prometheus.NewCounterVec(prometheus.CounterOpts{Name: "b_total", Help: `counts "things"`}, []string{"z", "a"}),
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "a_gauge", Help: "a gauge", ConstLabels: prometheus.Labels{"k": "v"}}),
		prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "c_seconds", Help: "h"}, []string{"path"}),
	)
	if err := r.Register(prometheus.NewGauge(prometheus.GaugeOpts{Name: "a_gauge", Help: "again"})); err == nil {
		t.Fatal("a second a_gauge was registered")
	}
	got, err := r.Describe()
	if err != nil {
		t.Fatal(err)
	}
	want := []Metric{
		{Name: "a_gauge", Type: "gauge", Labels: []string{"k"}, Help: "a gauge"},
		{Name: "b_total", Type: "counter", Labels: []string{"a", "z"}, Help: `counts "things"`},
		{Name: "c_seconds", Type: "histogram", Labels: []string{"path"}, Help: "h"},
	}
	if !slices.EqualFunc(got, want, func(a, b Metric) bool {
		return a.Name == b.Name && a.Type == b.Type && slices.Equal(a.Labels, b.Labels) && a.Help == b.Help
	}) {
		t.Fatalf("Describe() = %+v, want %+v", got, want)
	}
}
