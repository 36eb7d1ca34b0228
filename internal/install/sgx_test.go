package install

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name string, capacity map[string]string) corev1.Node {
	rl := corev1.ResourceList{}
	for k, v := range capacity {
		rl[corev1.ResourceName(k)] = resource.MustParse(v)
	}
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Capacity: rl}}
}

func TestNodeResourceKey(t *testing.T) {
	for name, tc := range map[string]struct {
		capacity map[string]string
		want     string
	}{
		"none":              {map[string]string{"cpu": "2"}, ""},
		"intel all three":   {map[string]string{ResourceIntelEPC: "10Mi", ResourceIntelEnclave: "20", ResourceIntelProvision: "20"}, ResourceIntelEPC},
		"intel no provison": {map[string]string{ResourceIntelEPC: "10Mi", ResourceIntelEnclave: "20"}, ""},
		"intel zero epc":    {map[string]string{ResourceIntelEPC: "0", ResourceIntelEnclave: "20", ResourceIntelProvision: "20"}, ""},
		"azure":             {map[string]string{ResourceAzureEPC: "128"}, ResourceAzureEPC},
		"azure zero":        {map[string]string{ResourceAzureEPC: "0"}, ""},
		"alibaba":           {map[string]string{ResourceAlibabaEPC: "64"}, ResourceAlibabaEPC},
		"alibaba first":     {map[string]string{ResourceAlibabaEPC: "64", ResourceAzureEPC: "128"}, ResourceAlibabaEPC},
	} {
		t.Run(name, func(t *testing.T) {
			n := node("n", tc.capacity)
			if got := NodeResourceKey(&n); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDetectAndCount(t *testing.T) {
	plain := node("a", map[string]string{"cpu": "2"})
	azure := node("b", map[string]string{ResourceAzureEPC: "128"})
	intel := node("c", map[string]string{ResourceIntelEPC: "10Mi", ResourceIntelEnclave: "1", ResourceIntelProvision: "1"})
	if got := DetectResourceKey(nil); got != ResourceIntelEPC {
		t.Errorf("no nodes: %s", got)
	}
	if got := DetectResourceKey([]corev1.Node{plain, azure, intel}); got != ResourceAzureEPC {
		t.Errorf("first SGX node is Azure's: got %s", got)
	}
	if got := CountSGXNodes([]corev1.Node{plain, azure, intel}); got != 2 {
		t.Errorf("counted %d SGX nodes, want 2", got)
	}
}

func TestValuesErrors(t *testing.T) {
	base := sgxSettings(ResourceIntelEPC)
	for name, mod := range map[string]func(*Settings){
		"same ports":    func(s *Settings) { s.ClientServerPort = s.MeshServerPort },
		"port zero":     func(s *Settings) { s.MeshServerPort = 0 },
		"bad qpl":       func(s *Settings) { s.DCAPQPL = "amd" },
		"bad secure":    func(s *Settings) { s.DCAPSecureCert = "maybe" },
		"no CA":         func(s *Settings) { s.CABundle = nil },
		"no key on sgx": func(s *Settings) { s.ResourceKey = "" },
	} {
		t.Run(name, func(t *testing.T) {
			s := base
			mod(&s)
			if _, err := Values(s, nil); err == nil {
				t.Error("no error")
			}
		})
	}
}
