package install

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/marblemesh/marblemesh/internal/coordinator"
)

// renderWith renders the embedded chart like render, on a cluster that
// also serves the API versions extra (as "group/version/Kind").
func renderWith(t *testing.T, vals map[string]any, extra ...string) (string, error) {
	t.Helper()
	ch, err := LoadChart("")
	if err != nil {
		t.Fatal(err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.APIVersions = append(caps.APIVersions, extra...)
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: ReleaseName, Namespace: "mr", Revision: 1, IsInstall: true}, caps)
	if err != nil {
		return "", err
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for name, body := range files {
		if strings.HasSuffix(name, ".yaml") && strings.TrimSpace(body) != "" {
			b.WriteString(strings.TrimSpace(body) + "\n---\n")
		}
	}
	return b.String(), nil
}

const serviceMonitorAPI = "monitoring.coreos.com/v1/ServiceMonitor"

// serviceMonitor is the part of a ServiceMonitor the chart sets.
type serviceMonitor struct {
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// serviceMonitors returns the ServiceMonitors of a rendering.
func serviceMonitors(t *testing.T, manifests string) []serviceMonitor {
	t.Helper()
	var out []serviceMonitor
	for _, doc := range strings.Split(manifests, "\n---\n") {
		if !strings.Contains(doc, "kind: ServiceMonitor") {
			continue
		}
		var sm serviceMonitor
		if err := yaml.Unmarshal([]byte(doc), &sm); err != nil {
			t.Fatal(err)
		}
		out = append(out, sm)
	}
	return out
}

// TestChartMetrics: with metrics enabled the Coordinator serves them on
// the port its metrics Service targets (the chart's environment read by
// the Coordinator's own parser), the webhook too, and the ServiceMonitors
// select exactly those Services and scrape their metrics port.
func TestChartMetrics(t *testing.T) {
	vals := parseValues(t, `
coordinator: {metrics: {enabled: true, port: 9102, serviceMonitor: {enabled: true, interval: 15s, labels: {release: prom}}}}
marbleInjector: {start: true, useCertManager: true, metrics: {enabled: true, port: 9103, serviceMonitor: {enabled: true}}}`)
	got, err := renderWith(t, vals, serviceMonitorAPI)
	if err != nil {
		t.Fatal(err)
	}
	objs, foreign := decodeAll(t, strings.ReplaceAll(got, "apiVersion: monitoring.coreos.com/v1", "apiVersion: cert-manager.io/skip"))
	if n := len(foreign); n != 4 { // Issuer, Certificate and two ServiceMonitors
		t.Fatalf("%d foreign objects: %v", n, foreign)
	}
	services := map[string]*corev1.Service{}
	var injPod corev1.PodTemplateSpec
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Service:
			services[o.Name] = o
		case *appsv1.Deployment:
			if o.Name == "marble-injector" {
				injPod = o.Spec.Template
			}
		}
	}
	coordPod := coordinatorDeployment(t, objs).Spec.Template
	if len(injPod.Spec.Containers) == 0 {
		t.Fatal("no Deployment marble-injector")
	}
	vars := envOf(coordPod.Spec.Containers[0])
	cfg, err := coordinator.ConfigFromEnv(func(k string) string { return vars[k] }, "/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PrometheusAddr != "0.0.0.0:9102" {
		t.Errorf("the Coordinator serves metrics on %q, want 0.0.0.0:9102", cfg.PrometheusAddr)
	}
	if !slices.Contains(injPod.Spec.Containers[0].Args, "-metricsAddr=:9103") {
		t.Errorf("the webhook's arguments %v lack -metricsAddr=:9103", injPod.Spec.Containers[0].Args)
	}
	for svcName, want := range map[string]struct {
		pod  corev1.PodTemplateSpec
		port int32
	}{"coordinator-metrics": {coordPod, 9102}, "marble-injector-metrics": {injPod, 9103}} {
		svc := services[svcName]
		if svc == nil {
			t.Fatalf("no Service %s", svcName)
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != want.port || svc.Spec.Ports[0].TargetPort.StrVal != "metrics" {
			t.Errorf("%s ports %+v", svcName, svc.Spec.Ports)
		}
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(want.pod.Labels)) {
			t.Errorf("%s selects %v, not the Pods %v", svcName, svc.Spec.Selector, want.pod.Labels)
		}
		named := false
		for _, p := range want.pod.Spec.Containers[0].Ports {
			named = named || p.Name == "metrics" && p.ContainerPort == want.port
		}
		if !named {
			t.Errorf("the Pods of %s have no port metrics %d: %+v", svcName, want.port, want.pod.Spec.Containers[0].Ports)
		}
	}
	sms := serviceMonitors(t, got)
	if len(sms) != 2 {
		t.Fatalf("%d ServiceMonitors", len(sms))
	}
	for _, sm := range sms {
		var selected []string
		for name, svc := range services {
			if labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(svc.Labels)) {
				selected = append(selected, name)
			}
		}
		if want := []string{sm.Metadata.Name + "-metrics"}; !slices.Equal(selected, want) {
			t.Errorf("ServiceMonitor %s selects the Services %v, want %v", sm.Metadata.Name, selected, want)
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" ||
			!slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{"mr"}) {
			t.Errorf("ServiceMonitor %s: %+v", sm.Metadata.Name, sm.Spec)
		}
		if sm.Metadata.Name == "coordinator" && (sm.Metadata.Labels["release"] != "prom" || sm.Spec.Endpoints[0].Interval != "15s") {
			t.Errorf("ServiceMonitor coordinator: labels %v, interval %s", sm.Metadata.Labels, sm.Spec.Endpoints[0].Interval)
		}
	}
}

