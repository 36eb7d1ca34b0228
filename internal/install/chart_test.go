package install

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/marblemesh/marblemesh/charts"
	"github.com/marblemesh/marblemesh/internal/coordinator/clientapi"
	"github.com/marblemesh/marblemesh/internal/coordinator/health"
	"github.com/marblemesh/marblemesh/internal/sgxresource"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/")

// testCA is a fixed CA bundle for the golden files.
const testCA = "-----BEGIN CERTIFICATE-----\nTESTCA\n-----END CERTIFICATE-----\n"

// render renders the embedded chart with vals into namespace ns and
// returns the manifests, sorted by template, empty ones left out.
func render(t *testing.T, ns string, vals map[string]any) (string, error) {
	t.Helper()
	ch, err := LoadChart("")
	if err != nil {
		t.Fatal(err)
	}
	return renderChart(ch, ns, vals)
}

func renderChart(ch *chart.Chart, ns string, vals map[string]any) (string, error) {
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{
		Name: ReleaseName, Namespace: ns, Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		return "", err
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(files))
	for name, body := range files {
		if strings.HasSuffix(name, ".yaml") && strings.TrimSpace(body) != "" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		b.WriteString("# Source: " + name + "\n")
		b.WriteString(strings.TrimSpace(files[name]) + "\n---\n")
	}
	return b.String(), nil
}

func parseValues(t *testing.T, y string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func cliValues(t *testing.T, s Settings) map[string]any {
	t.Helper()
	ch, err := LoadChart("")
	if err != nil {
		t.Fatal(err)
	}
	v, err := Values(s, ch.Values)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func sgxSettings(key string) Settings {
	return Settings{
		ResourceKey: key, DCAPQPL: "azure", DCAPPCCSURL: DefaultPCCSURL, DCAPSecureCert: "TRUE",
		MeshServerPort: 2001, ClientServerPort: 4433, Injector: true, CABundle: []byte(testCA),
	}
}

// chartCases are the value sets rendered to golden files.
func chartCases(t *testing.T) map[string]map[string]any {
	certManager := sgxSettings(sgxresource.IntelEPC)
	certManager.CertManager = true
	certManager.CABundle = nil
	cliSim := Settings{Simulation: true, Domains: []string{"mycluster.example.com"}, MeshServerPort: 2001, ClientServerPort: 4433,
		Injector: true, CABundle: []byte(testCA), ResourceKey: sgxresource.IntelEPC}
	return map[string]map[string]any{
		"default": nil,
		// The seed's helm command for a cluster without SGX.
		"helm-simulation": parseValues(t, `
coordinator: {resources: null, simulation: 1, hostname: mycluster.uksouth.cloudapp.azure.com}
tolerations: null
marbleInjector: {start: true, useCertManager: true}`),
		// The seed's helm command for a cluster with SGX.
		"helm-sgx": parseValues(t, `
coordinator: {hostname: mycluster.uksouth.cloudapp.azure.com}
marbleInjector: {start: true, useCertManager: true}`),
		"helm-dcap": parseValues(t, `
coordinator: {hostname: mycluster.uksouth.cloudapp.azure.com}
dcap: {qpl: intel, pccsUrl: "https://pccs.example.com:8081/sgx/certification/v4/", useSecureCert: "FALSE"}`),
		"helm-qcnl-config": parseValues(t, `
dcap: {qcnlConfig: '{"pccs_url": "https://pccs.internal/"}'}`),
		"cli-simulation":   cliValues(t, cliSim),
		"cli-sgx-intel":    cliValues(t, sgxSettings(sgxresource.IntelEPC)),
		"cli-sgx-azure":    cliValues(t, sgxSettings(sgxresource.AzureEPC)),
		"cli-sgx-alibaba":  cliValues(t, sgxSettings(sgxresource.AlibabaEPC)),
		"cli-sgx-custom":   cliValues(t, sgxSettings("example.com/sgx-epc")),
		"cli-cert-manager": cliValues(t, certManager),
		"cli-ports": cliValues(t, Settings{Simulation: true, MeshServerPort: 3001, ClientServerPort: 5443,
			Domains: []string{"a.example.com", "b.example.com"}}),
		// The state in Secrets: marblerun install --distributed-deployment
		// and the Helm values with a state name of one's own.
		"cli-distributed": cliValues(t, Settings{Simulation: true, MeshServerPort: 2001, ClientServerPort: 4433, Distributed: true}),
		// marblerun install --distributed-deployment --replicas 3
		"cli-replicas": cliValues(t, Settings{Simulation: true, MeshServerPort: 2001, ClientServerPort: 4433, Distributed: true, Replicas: 3}),
		"helm-distributed": parseValues(t, `
coordinator: {distributedDeployment: true, stateSecretName: my-state, replicas: 1}`),
		// A distributed Coordinator importing a single Coordinator's
		// state from its claim, mounted read-only.
		"helm-distributed-import": parseValues(t, `
coordinator: {distributedDeployment: true, importStateFromPVC: coordinator-pv-claim}`),
		// Several replicas, with the chart's defaults and with values of
		// one's own.
		"helm-replicas": parseValues(t, `
coordinator: {distributedDeployment: true, replicas: 3}`),
		// Metrics of both binaries and the Grafana dashboard (no
		// ServiceMonitor: its API is not among the default capabilities).
		"helm-metrics": parseValues(t, `
coordinator: {metrics: {enabled: true, port: 9102}}
marbleInjector: {start: true, useCertManager: true, shutdownDelaySeconds: 8, metrics: {enabled: true}}
grafana: {dashboard: {enabled: true, annotations: {grafana_folder: MarbleRun}}}`),
		"helm-replicas-tuned": parseValues(t, `
coordinator:
  distributedDeployment: true
  replicas: 5
  stateSecretName: my-state
  kekConfigMap: my-kek
  keyAPIName: my-key-api
  podDisruptionBudget: {maxUnavailable: null, minAvailable: "60%"}
  topologySpread: {whenUnsatisfiable: DoNotSchedule}`),
	}
}

// distributed reports whether vals ask for the state in Secrets.
func distributed(vals map[string]any) bool {
	coord, _ := vals["coordinator"].(map[string]any)
	d, _ := coord["distributedDeployment"].(bool)
	return d
}

func TestChartGolden(t *testing.T) {
	for name, vals := range chartCases(t) {
		t.Run(name, func(t *testing.T) {
			got, err := render(t, "marblerun", vals)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "chart", name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run the test with -update to write it)", err)
			}
			if got != string(want) {
				t.Errorf("rendering differs from %s (run with -update to accept):\n%s", golden, diffLines(string(want), got))
			}
		})
	}
}

