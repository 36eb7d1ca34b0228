package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/internal/install"
)

func newUninstallCmd(out *output, namespace func() string) *cobra.Command {
	var deleteState bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove MarbleRun from a Kubernetes cluster",
		Long: `Remove what "marblerun install" created in the namespace given with -n
(default marblerun): the Helm release "marblerun" with all its objects, and the
Secrets marble-injector-webhook-ca and marble-injector-webhook-certs. The
namespace itself stays. The Coordinator's sealed state goes with its
PersistentVolumeClaim.

A Coordinator installed with --distributed-deployment keeps its state in
Secrets, and the key that opens the state, sealed for each platform it ran on,
in a ConfigMap (marblerun-sealed-kek by default); all of them are labelled
app.kubernetes.io/managed-by=marblemesh and ` + install.StateLabel + `=<state name>
and are not part of the Helm release. By default they are kept, and uninstall
says how many: a later installation in the namespace continues with the same
state, and a Coordinator on a node whose sealed key is in the ConfigMap opens
it without recovery. With --delete-state they are deleted once no Coordinator
Pod is left (it waits up to two minutes), and the state is gone for good.`,
		Example: `  marblerun uninstall
  marblerun uninstall --delete-state`,
		Args: exactArgs(0, "none"),
	}
	kf := addKubeFlags(cmd)
	cmd.Flags().BoolVar(&deleteState, "delete-state", false, "also delete the Secrets and the KEK ConfigMap of the Coordinator's state (distributed deployment); the state is lost")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ns := namespace()
		c := kf.cluster(ns)
		had, err := install.Uninstall(cmd.Context(), c, out.stdout())
		if err != nil {
			return kubeError(err)
		}
		if !had {
			fmt.Fprintf(out.stdout(), "MarbleRun was not installed in namespace %s; removed its webhook Secrets if there were any\n", ns)
		}
		if deleteState {
			st, err := install.DeleteState(cmd.Context(), c)
			if err != nil {
				return kubeError(err)
			}
			fmt.Fprintf(out.stdout(), "Deleted the Coordinator's state: %s (label %s)\n", st, install.StateLabel)
		} else {
			st, err := install.ListState(cmd.Context(), c)
			if err != nil {
				return kubeError(err)
			}
			if !st.Empty() {
				fmt.Fprintf(out.stdout(), "Kept the Coordinator's state: %s labelled %s=%s. A new installation with --distributed-deployment\n"+
					"in namespace %s continues with it. To remove it, run 'marblerun uninstall -n %s --delete-state'.\n",
					st, install.StateLabel, strings.Join(st.States, ","), ns, ns)
			}
		}
		if had {
			fmt.Fprintln(out.stdout(), "MarbleRun uninstalled successfully")
		}
		return nil
	}
	return cmd
}
