package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/marblemesh/marblemesh/charts"
)

// keyAPIPort is the port of the key API Service and container.
const keyAPIPort = 5433

// selects reports whether sel selects a Pod with podLabels.
func selects(t *testing.T, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return !s.Empty() && s.Matches(labels.Set(podLabels))
}

// injectorPodLabels are the labels of the marble-injector's Pods, which no
// selector of the Coordinator may match.
var injectorPodLabels = map[string]string{"app.kubernetes.io/name": "marble-injector", "app.kubernetes.io/part-of": "marblerun"}

// TestChartReplicas checks what the chart makes of coordinator.replicas:
// the Deployment's replicas and update strategy, the spread across nodes,
// the PodDisruptionBudget, the key API Service and container port, the
// Coordinator's environment and certificate names, and the Role, for
// several replicas, one distributed replica and the file store.
func TestChartReplicas(t *testing.T) {
	cases := chartCases(t)
	type want struct {
		replicas    int32
		distributed bool
		spread      corev1.UnsatisfiableConstraintAction
		// budget is nil when there must be no PodDisruptionBudget.
		budget                *policyv1.PodDisruptionBudgetSpec
		state, kekMap, keyAPI string
	}
	one, sixty := intstr.FromInt32(1), intstr.FromString("60%")
	for name, w := range map[string]want{
		"cli-replicas": {replicas: 3, distributed: true, spread: corev1.ScheduleAnyway, budget: &policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &one},
			state: "marblerun-state", kekMap: "marblerun-sealed-kek", keyAPI: "coordinator-key-api"},
		"helm-replicas": {replicas: 3, distributed: true, spread: corev1.ScheduleAnyway, budget: &policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &one},
			state: "marblerun-state", kekMap: "marblerun-sealed-kek", keyAPI: "coordinator-key-api"},
		"helm-replicas-tuned": {replicas: 5, distributed: true, spread: corev1.DoNotSchedule, budget: &policyv1.PodDisruptionBudgetSpec{MinAvailable: &sixty},
			state: "my-state", kekMap: "my-kek", keyAPI: "my-key-api"},
		"cli-distributed": {replicas: 1, distributed: true, spread: corev1.ScheduleAnyway,
			state: "marblerun-state", kekMap: "marblerun-sealed-kek", keyAPI: "coordinator-key-api"},
		"default": {replicas: 1, spread: corev1.ScheduleAnyway},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := render(t, "mr", cases[name])
			if err != nil {
				t.Fatal(err)
			}
			objs, _ := decodeAll(t, got)
			d := coordinatorDeployment(t, objs)
			podLabels := d.Spec.Template.Labels
			if d.Spec.Replicas == nil || *d.Spec.Replicas != w.replicas {
				t.Errorf("Deployment replicas %v, want %d", d.Spec.Replicas, w.replicas)
			}
			checkStrategy(t, d.Spec.Strategy, w.distributed)
			checkSpread(t, d.Spec.Template.Spec.TopologySpreadConstraints, w.spread, podLabels)

			var budgets []*policyv1.PodDisruptionBudget
			var keyServices []*corev1.Service
			var roles []*rbacv1.Role
			for _, o := range objs {
				switch o := o.(type) {
				case *policyv1.PodDisruptionBudget:
					budgets = append(budgets, o)
				case *corev1.Service:
					if o.Name != "coordinator-client-api" && o.Name != "coordinator-mesh-api" {
						keyServices = append(keyServices, o)
					}
				case *rbacv1.Role:
					roles = append(roles, o)
				}
			}
			checkBudget(t, budgets, w.budget, podLabels)

			c := d.Spec.Template.Spec.Containers[0]
			env := envOf(c)
			dns := strings.Split(env["EDG_COORDINATOR_DNS_NAMES"], ",")
			keyNames := []string{w.keyAPI, w.keyAPI + ".mr", w.keyAPI + ".mr.svc.cluster.local"}
			if !w.distributed {
				if len(keyServices) != 0 || len(roles) != 0 || hasContainerPort(c, keyAPIPort) {
					t.Errorf("file store: key API Services %d, Roles %d, container port %d %v", len(keyServices), len(roles), keyAPIPort, hasContainerPort(c, keyAPIPort))
				}
				for _, k := range []string{"EDG_K8S_SERVICE_NAME", "EDG_K8S_KEK_MAP", "POD_NAME", "POD_NAMESPACE", "POD_IP"} {
					if _, ok := env[k]; ok {
						t.Errorf("file store with %s", k)
					}
				}
				for _, n := range dns {
					if strings.Contains(n, "key-api") {
						t.Errorf("file store with the DNS name %s", n)
					}
				}
				return
			}

			if len(keyServices) != 1 {
				t.Fatalf("%d key API Services, want 1", len(keyServices))
			}
			svc := keyServices[0]
			tcp := "tcp"
			wantPorts := []corev1.ServicePort{{Name: "grpc", Port: keyAPIPort, TargetPort: intstr.FromInt32(keyAPIPort), Protocol: corev1.ProtocolTCP, AppProtocol: &tcp}}
			if svc.Name != w.keyAPI || svc.Namespace != "mr" || svc.Spec.Type != corev1.ServiceTypeClusterIP || !reflect.DeepEqual(svc.Spec.Ports, wantPorts) {
				t.Errorf("key API Service %s/%s %s ports %+v, want %s with %+v", svc.Namespace, svc.Name, svc.Spec.Type, svc.Spec.Ports, w.keyAPI, wantPorts)
			}
			if !reflect.DeepEqual(svc.Spec.Selector, d.Spec.Selector.MatchLabels) || !selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, podLabels) {
				t.Errorf("key API Service selects %v, the Coordinator's Pods are %v", svc.Spec.Selector, podLabels)
			}
			if !hasContainerPort(c, keyAPIPort) {
				t.Errorf("the Coordinator container has no port %d: %+v", keyAPIPort, c.Ports)
			}

			for k, v := range map[string]string{"EDG_K8S_SERVICE_NAME": w.keyAPI, "EDG_K8S_KEK_MAP": w.kekMap, "EDG_K8S_STATE_NAME": w.state} {
				if env[k] != v {
					t.Errorf("%s=%q, want %q", k, env[k], v)
				}
			}
			fields := map[string]string{}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
					fields[e.Name] = e.ValueFrom.FieldRef.FieldPath
				}
			}
			if wantFields := map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"}; !reflect.DeepEqual(fields, wantFields) {
				t.Errorf("environment from the downward API %v, want %v", fields, wantFields)
			}
			for _, n := range keyNames {
				if !slices.Contains(dns, n) {
					t.Errorf("EDG_COORDINATOR_DNS_NAMES %v lacks %s", dns, n)
				}
			}

			if len(roles) != 1 {
				t.Fatalf("%d Roles, want 1", len(roles))
			}
			if want := coordinatorRules(w.state, w.kekMap); !reflect.DeepEqual(roles[0].Rules, want) {
				t.Errorf("Role rules %+v, want %+v", roles[0].Rules, want)
			}
		})
	}
}