// TestChartGoldenNoStale fails on golden files that no case writes.
func TestChartGoldenNoStale(t *testing.T) {
	cases := chartCases(t)
	entries, err := os.ReadDir(filepath.Join("testdata", "chart"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := cases[strings.TrimSuffix(e.Name(), ".yaml")]; !ok {
			t.Errorf("stale golden file testdata/chart/%s", e.Name())
		}
	}
}

// diffLines shows the first differing line of two texts.
func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  want: %s\n  got:  %s", i+1, wl, gl)
		}
	}
	return "(no line differs)"
}

// decodeAll decodes the rendered manifests into typed objects; kinds the
// client-go scheme does not know (cert-manager's) are returned by kind.
func decodeAll(t *testing.T, manifests string) ([]runtime.Object, []string) {
	t.Helper()
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	var objs []runtime.Object
	var foreign []string
	for _, doc := range strings.Split(manifests, "\n---\n") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		if meta.Kind == "" {
			continue
		}
		if strings.HasPrefix(meta.APIVersion, "cert-manager.io/") {
			foreign = append(foreign, meta.Kind)
			continue
		}
		obj, _, err := codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("decoding %s: %v\n%s", meta.Kind, err, doc)
		}
		objs = append(objs, obj)
	}
	return objs, foreign
}

func coordinatorDeployment(t *testing.T, objs []runtime.Object) *appsv1.Deployment {
	t.Helper()
	for _, o := range objs {
		if d, ok := o.(*appsv1.Deployment); ok && d.Name == CoordinatorDeployment {
			return d
		}
	}
	t.Fatal("no Deployment marblerun-coordinator")
	return nil
}

func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

