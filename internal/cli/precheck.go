package cli

import (
	"fmt"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/internal/install"
)

func newPrecheckCmd(out *output, namespace func() string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "precheck",
		Short: "Check whether the cluster's nodes offer SGX",
		Long: `Count the nodes that offer SGX through a device plugin: Intel's (all of
sgx.intel.com/epc, /enclave and /provision), Azure's
(kubernetes.azure.com/sgx_epc_mem_in_MiB) or Alibaba's
(alibabacloud.com/sgx_epc_MiB), and suggest how to install MarbleRun.`,
		Args: exactArgs(0, "none"),
	}
	kf := addKubeFlags(cmd)
	ff := addFormatFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cs, err := kf.cluster(namespace()).Clientset(cmd.Context())
		if err != nil {
			return kubeError(err)
		}
		nodes, err := cs.CoreV1().Nodes().List(cmd.Context(), metav1.ListOptions{})
		if err != nil {
			return withHint(fmt.Errorf("listing the nodes: %w", err), "Use a kubeconfig whose user may list nodes.")
		}
		sgx := install.CountSGXNodes(nodes.Items)
		key := ""
		if sgx > 0 {
			key = install.DetectResourceKey(nodes.Items)
		}
		if ff.json() {
			return printJSON(out.stdout(), struct {
				Nodes       int    `json:"nodes"`
				SGXNodes    int    `json:"sgxNodes"`
				ResourceKey string `json:"resourceKey"`
			}{len(nodes.Items), sgx, key})
		}
		if sgx == 0 {
			fmt.Fprintf(out.stdout(), "No node of the cluster (%d in all) offers SGX.\n"+
				"Install MarbleRun in simulation mode, without SGX's protection, with:\n\tmarblerun install --simulation\n", len(nodes.Items))
			return nil
		}
		fmt.Fprintf(out.stdout(), "%d of %d nodes offer SGX (resource key %s).\nInstall MarbleRun with:\n\tmarblerun install\n", sgx, len(nodes.Items), key)
		return nil
	}
	return cmd
}