func hasContainerPort(c corev1.Container, port int32) bool {
	for _, p := range c.Ports {
		if p.ContainerPort == port && p.Protocol == corev1.ProtocolTCP {
			return true
		}
	}
	return false
}

// checkStrategy: Coordinators on a shared state are replaced one at a time,
// a new one up before an old one goes; a Coordinator on a volume is
// stopped before the next one starts.
func checkStrategy(t *testing.T, s appsv1.DeploymentStrategy, distributed bool) {
	t.Helper()
	if !distributed {
		if s.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("file store: strategy %+v, want Recreate", s)
		}
		return
	}
	surge, unavailable := intstr.FromInt32(1), intstr.FromInt32(0)
	want := appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge, MaxUnavailable: &unavailable}}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("distributed: strategy %+v, want %+v", s, want)
	}
}

// checkSpread wants one constraint that spreads the Coordinator's Pods
// across nodes.
func checkSpread(t *testing.T, cs []corev1.TopologySpreadConstraint, when corev1.UnsatisfiableConstraintAction, podLabels map[string]string) {
	t.Helper()
	if len(cs) != 1 {
		t.Fatalf("%d topology spread constraints, want 1", len(cs))
	}
	c := cs[0]
	if c.MaxSkew != 1 || c.TopologyKey != corev1.LabelHostname || c.WhenUnsatisfiable != when {
		t.Errorf("spread %+v, want maxSkew 1 over %s, %s", c, corev1.LabelHostname, when)
	}
	if !selects(t, c.LabelSelector, podLabels) || selects(t, c.LabelSelector, injectorPodLabels) {
		t.Errorf("spread selector %+v does not select exactly the Coordinator's Pods %v", c.LabelSelector, podLabels)
	}
}