func TestChartObjects(t *testing.T) {
	for name, vals := range chartCases(t) {
		t.Run(name, func(t *testing.T) {
			got, err := render(t, "mr", vals)
			if err != nil {
				t.Fatal(err)
			}
			objs, _ := decodeAll(t, got)
			d := coordinatorDeployment(t, objs)
			pod := d.Spec.Template.Spec
			if len(pod.Containers) != 1 {
				t.Fatalf("%d containers", len(pod.Containers))
			}
			c := pod.Containers[0]
			sc := c.SecurityContext
			if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("coordinator security context %+v: want non-root with a fixed UID and a read-only root", sc)
			}
			// Liveness and start-up ask GET /healthz; readiness is the
			// Coordinator's own verdict (GET /readyz) without the recovery
			// check, so that a Coordinator waiting for the owners stays
			// reachable for the recovery upload (in distributed mode a
			// replica waiting for a peer's key fails the check "key").
			ready := clientapi.ReadyPath + "?" + clientapi.ExcludeParam + "=" + health.CheckRecovery
			for what, probe := range map[string]struct {
				p    *corev1.Probe
				path string
			}{"readiness": {c.ReadinessProbe, ready}, "liveness": {c.LivenessProbe, clientapi.HealthPath}, "startup": {c.StartupProbe, clientapi.HealthPath}} {
				p := probe.p
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != probe.path || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Port.StrVal != "http" {
					t.Errorf("%s probe %+v", what, p)
				}
			}
			env := envOf(c)
			sealed := false
			for _, m := range c.VolumeMounts {
				if m.Name == "coordinator-pv-storage" && m.MountPath == env["EDG_COORDINATOR_SEAL_DIR"] {
					sealed = true
				}
			}
			if !sealed && !distributed(vals) {
				t.Errorf("the seal dir %q is not the volume's mount point: %+v", env["EDG_COORDINATOR_SEAL_DIR"], c.VolumeMounts)
			}
			if token := pod.AutomountServiceAccountToken; token == nil || *token != distributed(vals) {
				t.Errorf("automountServiceAccountToken %v: want it only in distributed mode", token)
			}
			dns := strings.Split(env["EDG_COORDINATOR_DNS_NAMES"], ",")
			for _, want := range []string{"localhost", "coordinator-client-api.mr", "coordinator-mesh-api.mr.svc.cluster.local"} {
				if !slices.Contains(dns, want) {
					t.Errorf("EDG_COORDINATOR_DNS_NAMES %v lacks %s", dns, want)
				}
			}
			if coord, ok := vals["coordinator"].(map[string]any); ok {
				if h, _ := coord["hostname"].(string); h != "" {
					for _, n := range strings.Split(h, ",") {
						if !slices.Contains(dns, n) {
							t.Errorf("EDG_COORDINATOR_DNS_NAMES %v lacks the hostname %s", dns, n)
						}
					}
				}
			}
			if d.Labels["app.kubernetes.io/version"] == "" {
				t.Error("no app.kubernetes.io/version label on the Coordinator's Deployment")
			}
		})
	}
}

func TestChartSimulationAndSGX(t *testing.T) {
	cases := chartCases(t)
	for name, want := range map[string]struct {
		sim         string
		limits      []string
		toleration  string
		dcapMounted bool
	}{
		"helm-simulation": {sim: "1", dcapMounted: true},
		"cli-simulation":  {sim: "1"},
		"default":         {sim: "0", limits: []string{sgxresource.IntelEPC, sgxresource.IntelEnclave, sgxresource.IntelProvision}, toleration: sgxresource.IntelEPC, dcapMounted: true},
		"cli-sgx-azure":   {sim: "0", limits: []string{sgxresource.AzureEPC}, toleration: sgxresource.AzureEPC, dcapMounted: true},
		"cli-sgx-alibaba": {sim: "0", limits: []string{sgxresource.AlibabaEPC}, toleration: sgxresource.AlibabaEPC, dcapMounted: true},
		"cli-sgx-custom":  {sim: "0", limits: []string{"example.com/sgx-epc"}, toleration: "example.com/sgx-epc", dcapMounted: true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := render(t, "marblerun", cases[name])
			if err != nil {
				t.Fatal(err)
			}
			objs, _ := decodeAll(t, got)
			d := coordinatorDeployment(t, objs)
			c := d.Spec.Template.Spec.Containers[0]
			if s := envOf(c)["OE_SIMULATION"]; s != want.sim {
				t.Errorf("OE_SIMULATION=%q, want %q", s, want.sim)
			}
			var keys []string
			for k := range c.Resources.Limits {
				keys = append(keys, string(k))
			}
			sort.Strings(keys)
			wantKeys := slices.Clone(want.limits)
			sort.Strings(wantKeys)
			if !slices.Equal(keys, wantKeys) {
				t.Errorf("limits %v, want %v", keys, wantKeys)
			}
			var tol []string
			for _, tl := range d.Spec.Template.Spec.Tolerations {
				tol = append(tol, tl.Key)
			}
			if want.toleration == "" && len(tol) != 0 || want.toleration != "" && !slices.Contains(tol, want.toleration) {
				t.Errorf("tolerations %v, want %q", tol, want.toleration)
			}
			mounted := false
			for _, m := range c.VolumeMounts {
				if m.Name == "dcap-conf" {
					mounted = true
				}
			}
			if mounted != want.dcapMounted {
				t.Errorf("DCAP config mounted: %v, want %v", mounted, want.dcapMounted)
			}
		})
	}
}

