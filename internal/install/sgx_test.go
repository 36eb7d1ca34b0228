package install

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/internal/sgxresource"
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
		"intel all three":   {map[string]string{sgxresource.IntelEPC: "10Mi", sgxresource.IntelEnclave: "20", sgxresource.IntelProvision: "20"}, sgxresource.IntelEPC},
		"intel no provison": {map[string]string{sgxresource.IntelEPC: "10Mi", sgxresource.IntelEnclave: "20"}, ""},
		"intel zero epc":    {map[string]string{sgxresource.IntelEPC: "0", sgxresource.IntelEnclave: "20", sgxresource.IntelProvision: "20"}, ""},
		"azure":             {map[string]string{sgxresource.AzureEPC: "128"}, sgxresource.AzureEPC},
		"azure zero":        {map[string]string{sgxresource.AzureEPC: "0"}, ""},
		"alibaba":           {map[string]string{sgxresource.AlibabaEPC: "64"}, sgxresource.AlibabaEPC},
		"alibaba first":     {map[string]string{sgxresource.AlibabaEPC: "64", sgxresource.AzureEPC: "128"}, sgxresource.AlibabaEPC},
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
	azure := node("b", map[string]string{sgxresource.AzureEPC: "128"})
	intel := node("c", map[string]string{sgxresource.IntelEPC: "10Mi", sgxresource.IntelEnclave: "1", sgxresource.IntelProvision: "1"})
	if got := DetectResourceKey(nil); got != sgxresource.IntelEPC {
		t.Errorf("no nodes: %s", got)
	}
	if got := DetectResourceKey([]corev1.Node{plain, azure, intel}); got != sgxresource.AzureEPC {
		t.Errorf("first SGX node is Azure's: got %s", got)
	}
	if got := CountSGXNodes([]corev1.Node{plain, azure, intel}); got != 2 {
		t.Errorf("counted %d SGX nodes, want 2", got)
	}
}

func TestValuesErrors(t *testing.T) {
	base := sgxSettings(sgxresource.IntelEPC)
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