// checkBudget wants no PodDisruptionBudget when want is nil, else one for
// the Coordinator's Pods with want's bounds.
func checkBudget(t *testing.T, budgets []*policyv1.PodDisruptionBudget, want *policyv1.PodDisruptionBudgetSpec, podLabels map[string]string) {
	t.Helper()
	if want == nil {
		if len(budgets) != 0 {
			t.Errorf("%d PodDisruptionBudgets, want none", len(budgets))
		}
		return
	}
	if len(budgets) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(budgets))
	}
	b := budgets[0]
	if b.Name != "marblerun-coordinator" || b.Namespace != "mr" {
		t.Errorf("PodDisruptionBudget %s/%s", b.Namespace, b.Name)
	}
	if !reflect.DeepEqual(b.Spec.MaxUnavailable, want.MaxUnavailable) || !reflect.DeepEqual(b.Spec.MinAvailable, want.MinAvailable) {
		t.Errorf("PodDisruptionBudget maxUnavailable %v minAvailable %v, want %v and %v", b.Spec.MaxUnavailable, b.Spec.MinAvailable, want.MaxUnavailable, want.MinAvailable)
	}
	if !selects(t, b.Spec.Selector, podLabels) || selects(t, b.Spec.Selector, injectorPodLabels) {
		t.Errorf("PodDisruptionBudget selector %+v does not select exactly the Coordinator's Pods %v", b.Spec.Selector, podLabels)
	}
}

// TestChartBudgetOff: podDisruptionBudget.enabled=false leaves the budget
// out of a deployment with several replicas.
func TestChartBudgetOff(t *testing.T) {
	got, err := render(t, "mr", parseValues(t, `coordinator: {distributedDeployment: true, replicas: 3, podDisruptionBudget: {enabled: false}}`))
	if err != nil {
		t.Fatal(err)
	}
	objs, _ := decodeAll(t, got)
	if n := countKind[*policyv1.PodDisruptionBudget](objs); n != 0 {
		t.Errorf("%d PodDisruptionBudgets with podDisruptionBudget.enabled=false", n)
	}
	if d := coordinatorDeployment(t, objs); *d.Spec.Replicas != 3 {
		t.Errorf("replicas %d", *d.Spec.Replicas)
	}
}

func countKind[T runtime.Object](objs []runtime.Object) int {
	n := 0
	for _, o := range objs {
		if _, ok := o.(T); ok {
			n++
		}
	}
	return n
}

