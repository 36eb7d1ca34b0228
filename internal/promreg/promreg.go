// Package promreg is the metrics registry of the project's binaries: a
// Prometheus registry that remembers the collectors registered with it,
// so that every metric a binary offers can be described by name, type and
// labels, including the labelled metrics that have no series yet (the
// metrics table in docs/metrics.md is checked against these
// descriptions).
package promreg

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Registry is a Prometheus registry that remembers its collectors.
type Registry struct {
	*prometheus.Registry

	mu         sync.Mutex
	collectors []prometheus.Collector
}

// New returns an empty Registry.
func New() *Registry { return &Registry{Registry: prometheus.NewRegistry()} }

// Register registers c and remembers it.
func (r *Registry) Register(c prometheus.Collector) error {
	if err := r.Registry.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.collectors = append(r.collectors, c)
	return nil
}

// MustRegister registers the collectors and panics if one cannot be
// registered, as prometheus.Registry.MustRegister does.
func (r *Registry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Metric describes one metric a registry offers.
type Metric struct {
	Name string
	// Type is counter, gauge, histogram, summary or untyped; "" when
	// neither a series nor the collector's kind tells.
	Type string
	// Labels are the metric's label names, sorted.
	Labels []string
	Help   string
}

// descPattern reads the parts of a prometheus.Desc that it has no
// accessors for from its String form.
var descPattern = regexp.MustCompile(`^Desc\{fqName: "([^"]*)", help: "((?:[^"\\]|\\.)*)", unit: "[^"]*", constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}\}$`)

// Describe lists every metric of the registered collectors, sorted by
// name.
func (r *Registry) Describe() ([]Metric, error) {
	r.mu.Lock()
	cs := slices.Clone(r.collectors)
	r.mu.Unlock()
	byName := map[string]*Metric{}
	for _, c := range cs {
		descs := make(chan *prometheus.Desc)
		go func() { c.Describe(descs); close(descs) }()
		for d := range descs {
			m, err := parseDesc(d)
			if err != nil {
				return nil, err
			}
			m.Type = kindOf(c)
			byName[m.Name] = &m
		}
	}
	// The type of what a collector exposes shows in its series.
	families, err := r.Gather()
	if err != nil {
		return nil, fmt.Errorf("gathering metrics: %w", err)
	}
	for _, f := range families {
		if m, ok := byName[f.GetName()]; ok {
			m.Type = typeName(f.GetType())
		}
	}
	out := make([]Metric, 0, len(byName))
	for _, m := range byName {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Metric) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func parseDesc(d *prometheus.Desc) (Metric, error) {
	p := descPattern.FindStringSubmatch(d.String())
	if p == nil {
		return Metric{}, fmt.Errorf("an unreadable metric description %s", d)
	}
	help, err := strconv.Unquote(`"` + p[2] + `"`)
	if err != nil {
		return Metric{}, fmt.Errorf("the help of %s: %w", p[1], err)
	}
	m := Metric{Name: p[1], Help: help}
	for _, l := range strings.Split(p[3], ",") {
		if name, _, ok := strings.Cut(l, "="); ok {
			m.Labels = append(m.Labels, name)
		}
	}
	for _, l := range strings.Split(p[4], ",") {
		if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
			m.Labels = append(m.Labels, l)
		}
	}
	slices.Sort(m.Labels)
	return m, nil
}

// kindOf tells the type of the metrics of a labelled collector, which has
// no series before its first use.
func kindOf(c prometheus.Collector) string {
	switch c.(type) {
	case *prometheus.CounterVec:
		return "counter"
	case *prometheus.GaugeVec:
		return "gauge"
	case *prometheus.HistogramVec:
		return "histogram"
	case *prometheus.SummaryVec:
		return "summary"
	}
	return ""
}

func typeName(t dto.MetricType) string {
	switch t {
	case dto.MetricType_COUNTER:
		return "counter"
	case dto.MetricType_GAUGE:
		return "gauge"
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return "histogram"
	case dto.MetricType_SUMMARY:
		return "summary"
	}
	return "untyped"
}
