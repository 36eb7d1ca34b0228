package install

import (
	"slices"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
)

// TestChartEnvReadByCoordinator feeds the environment the chart puts on
// the Coordinator container to the Coordinator's own configuration parser.
func TestChartEnvReadByCoordinator(t *testing.T) {
	cases := chartCases(t)
	for name, want := range map[string]struct {
		sim          bool
		mesh, client string
		hosts        []string
		debug        bool
		logLevel     string
		state        string // the state's Secret in distributed mode
	}{
		"default":          {mesh: "0.0.0.0:2001", client: "0.0.0.0:4433", hosts: []string{"localhost"}, logLevel: "error"},
		"helm-simulation":  {sim: true, mesh: "0.0.0.0:2001", client: "0.0.0.0:4433", hosts: []string{"mycluster.uksouth.cloudapp.azure.com", "localhost"}, logLevel: "error"},
		"cli-ports":        {sim: true, mesh: "0.0.0.0:3001", client: "0.0.0.0:5443", hosts: []string{"a.example.com", "b.example.com"}, logLevel: "error"},
		"cli-distributed":  {sim: true, mesh: "0.0.0.0:2001", client: "0.0.0.0:4433", hosts: []string{"localhost"}, logLevel: "error", state: "marblerun-state"},
		"helm-distributed": {mesh: "0.0.0.0:2001", client: "0.0.0.0:4433", hosts: []string{"localhost"}, logLevel: "error", state: "my-state"},
		"helm-replicas":    {mesh: "0.0.0.0:2001", client: "0.0.0.0:4433", hosts: []string{"localhost", "coordinator-key-api.mr.svc.cluster.local"}, logLevel: "error", state: "marblerun-state"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := render(t, "mr", cases[name])
			if err != nil {
				t.Fatal(err)
			}
			objs, _ := decodeAll(t, got)
			vars := envOf(coordinatorDeployment(t, objs).Spec.Template.Spec.Containers[0])
			cfg, err := coordinator.ConfigFromEnv(func(k string) string { return vars[k] }, "/nonexistent")
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Simulation != want.sim || cfg.MeshAddr != want.mesh || cfg.ClientAddr != want.client ||
				cfg.DebugLogging != want.debug || cfg.HTTPErrorLogLevel != want.logLevel {
				t.Errorf("config %+v", cfg)
			}
			if want.state == "" && (cfg.Store != coordinator.StoreFile || cfg.SealDir != "/coordinator/data/") {
				t.Errorf("store %q in %q, want the file store in /coordinator/data/", cfg.Store, cfg.SealDir)
			}
			if want.state != "" && (cfg.Store != coordinator.StoreK8sSecret || cfg.KubeStateName != want.state || cfg.KubeNamespace != "mr" || cfg.SealDir != "") {
				t.Errorf("store %q, state %s/%s, seal dir %q: want the k8s-secret store in mr/%s", cfg.Store, cfg.KubeNamespace, cfg.KubeStateName, cfg.SealDir, want.state)
			}
			for _, h := range append(want.hosts, "coordinator-mesh-api.mr.svc.cluster.local") {
				if !slices.Contains(cfg.DNSNames, h) {
					t.Errorf("DNS names %v lack %s", cfg.DNSNames, h)
				}
			}
		})
	}
}

// TestStateLabelsOfTheStore: uninstall finds the state by the labels the
// Coordinator's store writes.
func TestStateLabelsOfTheStore(t *testing.T) {
	if StateLabel != store.LabelState || stateManagedBy != store.LabelManagedBy || stateManagedByValue != store.ManagedByValue {
		t.Errorf("uninstall selects %s, the store labels %s=%s and %s", stateSelector, store.LabelManagedBy, store.ManagedByValue, store.LabelState)
	}
}
