package install

import (
	corev1 "k8s.io/api/core/v1"
)

// SGX resource names of the device plugins that the installation knows.
const (
	ResourceIntelEPC       = "sgx.intel.com/epc"
	ResourceIntelEnclave   = "sgx.intel.com/enclave"
	ResourceIntelProvision = "sgx.intel.com/provision"
	ResourceAzureEPC       = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
	ResourceAlibabaEPC     = "alibabacloud.com/sgx_epc_MiB"
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
	case capacityOf(node, ResourceAlibabaEPC):
		return ResourceAlibabaEPC
	case capacityOf(node, ResourceAzureEPC):
		return ResourceAzureEPC
	case capacityOf(node, ResourceIntelEPC) && capacityOf(node, ResourceIntelEnclave) && capacityOf(node, ResourceIntelProvision):
		return ResourceIntelEPC
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
	return ResourceIntelEPC
}

// resourceLimits returns the Coordinator's limits for an SGX resource key:
// Intel's three resources, or 10 (MiB of EPC) of any other key.
func resourceLimits(key string) map[string]any {
	if key == ResourceIntelEPC {
		return map[string]any{
			ResourceIntelEPC:       "10Mi",
			ResourceIntelEnclave:   1,
			ResourceIntelProvision: 1,
		}
	}
	return map[string]any{key: "10"}
}