func TestChartDCAPConfig(t *testing.T) {
	got, err := render(t, "marblerun", chartCases(t)["helm-dcap"])
	if err != nil {
		t.Fatal(err)
	}
	objs, _ := decodeAll(t, got)
	for _, o := range objs {
		if cm, ok := o.(*corev1.ConfigMap); ok && cm.Name == "coordinator-dcap-config" {
			want := `{"pccs_url":"https://pccs.example.com:8081/sgx/certification/v4/","use_secure_cert":false}`
			if g := cm.Data["sgx_default_qcnl.conf"]; g != want {
				t.Errorf("sgx_default_qcnl.conf = %s, want %s", g, want)
			}
			return
		}
	}
	t.Fatal("no ConfigMap coordinator-dcap-config")
}

func TestChartInjectorObjects(t *testing.T) {
	cases := chartCases(t)
	for name, certManager := range map[string]bool{"cli-sgx-intel": false, "cli-cert-manager": true, "helm-sgx": true} {
		t.Run(name, func(t *testing.T) {
			got, err := render(t, "mr", cases[name])
			if err != nil {
				t.Fatal(err)
			}
			_, foreign := decodeAll(t, got)
			wantForeign := []string(nil)
			if certManager {
				wantForeign = []string{"Issuer", "Certificate"}
			}
			if !slices.Equal(foreign, wantForeign) {
				t.Errorf("cert-manager objects %v, want %v", foreign, wantForeign)
			}
			if certManager != strings.Contains(got, "cert-manager.io/inject-ca-from: mr/marble-injector-serving-cert") {
				t.Errorf("cert-manager CA injection annotation present: %v, want %v", !certManager, certManager)
			}
			if !certManager && !strings.Contains(got, "caBundle: "+base64Std([]byte(testCA))) {
				t.Error("no caBundle in the webhook configuration")
			}
			for _, want := range []string{"name: marble-injector-mr\n", "name: marble-injector-mr.cluster.local\n",
				"-coordAddr=coordinator-mesh-api.mr:2001", "secretName: marble-injector-webhook-certs"} {
				if !strings.Contains(got, want) {
					t.Errorf("rendering lacks %q", want)
				}
			}
		})
	}
}

