package install

import (
	"fmt"
	"strings"

	"github.com/marblemesh/marblemesh/internal/sgxresource"
)

// Settings are the choices of an installation that reach the chart.
type Settings struct {
	// Domains are extra DNS names of the Coordinator's certificate.
	Domains []string
	// Simulation runs the Coordinator without SGX (insecure).
	Simulation bool
	// ResourceKey is the SGX resource key of the cluster's device plugin.
	ResourceKey string
	// DCAPQPL is the quote provider library: azure or intel.
	DCAPQPL string
	// DCAPPCCSURL is the PCCS the quote provider asks.
	DCAPPCCSURL string
	// DCAPSecureCert is TRUE or FALSE: whether the PCCS's certificate is
	// verified.
	DCAPSecureCert string
	// MeshServerPort and ClientServerPort are the Coordinator's ports.
	MeshServerPort, ClientServerPort int
	// Injector deploys the marble-injector webhook.
	Injector bool
	// CertManager lets cert-manager issue the webhook's certificate.
	CertManager bool
	// CABundle is the PEM of the CA that signed the webhook's certificate,
	// when cert-manager does not.
	CABundle []byte
	// Distributed keeps the Coordinator's state in Secrets of the
	// namespace (coordinator.distributedDeployment) instead of on a
	// PersistentVolumeClaim.
	Distributed bool
	// Replicas is the number of Coordinator replicas
	// (coordinator.replicas), 1 to MaxReplicas, and needs Distributed; 0
	// leaves the chart's default of one.
	Replicas int
}

// MaxReplicas bounds the Coordinator's replicas, as the chart's schema
// does (coordinator.replicas).
const MaxReplicas = 15

// CheckReplicas tells whether n Coordinator replicas can be installed,
// with or without distributed mode.
func CheckReplicas(n int, distributed bool) error {
	if n < 1 || n > MaxReplicas {
		return withNext(fmt.Errorf("--replicas %d: the Coordinator runs 1 to %d replicas", n, MaxReplicas),
			fmt.Sprintf("Give --replicas a number from 1 to %d.", MaxReplicas))
	}
	if !distributed {
		return withNext(fmt.Errorf("--replicas %d needs --distributed-deployment: Coordinators that keep their state on a PersistentVolumeClaim cannot share it", n),
			"Add --distributed-deployment, or leave out --replicas for one Coordinator.")
	}
	return nil
}

// Values returns the chart values of s. defaults are the chart's own
// values, from which the hostname and tolerations are extended and the
// resource limits replaced.
func Values(s Settings, defaults map[string]any) (map[string]any, error) {
	if s.MeshServerPort < 1 || s.MeshServerPort > 65535 || s.ClientServerPort < 1 || s.ClientServerPort > 65535 {
		return nil, withNext(fmt.Errorf("invalid ports %d (mesh) and %d (client)", s.MeshServerPort, s.ClientServerPort),
			"Give --mesh-server-port and --client-server-port values between 1 and 65535.")
	}
	if s.MeshServerPort == s.ClientServerPort {
		return nil, withNext(fmt.Errorf("the mesh and client API share port %d", s.MeshServerPort),
			"Give --mesh-server-port and --client-server-port different values.")
	}
	defCoord, _ := defaults["coordinator"].(map[string]any)

	var hosts []string
	for _, d := range s.Domains {
		if d = strings.TrimSpace(d); d != "" {
			hosts = append(hosts, d)
		}
	}
	if h, _ := defCoord["hostname"].(string); h != "" {
		hosts = append(hosts, h)
	}
	coord := map[string]any{
		"meshServerPort":   s.MeshServerPort,
		"clientServerPort": s.ClientServerPort,
		"hostname":         strings.Join(hosts, ","),
	}
	if s.Distributed {
		coord["distributedDeployment"] = true
	}
	if s.Replicas != 0 {
		if err := CheckReplicas(s.Replicas, s.Distributed); err != nil {
			return nil, err
		}
		coord["replicas"] = s.Replicas
	}
	vals := map[string]any{"coordinator": coord}

	if s.Simulation {
		coord["simulation"] = true
		coord["resources"] = nil
		vals["tolerations"] = nil
		vals["dcap"] = nil
	} else {
		if s.ResourceKey == "" {
			return nil, fmt.Errorf("no SGX resource key chosen")
		}
		qpl := strings.ToLower(s.DCAPQPL)
		if qpl != "azure" && qpl != "intel" {
			return nil, withNext(fmt.Errorf("unknown quote provider library %q", s.DCAPQPL), "Give --dcap-qpl azure or intel.")
		}
		secure := strings.ToUpper(s.DCAPSecureCert)
		if secure != "TRUE" && secure != "FALSE" {
			return nil, withNext(fmt.Errorf("--dcap-secure-cert is %q", s.DCAPSecureCert), "Give --dcap-secure-cert TRUE or FALSE.")
		}
		vals["dcap"] = map[string]any{
			"qpl":           qpl,
			"pccsUrl":       s.DCAPPCCSURL,
			"useSecureCert": secure,
		}
		vals["tolerations"] = tolerations(defaults["tolerations"], s.ResourceKey)
		coord["resources"] = map[string]any{"limits": limits(defCoord, s.ResourceKey)}
	}

	inj := map[string]any{"start": s.Injector}
	if s.Injector {
		inj["resourceKey"] = s.ResourceKey
		if s.ResourceKey == "" {
			inj["resourceKey"] = sgxresource.IntelEPC
		}
		inj["useCertManager"] = s.CertManager
		inj["CABundle"] = ""
		if !s.CertManager {
			if len(s.CABundle) == 0 {
				return nil, fmt.Errorf("the webhook has neither cert-manager nor a CA bundle")
			}
			inj["CABundle"] = base64Std(s.CABundle)
		}
	}
	vals["marbleInjector"] = inj
	return vals, nil
}

// tolerations returns the chart's tolerations plus one for key, unless one
// for key is there already.
func tolerations(def any, key string) []any {
	list, _ := def.([]any)
	out := make([]any, 0, len(list)+1)
	found := false
	for _, t := range list {
		if m, ok := t.(map[string]any); ok && m["key"] == key {
			found = true
		}
		out = append(out, t)
	}
	if !found {
		out = append(out, map[string]any{"key": key, "operator": "Exists", "effect": "NoSchedule"})
	}
	return out
}

// limits returns the Coordinator's resource limits for key. The chart's
// default limits are set to nil, which removes them when Helm merges the
// values, so that only key's limits remain.
func limits(defCoord map[string]any, key string) map[string]any {
	out := map[string]any{}
	if res, ok := defCoord["resources"].(map[string]any); ok {
		if l, ok := res["limits"].(map[string]any); ok {
			for k := range l {
				out[k] = nil
			}
		}
	}
	for k, v := range resourceLimits(key) {
		out[k] = v
	}
	return out
}