// TestValuesReplicas: install's --replicas reaches coordinator.replicas in
// distributed mode only, within the chart's bounds, which are MaxReplicas.
func TestValuesReplicas(t *testing.T) {
	base := Settings{Simulation: true, MeshServerPort: 2001, ClientServerPort: 4433}
	for _, tc := range []struct {
		replicas    int
		distributed bool
		want        any    // coordinator.replicas, nil for unset
		err         string // the error, "" for none
	}{
		{replicas: 0, distributed: false, want: nil},
		{replicas: 0, distributed: true, want: nil},
		{replicas: 1, distributed: true, want: 1},
		{replicas: 3, distributed: true, want: 3},
		{replicas: MaxReplicas, distributed: true, want: MaxReplicas},
		{replicas: 3, distributed: false, err: "--replicas 3 needs --distributed-deployment"},
		{replicas: 1, distributed: false, err: "--replicas 1 needs --distributed-deployment"},
		{replicas: MaxReplicas + 1, distributed: true, err: "--replicas 16: the Coordinator runs 1 to 15 replicas"},
		{replicas: -1, distributed: true, err: "--replicas -1: the Coordinator runs 1 to 15 replicas"},
	} {
		s := base
		s.Replicas, s.Distributed = tc.replicas, tc.distributed
		vals, err := Values(s, nil)
		if tc.err != "" {
			var ie *Error
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.As(err, &ie) || ie.Next == "" {
				t.Errorf("replicas %d, distributed %v: got %v, want an error with %q and advice", tc.replicas, tc.distributed, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("replicas %d, distributed %v: %v", tc.replicas, tc.distributed, err)
		}
		coord := vals["coordinator"].(map[string]any)
		if got := coord["replicas"]; got != tc.want {
			t.Errorf("replicas %d, distributed %v: coordinator.replicas %v, want %v", tc.replicas, tc.distributed, got, tc.want)
		}
	}
}

// TestMaxReplicasIsTheSchemas: the CLI's bound on --replicas is the
// chart's on coordinator.replicas.
func TestMaxReplicasIsTheSchemas(t *testing.T) {
	ch, err := LoadChart("")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Coordinator struct {
				Properties struct {
					Replicas struct {
						Minimum *int `json:"minimum"`
						Maximum *int `json:"maximum"`
					} `json:"replicas"`
				} `json:"properties"`
			} `json:"coordinator"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(ch.Schema, &schema); err != nil {
		t.Fatal(err)
	}
	r := schema.Properties.Coordinator.Properties.Replicas
	if r.Maximum == nil || *r.Maximum != MaxReplicas || r.Minimum == nil || *r.Minimum != 0 {
		t.Errorf("the schema bounds coordinator.replicas to %v..%v, the CLI to 1..%d (0 is the chart's only)", r.Minimum, r.Maximum, MaxReplicas)
	}
}

// TestChartReadmeValues: the values tables of the chart's README name
// values the chart has, with their defaults, and cover the values of
// distributed mode, of the metrics and of the dashboard.
func TestChartReadmeValues(t *testing.T) {
	readme, err := fs.ReadFile(charts.MarbleRun(), "README.md")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := LoadChart("")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-zA-Z.]+)` \\| `([^`]*)` \\|")
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		key, def := m[1], m[2]
		seen[key] = true
		var v any = ch.Values
		for _, part := range strings.Split(key, ".") {
			mp, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("README value %s: not in values.yaml", key)
			}
			if v, ok = mp[part]; !ok {
				t.Fatalf("README value %s: not in values.yaml", key)
			}
		}
		got := fmt.Sprint(v)
		if v == nil {
			got = "null"
		}
		if got != def {
			t.Errorf("README value %s: default %q, values.yaml %q", key, def, got)
		}
	}
	for _, key := range []string{"coordinator.distributedDeployment", "coordinator.replicas", "coordinator.stateSecretName", "coordinator.kekConfigMap",
		"coordinator.keyAPIName", "coordinator.podDisruptionBudget.enabled", "coordinator.podDisruptionBudget.maxUnavailable",
		"coordinator.podDisruptionBudget.minAvailable", "coordinator.topologySpread.whenUnsatisfiable",
		"coordinator.metrics.enabled", "coordinator.metrics.port", "coordinator.metrics.serviceMonitor.enabled",
		"coordinator.metrics.serviceMonitor.interval", "marbleInjector.metrics.enabled", "marbleInjector.metrics.port",
		"marbleInjector.metrics.serviceMonitor.enabled", "marbleInjector.metrics.serviceMonitor.interval",
		"marbleInjector.shutdownDelaySeconds", "grafana.dashboard.enabled"} {
		if !seen[key] {
			t.Errorf("the chart's README has no row for %s", key)
		}
	}
}