func TestChartSchemaRejects(t *testing.T) {
	for name, vals := range map[string]string{
		"port out of range":       `coordinator: {meshServerPort: 70000}`,
		"port as text":            `coordinator: {clientServerPort: "4433"}`,
		"unknown key":             `coordinatr: {}`,
		"unknown coordinator key": `coordinator: {simulaton: true}`,
		"simulation word":         `coordinator: {simulation: "yes"}`,
		"relative seal dir":       `coordinator: {sealDir: data}`,
		"bad storage size":        `coordinator: {storageSize: ten}`,
		"bad hostname":            `coordinator: {hostname: "my host"}`,
		"root uid":                `coordinator: {runAsUser: 0}`,
		"bad failure policy":      `marbleInjector: {failurePolicy: Maybe}`,
		"bad qpl":                 `dcap: {qpl: amd}`,
		"bad secure cert":         `dcap: {useSecureCert: "yes"}`,
		"bad pccs url":            `dcap: {pccsUrl: "pccs.example.com"}`,
		"empty resource key":      `marbleInjector: {resourceKey: ""}`,
		"ca bundle not base64":    `marbleInjector: {CABundle: "-----BEGIN"}`,
		"bad toleration":          `tolerations: [{key: a, operator: Maybe}]`,
		"other store backend":     `coordinator: {distributedDeployment: true, storeBackend: etcd}`,
		"bad state name":          `coordinator: {stateSecretName: My_State}`,
		"long state name":         `coordinator: {stateSecretName: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}`,
		"distributed as text":     `coordinator: {distributedDeployment: "yes"}`,
		"sixteen replicas":        `coordinator: {replicas: 16, distributedDeployment: true}`,
		"negative replicas":       `coordinator: {replicas: -1}`,
		"bad kek map name":        `coordinator: {distributedDeployment: true, kekConfigMap: My_KEK}`,
		"bad key API name":        `coordinator: {distributedDeployment: true, keyAPIName: 1key}`,
		"long key API name":       `coordinator: {distributedDeployment: true, keyAPIName: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}`,
		"bad spread policy":       `coordinator: {topologySpread: {whenUnsatisfiable: Never}}`,
		"unknown spread key":      `coordinator: {topologySpread: {maxSkew: 2}}`,
		"negative budget":         `coordinator: {podDisruptionBudget: {maxUnavailable: -1}}`,
		"budget percent too high": `coordinator: {podDisruptionBudget: {maxUnavailable: "150%"}}`,
		"budget as word":          `coordinator: {podDisruptionBudget: {maxUnavailable: one}}`,
		"metrics port too high":   `coordinator: {metrics: {enabled: true, port: 70000}}`,
		"metrics as text":         `coordinator: {metrics: {enabled: "yes"}}`,
		"unknown metrics key":     `marbleInjector: {metrics: {enabled: true, path: /m}}`,
		"bad scrape interval":     `coordinator: {metrics: {serviceMonitor: {interval: 30 seconds}}}`,
		"numeric label value":     `coordinator: {metrics: {serviceMonitor: {labels: {release: 1}}}}`,
		"negative shutdown delay": `marbleInjector: {shutdownDelaySeconds: -1}`,
		"shutdown delay as text":  `marbleInjector: {shutdownDelaySeconds: 5s}`,
		"unknown dashboard key":   `grafana: {dashboard: {folder: x}}`,
		"dashboard as text":       `grafana: {dashboard: {enabled: "true"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := render(t, "marblerun", parseValues(t, vals))
			if err == nil || !strings.Contains(err.Error(), "schema") {
				t.Errorf("values %s: got error %v, want a schema violation", vals, err)
			}
		})
	}
}

func TestChartInjectorNeedsCertificate(t *testing.T) {
	_, err := render(t, "marblerun", parseValues(t, `marbleInjector: {start: true}`))
	if err == nil || !strings.Contains(err.Error(), "marbleInjector.useCertManager=true") {
		t.Errorf("got %v, want the chart to ask for a webhook certificate", err)
	}
}

func TestChartSchemaAccepts(t *testing.T) {
	for name, vals := range map[string]string{
		"simulation true":  `coordinator: {simulation: true}`,
		"secure cert TRUE": `dcap: {useSecureCert: "TRUE"}`,
		"secure cert bool": `dcap: {useSecureCert: false}`,
		"no dcap":          `dcap: null`,
		"several hosts":    `coordinator: {hostname: "a.example.com,b.example.com"}`,
		"existing pvc":     `coordinator: {pvcName: my-claim}`,
		"metrics":          `coordinator: {metrics: {enabled: true, port: 9100, serviceMonitor: {interval: 1m30s, labels: {release: prom}}}}`,
		"dashboard":        `grafana: {dashboard: {enabled: true, labels: null, annotations: {grafana_folder: MarbleRun}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := render(t, "marblerun", parseValues(t, vals)); err != nil {
				t.Errorf("values %s: %v", vals, err)
			}
		})
	}
}

// TestChartLint runs Helm's linter (the SDK's helm lint) over a copy of
// the embedded chart, with the default values and with the values of an
// SGX installation, and wants no warning.
func TestChartLint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "marblerun")
	if err := os.CopyFS(dir, charts.MarbleRun()); err != nil {
		t.Fatal(err)
	}
	for name, vals := range map[string]map[string]any{
		"default":     nil,
		"sgx":         cliValues(t, sgxSettings(sgxresource.AzureEPC)),
		"distributed": parseValues(t, `coordinator: {distributedDeployment: true}`),
		"replicas":    parseValues(t, `coordinator: {distributedDeployment: true, replicas: 3}`),
		"metrics":     parseValues(t, `{coordinator: {metrics: {enabled: true}}, grafana: {dashboard: {enabled: true}}}`),
	} {
		t.Run(name, func(t *testing.T) {
			l := action.NewLint()
			l.Strict = true
			l.Namespace = "marblerun"
			res := l.Run([]string{dir}, vals)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				}
			}
			for _, err := range res.Errors {
				t.Errorf("lint error: %v", err)
			}
			if res.TotalChartsLinted != 1 {
				t.Errorf("%d charts linted", res.TotalChartsLinted)
			}
		})
	}
}

