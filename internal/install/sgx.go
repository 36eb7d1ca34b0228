package install

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/marblemesh/marblemesh/internal/sgxresource"
)

// capacityOf reports whether node offers a positive amount of resource.
func capacityOf(node *corev1.Node, resource string) bool {
	q, ok := node.Status.Capacity[corev1.ResourceName(resource)]
	return ok && q.Sign() > 0
}

// NodeResourceKey returns the SGX resource key through which node offers
// SGX: Alibaba's, Azure's, or Intel's when all three Intel resources are
// offered; "" when the node offers no SGX.
func NodeResourceKey(node *corev1.Node) string {
	switch {
	case capacityOf(node, sgxresource.AlibabaEPC):
		return sgxresource.AlibabaEPC
	case capacityOf(node, sgxresource.AzureEPC):
		return sgxresource.AzureEPC
	case capacityOf(node, sgxresource.IntelEPC) && capacityOf(node, sgxresource.IntelEnclave) && capacityOf(node, sgxresource.IntelProvision):
		return sgxresource.IntelEPC
	}
	return ""
}

// CountSGXNodes returns how many nodes offer SGX.
func CountSGXNodes(nodes []corev1.Node) int {
	n := 0
	for i := range nodes {
		if NodeResourceKey(&nodes[i]) != "" {
			n++
		}
	}
	return n
}

// DetectResourceKey returns the SGX resource key of the first node that
// offers SGX, or Intel's when none does.
func DetectResourceKey(nodes []corev1.Node) string {
	for i := range nodes {
		if k := NodeResourceKey(&nodes[i]); k != "" {
			return k
		}
	}
	return sgxresource.IntelEPC
}

// resourceLimits returns the Coordinator's limits for an SGX resource key:
// Intel's three resources, or 10 (MiB of EPC) of any other key.
func resourceLimits(key string) map[string]any {
	if key == sgxresource.IntelEPC {
		return map[string]any{
			sgxresource.IntelEPC:       "10Mi",
			sgxresource.IntelEnclave:   1,
			sgxresource.IntelProvision: 1,
		}
	}
	return map[string]any{key: "10"}
}