// TestChartMetricsRefusals: a ServiceMonitor the cluster cannot take, or
// one without the metrics it scrapes, fails the rendering and names the
// fix; the webhook's metrics are left out when the webhook is.
func TestChartMetricsRefusals(t *testing.T) {
	for name, tc := range map[string]struct {
		vals string
		want string
	}{
		"no ServiceMonitor API":                  {`coordinator: {metrics: {enabled: true, serviceMonitor: {enabled: true}}}`, "monitoring.coreos.com/v1"},
		"ServiceMonitor without metrics":         {`coordinator: {metrics: {serviceMonitor: {enabled: true}}}`, "coordinator.metrics.serviceMonitor.enabled needs coordinator.metrics.enabled=true"},
		"webhook ServiceMonitor without metrics": {`marbleInjector: {metrics: {serviceMonitor: {enabled: true}}}`, "marbleInjector.metrics.serviceMonitor.enabled needs marbleInjector.metrics.enabled=true"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := renderWith(t, parseValues(t, tc.vals))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("rendering: %v, want an error with %q", err, tc.want)
			}
		})
	}
	got, err := renderWith(t, parseValues(t, `marbleInjector: {start: false, metrics: {enabled: true, serviceMonitor: {enabled: true}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got, "marble-injector-metrics") || strings.Contains(got, "kind: ServiceMonitor") {
		t.Error("metrics objects of a webhook that is not deployed")
	}
}

// TestChartDashboard: the dashboard ConfigMap carries the JSON of
// docs/grafana-dashboard.json, which is the chart's copy, with the
// sidecar's label.
func TestChartDashboard(t *testing.T) {
	docs, err := os.ReadFile(filepath.Join("..", "..", "docs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	chartCopy, err := os.ReadFile(filepath.Join("..", "..", "charts", "marblerun", "dashboards", "marblemesh.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(docs) != string(chartCopy) {
		t.Fatal("docs/grafana-dashboard.json and charts/marblerun/dashboards/marblemesh.json differ")
	}
	got, err := render(t, "mr", parseValues(t, `grafana: {dashboard: {enabled: true}}`))
	if err != nil {
		t.Fatal(err)
	}
	objs, _ := decodeAll(t, got)
	var cm *corev1.ConfigMap
	for _, o := range objs {
		if c, ok := o.(*corev1.ConfigMap); ok && c.Name == "marblerun-grafana-dashboard" {
			cm = c
		}
	}
	if cm == nil {
		t.Fatal("no ConfigMap marblerun-grafana-dashboard")
	}
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("labels %v lack grafana_dashboard=1", cm.Labels)
	}
	if cm.Data["marblemesh.json"] != strings.TrimSpace(string(docs)) {
		t.Error("the ConfigMap's dashboard is not docs/grafana-dashboard.json")
	}
	if got, err := render(t, "mr", nil); err != nil || strings.Contains(got, "marblerun-grafana-dashboard") {
		t.Errorf("a dashboard by default (%v)", err)
	}
}
