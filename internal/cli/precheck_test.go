package cli

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/marblemesh/marblemesh/test/kubetest"
)

func addTestNode(t *testing.T, cs kubernetes.Interface, name string, capacity map[string]string) {
	t.Helper()
	node, err := cs.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rl := corev1.ResourceList{}
	for k, v := range capacity {
		rl[corev1.ResourceName(k)] = resource.MustParse(v)
	}
	node.Status.Capacity = rl
	if _, err := cs.CoreV1().Nodes().UpdateStatus(t.Context(), node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

func TestPrecheck(t *testing.T) {
	kube := kubetest.Start(t)
	e := newEnv(t)
	kc := []string{"--kubeconfig", kube.Kubeconfig}

	addTestNode(t, kube.Clientset, "plain", map[string]string{"cpu": "2"})
	// Intel's plugin without the provision resource is not enough.
	addTestNode(t, kube.Clientset, "intel-partial", map[string]string{"sgx.intel.com/epc": "10Mi", "sgx.intel.com/enclave": "10"})
	e.golden("precheck-none", e.ok(append([]string{"precheck"}, kc...)...).stdout)

	addTestNode(t, kube.Clientset, "intel", map[string]string{"sgx.intel.com/epc": "64Mi", "sgx.intel.com/enclave": "10", "sgx.intel.com/provision": "10"})
	addTestNode(t, kube.Clientset, "azure", map[string]string{"kubernetes.azure.com/sgx_epc_mem_in_MiB": "128"})
	addTestNode(t, kube.Clientset, "alibaba", map[string]string{"alibabacloud.com/sgx_epc_MiB": "64"})
	e.golden("precheck-sgx", e.ok(append([]string{"precheck"}, kc...)...).stdout)
	e.golden("precheck-sgx-json", e.ok(append([]string{"precheck", "--format", "json"}, kc...)...).stdout)
}
