package coordinator_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/internal/injector"
	"github.com/marblemesh/marblemesh/internal/promreg"
	"github.com/marblemesh/marblemesh/internal/sgxresource"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/kubetest"
	"github.com/marblemesh/marblemesh/test/testpki"
)

// metricsDoc is the metrics table of the documentation.
var metricsDoc = filepath.Join("..", "..", "docs", "metrics.md")

// Sections of metricsDoc, by binary.
const (
	sectionCoordinator = "Coordinator"
	sectionInjector    = "marble-injector"
)

// docRow is one row of a table of metricsDoc.
type docRow struct {
	name   string // a name, or a prefix ending in * (a standard collector's metrics)
	typ    string
	labels []string
	line   int
}

var docRowPattern = regexp.MustCompile("^\\| `([a-z_:*]+)` \\| ([a-z]*) \\| ([^|]*) \\| [^|]+ \\|$")

// readMetricsDoc returns the rows of metricsDoc's tables by section.
func readMetricsDoc(t *testing.T) map[string][]docRow {
	t.Helper()
	raw, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]docRow{}
	section := ""
	for i, l := range strings.Split(string(raw), "\n") {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			section = strings.TrimSpace(h)
			continue
		}
		if section != sectionCoordinator && section != sectionInjector || !strings.HasPrefix(l, "| `") {
			continue
		}
		m := docRowPattern.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("%s:%d: a row not of the form | `name` | type | `label`, ... | meaning |: %s", metricsDoc, i+1, l)
		}
		r := docRow{name: m[1], typ: m[2], line: i + 1}
		for _, lb := range strings.Split(m[3], ",") {
			if lb = strings.Trim(strings.TrimSpace(lb), "`"); lb != "" {
				r.labels = append(r.labels, lb)
			}
		}
		slices.Sort(r.labels)
		rows[section] = append(rows[section], r)
	}
	return rows
}

// TestMetricsTable: docs/metrics.md lists every metric each binary
// registers, with its type and labels, and nothing that no binary
// registers. The metrics are those of the binaries' own registries: a
// Coordinator on the file store, one in distributed mode (the shared
// store's and the key API's metrics), and the marble-injector.
func TestMetricsTable(t *testing.T) {
	env := kubetest.Start(t)
	single := coordtest.Start(t, coordtest.WithPrometheus())
	distributed := coordtest.Start(t, coordtest.WithKubeStore(env.Kubeconfig, env.Namespace(t), "metrics-state"), coordtest.WithPrometheus())
	_, certFile, keyFile := testpki.ServingFiles(t)
	inj, err := injector.NewServer(injector.Options{CertFile: certFile, KeyFile: keyFile, Config: injector.Config{
		CoordAddr: "coordinator-mesh-api.marblerun:2001", ClusterDomain: "cluster.local", SGXResource: sgxresource.IntelEPC}})
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]map[string]promreg.Metric{}
	for section, describe := range map[string][]func() ([]promreg.Metric, error){
		sectionCoordinator: {single.Server.Metrics, distributed.Server.Metrics},
		sectionInjector:    {inj.Metrics},
	} {
		registered[section] = map[string]promreg.Metric{}
		for _, d := range describe {
			ms, err := d()
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				registered[section][m.Name] = m
			}
		}
	}
	if _, ok := registered[sectionCoordinator]["coordinator_key_api_joins_total"]; !ok {
		t.Fatal("the distributed Coordinator registers no key API metrics")
	}

	checkDashboard(t, registered)

	doc := readMetricsDoc(t)
	for section, metrics := range registered {
		rows := doc[section]
		if len(rows) == 0 {
			t.Errorf("%s has no table under ## %s", metricsDoc, section)
			continue
		}
		covered := map[string]bool{}
		for _, r := range rows {
			prefix, wildcard := strings.CutSuffix(r.name, "*")
			matched := 0
			for name, m := range metrics {
				if wildcard && strings.HasPrefix(name, prefix) || name == r.name {
					matched++
					covered[name] = true
				}
				if name != r.name {
					continue
				}
				if m.Type != r.typ {
					t.Errorf("%s:%d: %s is a %s, the table says %q", metricsDoc, r.line, name, m.Type, r.typ)
				}
				if !slices.Equal(m.Labels, r.labels) {
					t.Errorf("%s:%d: %s has the labels %v, the table says %v", metricsDoc, r.line, name, m.Labels, r.labels)
				}
			}
			if matched == 0 {
				t.Errorf("%s:%d: the %s registers no metric %s", metricsDoc, r.line, section, r.name)
			}
		}
		var missing []string
		for name, m := range metrics {
			if !covered[name] {
				missing = append(missing, fmt.Sprintf("| `%s` | %s | %s | %s |", name, m.Type, strings.Join(m.Labels, ", "), m.Help))
			}
		}
		slices.Sort(missing)
		if len(missing) > 0 {
			t.Errorf("the %s registers metrics that %s does not list under ## %s:\n%s", section, metricsDoc, section, strings.Join(missing, "\n"))
		}
	}
}

// dashboardMetric finds metric names in a query.
var dashboardMetric = regexp.MustCompile(`\b(?:coordinator|marble_injector|go|process)_[a-z_]+\b`)

// checkDashboard fails on a query of the Grafana dashboard that names a
// metric no binary registers (a histogram's _bucket, _sum and _count
// series belong to it).
func checkDashboard(t *testing.T, registered map[string]map[string]promreg.Metric) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	known := func(name string) bool {
		for _, ms := range registered {
			if _, ok := ms[name]; ok {
				return true
			}
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if m, ok := ms[strings.TrimSuffix(name, suffix)]; ok && strings.HasSuffix(name, suffix) && m.Type == "histogram" {
					return true
				}
			}
		}
		return false
	}
	queries := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries++
			names := dashboardMetric.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("dashboard panel %q: the query %s names no metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				if !known(n) {
					t.Errorf("dashboard panel %q: no binary registers %s (%s)", p.Title, n, tg.Expr)
				}
			}
		}
	}
	if queries < 10 {
		t.Errorf("the dashboard has %d queries", queries)
	}
}