// TestChartEmbedded checks that the embedded chart holds the files of the
// chart folder, helpers included.
func TestChartEmbedded(t *testing.T) {
	for _, f := range []string{"Chart.yaml", "values.yaml", "values.schema.json", "templates/_helpers.tpl", "templates/coordinator.yaml"} {
		want, err := os.ReadFile(filepath.Join("..", "..", "charts", "marblerun", f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := fs.ReadFile(charts.MarbleRun(), f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("embedded %s differs from the chart folder", f)
		}
	}
	ch, err := LoadChart("")
	if err != nil {
		t.Fatal(err)
	}
	if ch.Metadata.Name != "marblerun" || ch.Metadata.KubeVersion != ">=1.13.0-0" || ch.Metadata.APIVersion != chart.APIVersionV2 || ch.Schema == nil {
		t.Errorf("chart metadata %+v, schema %d bytes", ch.Metadata, len(ch.Schema))
	}
}

// TestChartDistributed checks the objects of a distributed deployment: the
// Coordinator's environment, no claim or seal volume, and a Role limited
// to what the Secrets store does, bound to the Coordinator's
// ServiceAccount; and that the default deployment has none of it.
func TestChartDistributed(t *testing.T) {
	cases := chartCases(t)
	for name, stateName := range map[string]string{"cli-distributed": "marblerun-state", "helm-distributed": "my-state", "default": "", "cli-simulation": ""} {
		t.Run(name, func(t *testing.T) {
			got, err := render(t, "mr", cases[name])
			if err != nil {
				t.Fatal(err)
			}
			objs, _ := decodeAll(t, got)
			c := coordinatorDeployment(t, objs).Spec.Template.Spec.Containers[0]
			env := envOf(c)
			var roles []*rbacv1.Role
			var bindings []*rbacv1.RoleBinding
			pvc := false
			for _, o := range objs {
				switch o := o.(type) {
				case *rbacv1.Role:
					roles = append(roles, o)
				case *rbacv1.RoleBinding:
					bindings = append(bindings, o)
				case *corev1.PersistentVolumeClaim:
					pvc = true
				}
			}
			for _, o := range objs {
				if _, ok := o.(*rbacv1.ClusterRole); ok {
					t.Error("the chart makes a ClusterRole")
				}
			}
			if stateName == "" {
				if len(roles)+len(bindings) != 0 || !pvc || env["EDG_COORDINATOR_SEAL_DIR"] == "" {
					t.Errorf("file store: %d Roles, %d RoleBindings, claim %v, seal dir %q", len(roles), len(bindings), pvc, env["EDG_COORDINATOR_SEAL_DIR"])
				}
				for _, k := range []string{"EDG_DISTRIBUTED_COORDINATOR", "EDG_STORE_BACKEND", "EDG_K8S_STATE_NAME", "EDG_K8S_NAMESPACE"} {
					if _, ok := env[k]; ok {
						t.Errorf("file store with %s", k)
					}
				}
				return
			}
			wantEnv := map[string]string{"EDG_DISTRIBUTED_COORDINATOR": "1", "EDG_STORE_BACKEND": "k8s-secret", "EDG_K8S_STATE_NAME": stateName, "EDG_K8S_NAMESPACE": "mr"}
			for k, v := range wantEnv {
				if env[k] != v {
					t.Errorf("%s=%q, want %q", k, env[k], v)
				}
			}
			if _, ok := env["EDG_COORDINATOR_SEAL_DIR"]; ok {
				t.Error("EDG_COORDINATOR_SEAL_DIR is set in distributed mode")
			}
			if pvc {
				t.Error("a PersistentVolumeClaim in distributed mode")
			}
			for _, m := range c.VolumeMounts {
				if m.Name == "coordinator-pv-storage" {
					t.Errorf("the seal volume is mounted in distributed mode: %+v", m)
				}
			}
			if len(roles) != 1 || len(bindings) != 1 {
				t.Fatalf("%d Roles and %d RoleBindings, want one of each", len(roles), len(bindings))
			}
			r := roles[0]
			if r.Name != "marblerun-coordinator" || r.Namespace != "mr" {
				t.Errorf("Role %s/%s", r.Namespace, r.Name)
			}
			if !reflect.DeepEqual(r.Rules, coordinatorRules(stateName, "marblerun-sealed-kek")) {
				t.Errorf("Role rules %+v, want %+v", r.Rules, coordinatorRules(stateName, "marblerun-sealed-kek"))
			}
			b := bindings[0]
			wantSubjects := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "marblerun-coordinator", Namespace: "mr"}}
			if b.Name != "marblerun-coordinator" || b.Namespace != "mr" || b.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "marblerun-coordinator"}) ||
				!reflect.DeepEqual(b.Subjects, wantSubjects) {
				t.Errorf("RoleBinding %s/%s to %+v for %+v", b.Namespace, b.Name, b.RoleRef, b.Subjects)
			}
		})
	}
}

