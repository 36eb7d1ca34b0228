package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/internal/install"
)

func newUninstallCmd(out *output, namespace func() string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove MarbleRun from a Kubernetes cluster",
		Long: `Remove what "marblerun install" created in the namespace given with -n
(default marblerun): the Helm release "marblerun" with all its objects, and the
Secrets marble-injector-webhook-ca and marble-injector-webhook-certs. The
namespace itself stays. The Coordinator's sealed state goes with its
PersistentVolumeClaim.`,
		Args: exactArgs(0, "none"),
	}
	kf := addKubeFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		had, err := install.Uninstall(cmd.Context(), kf.cluster(namespace()), out.stdout())
		if err != nil {
			return kubeError(err)
		}
		if !had {
			fmt.Fprintf(out.stdout(), "MarbleRun was not installed in namespace %s; removed its webhook Secrets if there were any\n", namespace())
			return nil
		}
		fmt.Fprintln(out.stdout(), "MarbleRun uninstalled successfully")
		return nil
	}
	return cmd
}
