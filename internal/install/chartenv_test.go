package install

import (
	"slices"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator"
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
	}{
		"default":         {mesh: "0.0.0.0:2001", client: "0.0.0.0:4433", hosts: []string{"localhost"}, logLevel: "error"},
		"helm-simulation": {sim: true, mesh: "0.0.0.0:2001", client: "0.0.0.0:4433", hosts: []string{"mycluster.uksouth.cloudapp.azure.com", "localhost"}, logLevel: "error"},
		"cli-ports":       {sim: true, mesh: "0.0.0.0:3001", client: "0.0.0.0:5443", hosts: []string{"a.example.com", "b.example.com"}, logLevel: "error"},
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
				cfg.SealDir != "/coordinator/data/" || cfg.DebugLogging != want.debug || cfg.HTTPErrorLogLevel != want.logLevel {
				t.Errorf("config %+v", cfg)
			}
			for _, h := range append(want.hosts, "coordinator-mesh-api.mr.svc.cluster.local") {
				if !slices.Contains(cfg.DNSNames, h) {
					t.Errorf("DNS names %v lack %s", cfg.DNSNames, h)
				}
			}
		})
	}
}