// coordinatorRules are the rules of the distributed Coordinator's Role:
// what KubeStore does (create chunks and kept-aside heads of generated
// names, get and delete them, list them by label; update and watch the head
// only), the KEK ConfigMap (create it; read, update and patch only it), and
// the EndpointSlices of the key API Service.
func coordinatorRules(stateName, kekMap string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create", "list", "get", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{stateName}, Verbs: []string{"update", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{kekMap}, Verbs: []string{"get", "update", "patch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
	}
}

// TestChartRefusesSettings: the chart fails with a clear message on
// settings that would be ignored or unsafe.
func TestChartRefusesSettings(t *testing.T) {
	for name, c := range map[string]struct{ vals, want string }{
		"two replicas":                        {`coordinator: {replicas: 2}`, "coordinator.replicas is 2, but Coordinators that keep their state on a PersistentVolumeClaim cannot share it: several replicas need coordinator.distributedDeployment=true"},
		"three replicas":                      {`coordinator: {replicas: 3}`, "coordinator.replicas is 3"},
		"kek map without distributed mode":    {`coordinator: {kekConfigMap: my-kek}`, "coordinator.kekConfigMap is \"my-kek\", but only a distributed Coordinator"},
		"key API without distributed mode":    {`coordinator: {keyAPIName: my-key-api}`, "coordinator.keyAPIName is \"my-key-api\", but only a distributed Coordinator"},
		"key API named like the client API":   {`coordinator: {distributedDeployment: true, keyAPIName: coordinator-client-api}`, "the name of another Service of the chart"},
		"disruption budget with both bounds":  {`coordinator: {distributedDeployment: true, replicas: 3, podDisruptionBudget: {minAvailable: 2}}`, "both maxUnavailable and minAvailable"},
		"disruption budget without bound":     {`coordinator: {distributedDeployment: true, replicas: 3, podDisruptionBudget: {maxUnavailable: null}}`, "neither maxUnavailable nor minAvailable"},
		"claim in distributed mode":           {`coordinator: {distributedDeployment: true, pvcName: my-claim}`, "coordinator.pvcName is set"},
		"state name without distributed mode": {`coordinator: {stateSecretName: other-state}`, "only a distributed Coordinator"},
		"import without distributed mode":     {`coordinator: {importStateFromPVC: coordinator-pv-claim}`, "coordinator.importStateFromPVC is \"coordinator-pv-claim\", but only a distributed Coordinator"},
		"import with several replicas":        {`coordinator: {distributedDeployment: true, replicas: 3, importStateFromPVC: coordinator-pv-claim}`, "import with coordinator.replicas=1, then leave importStateFromPVC empty and scale up"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := render(t, "marblerun", parseValues(t, c.vals))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("values %s: got %v, want an error with %q", c.vals, err, c.want)
			}
		})
	}
	for _, vals := range []string{`coordinator: {replicas: 0}`, `coordinator: {replicas: 1, distributedDeployment: true}`, `coordinator: {distributedDeployment: true, stateSecretName: other-state}`,
		`coordinator: {replicas: 15, distributedDeployment: true}`,
		// One replica makes no disruption budget, so its bounds do not matter.
		`coordinator: {replicas: 1, distributedDeployment: true, podDisruptionBudget: {maxUnavailable: null}}`,
		`coordinator: {replicas: 3, distributedDeployment: true, podDisruptionBudget: {enabled: false, maxUnavailable: null}}`} {
		if _, err := render(t, "marblerun", parseValues(t, vals)); err != nil {
			t.Errorf("values %s: %v", vals, err)
		}
	}
}
