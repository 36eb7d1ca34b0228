package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/internal/install"
)

// kubeFlags are the flags of the commands that talk to Kubernetes.
type kubeFlags struct {
	kubeconfig string
}

func addKubeFlags(cmd *cobra.Command) *kubeFlags {
	f := &kubeFlags{}
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file of the cluster (default $KUBECONFIG, else ~/.kube/config)")
	return f
}

// cluster returns the cluster of the kubeconfig with the installation's
// namespace (-n).
func (f *kubeFlags) cluster(namespace string) *install.Cluster {
	return install.NewCluster(f.kubeconfig, namespace)
}

// kubeError turns the advice of an install error into the CLI's hint.
func kubeError(err error) error {
	var ie *install.Error
	if errors.As(err, &ie) && ie.Next != "" {
		return withHint(err, ie.Next)
	}
	return err
}

func newInstallCmd(out *output, namespace func() string) *cobra.Command {
	o := install.Options{}
	var waitTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install MarbleRun on a Kubernetes cluster",
		Long: `Install MarbleRun's Coordinator and marble-injector webhook into the namespace
given with -n (default marblerun), as the Helm release "marblerun" of the chart
built into this marblerun. Nothing is downloaded.

Without --resource-key, the SGX resource key is taken from the first node that
offers SGX through the Intel, Azure or Alibaba device plugin (Intel's when none
does). The webhook's certificate comes from cert-manager when the cluster serves
its API; otherwise the installation makes a CA, keeps it in the Secret
marble-injector-webhook-ca and stores the webhook's certificate in the Secret
marble-injector-webhook-certs. "marblerun uninstall" removes all of it.

By default one Coordinator keeps its sealed state on a PersistentVolumeClaim.
With --distributed-deployment it keeps it in Secrets of the namespace instead,
through the Kubernetes API (chart value coordinator.distributedDeployment=true):
the head Secret is named after coordinator.stateSecretName (default
marblerun-state), the others after it, and all are labelled
marblemesh.io/state=<that name>. Each Coordinator seals the key that opens the
state for its own platform in the ConfigMap marblerun-sealed-kek, and one that
starts on a new node gets that key from a running peer through the Service
coordinator-key-api (port 5433). No claim is made; the Coordinator's
ServiceAccount gets a Role marblerun-coordinator limited to these Secrets and
that ConfigMap, and to the EndpointSlices through which the peers find each
other.

--replicas N (with --distributed-deployment only, 1 to 15) runs N Coordinators
on the one state, spread across nodes where there are several, with a
PodDisruptionBudget that lets one of them go at a time; any of them serves any
request. "marblerun check" shows each of them. "marblerun uninstall" keeps the
state's Secrets and ConfigMap unless given --delete-state.

The kubeconfig is --kubeconfig, $KUBECONFIG or ~/.kube/config.`,
		Example: `  marblerun install --domain mycluster.uksouth.cloudapp.azure.com
  marblerun install --simulation --wait
  marblerun install --distributed-deployment
  marblerun install --distributed-deployment --replicas 3
  marblerun install --dcap-qpl intel --dcap-pccs-url https://pccs.example.com:8081/sgx/certification/v4/ --dcap-secure-cert FALSE`,
		Args: exactArgs(0, "none"),
	}
	kf := addKubeFlags(cmd)
	fl := cmd.Flags()
	fl.StringSliceVar(&o.Domains, "domain", nil, "DNS names (comma-separated or repeated) under which the Coordinator's client API is reached; added to its certificate")
	fl.StringVar(&o.ChartPath, "marblerun-chart-path", "", "install the chart in this folder or .tgz archive instead of the built-in one")
	fl.StringVar(&o.Version, "version", "", "chart version to install; the built-in chart has one version only, so any other needs --marblerun-chart-path")
	fl.StringVar(&o.ResourceKey, "resource-key", "", "SGX resource key of the cluster's device plugin (default: detected from the nodes)")
	fl.StringVar(&o.DCAPQPL, "dcap-qpl", "azure", "quote provider library of the Coordinator: azure or intel")
	fl.StringVar(&o.DCAPPCCSURL, "dcap-pccs-url", install.DefaultPCCSURL, "URL of the PCCS the quote provider asks")
	fl.StringVar(&o.DCAPSecureCert, "dcap-secure-cert", "TRUE", "whether the quote provider verifies the PCCS's certificate: TRUE or FALSE")
	fl.BoolVar(&o.Simulation, "simulation", false, "run the Coordinator without SGX, for clusters without SGX (INSECURE: no attestation)")
	fl.BoolVar(&o.DisableAutoInjection, "disable-auto-injection", false, "leave out the marble-injector webhook")
	fl.BoolVar(&o.DistributedDeployment, "distributed-deployment", false, "keep the Coordinator's state in Secrets of the namespace (named after marblerun-state) instead of on a volume, so that several replicas can share it")
	fl.IntVar(&o.Replicas, "replicas", 1, fmt.Sprintf("number of Coordinator replicas, 1 to %d (needs --distributed-deployment)", install.MaxReplicas))
	fl.IntVar(&o.MeshServerPort, "mesh-server-port", 2001, "port of the Coordinator's mesh API (gRPC, for marbles)")
	fl.IntVar(&o.ClientServerPort, "client-server-port", 4433, "port of the Coordinator's client API (HTTPS)")
	fl.BoolVar(&o.Wait, "wait", false, "wait until the Coordinator and the webhook are ready, showing their progress")
	fl.DurationVar(&waitTimeout, "timeout", 5*time.Minute, "how long --wait waits")

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if cmd.Flags().Changed("replicas") {
			if err := install.CheckReplicas(o.Replicas, o.DistributedDeployment); err != nil {
				return kubeError(err)
			}
		} else {
			o.Replicas = 0 // the chart's default
		}
		o.Progress = out.stdout()
		o.WaitTimeout = waitTimeout
		if o.Simulation {
			out.warnf("Warning: simulation mode: the Coordinator runs without SGX and its attestation proves nothing.")
		}
		if err := install.Install(cmd.Context(), kf.cluster(namespace()), o); err != nil {
			return kubeError(err)
		}
		if !o.Wait {
			fmt.Fprintf(out.stdout(), "Run 'marblerun check -n %s' to wait until it is ready.\n", namespace())
		}
		return nil
	}
	return cmd
}
