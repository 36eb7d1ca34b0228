package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/internal/install"
)

// maxCheckTimeout bounds check --timeout (seconds), so that it converts to a
// time.Duration without overflow.
const maxCheckTimeout = 7 * 24 * 3600

func newCheckCmd(out *output, namespace func() string) *cobra.Command {
	var timeout uint
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Wait until MarbleRun's Deployments on the cluster are ready",
		Long: `Check the Deployments marble-injector and marblerun-coordinator in the
namespace given with -n (default marblerun) and wait until all their replicas
are available, printing the progress. For the Coordinator, which may run
several replicas (install --distributed-deployment --replicas N), every
replica's Pod is listed with its node, whether it is ready (or why not, as far
as its status tells) and how often it restarted, again whenever one of them
changes. A Deployment that does not exist is reported and skipped; it is an
error when neither exists.`,
		Args: exactArgs(0, "none"),
	}
	kf := addKubeFlags(cmd)
	cmd.Flags().UintVar(&timeout, "timeout", 60, "seconds to wait at most")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if timeout > maxCheckTimeout {
			return fmt.Errorf("--timeout %d: at most %d seconds (a week)", timeout, maxCheckTimeout)
		}
		ns := namespace()
		cs, err := kf.cluster(ns).Clientset(cmd.Context())
		if err != nil {
			return kubeError(err)
		}
		w := install.Waiter{Clientset: cs, Namespace: ns, Out: out.stdout()}
		if err := w.Wait(cmd.Context(), time.Duration(timeout)*time.Second); err != nil { //nolint:gosec // G115: at most maxCheckTimeout, checked above
			return kubeError(err)
		}
		return nil
	}
	return cmd
}
