package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/internal/install"
	"github.com/marblemesh/marblemesh/internal/version"
)

// coordinatorVersionLabel is the label of Deployment marblerun-coordinator
// that names the Coordinator's version.
const coordinatorVersionLabel = "app.kubernetes.io/version"

func newVersionCmd(out *output, namespace func() string) *cobra.Command {
	var withCoordinator bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the CLI's version",
		Long: `Print the CLI's version. With --coordinator, also the version of the
Coordinator installed in the namespace given with -n, read from the label
app.kubernetes.io/version of its Deployment (this needs the cluster).`,
		Args: exactArgs(0, "none"),
	}
	kf := addKubeFlags(cmd)
	cmd.Flags().BoolVar(&withCoordinator, "coordinator", false, "also print the version of the Coordinator installed on the cluster")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ns := namespace()
		coord, found := "", false
		if withCoordinator {
			cs, err := kf.cluster(ns).Clientset(cmd.Context())
			if err != nil {
				return kubeError(err)
			}
			d, err := cs.AppsV1().Deployments(ns).Get(cmd.Context(), install.CoordinatorDeployment, metav1.GetOptions{})
			switch {
			case err == nil:
				coord, found = d.Labels[coordinatorVersionLabel], true
			case !apierrors.IsNotFound(err):
				return withHint(fmt.Errorf("reading Deployment %s/%s: %w", ns, install.CoordinatorDeployment, err),
					"Use a kubeconfig whose user may read Deployments in that namespace.")
			}
		}
		v := version.Get()
		if format(cmd).json() {
			return printJSON(out.stdout(), struct {
				Version            string `json:"version"`
				Commit             string `json:"commit"`
				Modified           bool   `json:"modified,omitempty"`
				GoVersion          string `json:"goVersion"`
				CoordinatorVersion string `json:"coordinatorVersion,omitempty"`
			}{v.Version, v.Commit, v.Modified, runtime.Version(), coord})
		}
		fmt.Fprintf(out.stdout(), "CLI version: %s\nCommit: %s\n", v.Version, v.Commit)
		if v.Modified {
			fmt.Fprintln(out.stdout(), "Built from a working tree with uncommitted changes")
		}
		switch {
		case !withCoordinator:
		case !found:
			fmt.Fprintf(out.stdout(), "Coordinator version: no MarbleRun Coordinator in namespace %s\n", ns)
		case coord == "":
			fmt.Fprintf(out.stdout(), "Coordinator version: unknown (Deployment %s has no label %s)\n", install.CoordinatorDeployment, coordinatorVersionLabel)
		default:
			fmt.Fprintf(out.stdout(), "Coordinator version: %s\n", coord)
		}
		return nil
	}
	addFormatFlag(cmd)
	return cmd
}
