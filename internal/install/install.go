package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DefaultPCCSURL is the PCCS the quote provider asks by default.
const DefaultPCCSURL = "https://global.acccache.azure.net/sgx/certification/v4/"

// helmTimeout bounds each Helm operation.
const helmTimeout = 5 * time.Minute

// Options are the choices of marblerun install.
type Options struct {
	// ChartPath is a chart folder or archive; "" is the embedded chart.
	ChartPath string
	// Version, when set, must be the version of the chart.
	Version string
	// Domains are extra DNS names of the Coordinator's certificate.
	Domains []string
	// Simulation runs the Coordinator without SGX (insecure).
	Simulation bool
	// ResourceKey is the SGX resource key; "" detects it from the nodes.
	ResourceKey string
	// DCAPQPL, DCAPPCCSURL and DCAPSecureCert configure the quote provider.
	DCAPQPL, DCAPPCCSURL, DCAPSecureCert string
	// DisableAutoInjection leaves out the marble-injector webhook.
	DisableAutoInjection bool
	// DistributedDeployment keeps the Coordinator's state in Secrets of
	// the namespace instead of on a PersistentVolumeClaim.
	DistributedDeployment bool
	// Replicas is the number of Coordinator replicas, 1 to MaxReplicas,
	// with DistributedDeployment only; 0 means one.
	Replicas int
	// MeshServerPort and ClientServerPort are the Coordinator's ports.
	MeshServerPort, ClientServerPort int
	// Wait waits until the Deployments are ready, up to WaitTimeout.
	Wait        bool
	WaitTimeout time.Duration
	// Progress receives lines about what is going on; nil discards them.
	Progress io.Writer
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// PollInterval is the interval of the readiness checks; 0 means 1 s.
	PollInterval time.Duration
	// Heartbeat is how often the wait says what it still waits for while
	// nothing changes; 0 means 10 s.
	Heartbeat time.Duration
}

func (o *Options) progress() io.Writer {
	if o.Progress == nil {
		return io.Discard
	}
	return o.Progress
}

func (o *Options) heartbeat() time.Duration {
	if o.Heartbeat <= 0 {
		return 10 * time.Second
	}
	return o.Heartbeat
}

// helmConfig returns a Helm action configuration for the cluster's
// namespace. HELM_DRIVER selects the release storage, as for helm.
func helmConfig(c *Cluster) (*action.Configuration, error) {
	cfg := new(action.Configuration)
	if err := cfg.Init(c, c.Namespace(), os.Getenv("HELM_DRIVER"), func(string, ...any) {}); err != nil {
		return nil, fmt.Errorf("setting up Helm: %w", err)
	}
	return cfg, nil
}

// existingRelease returns the last revision's status of the release, or
// "" when there is none.
func existingRelease(cfg *action.Configuration) (string, error) {
	h := action.NewHistory(cfg)
	h.Max = 1
	rels, err := h.Run(ReleaseName)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the Helm release %s: %w", ReleaseName, err)
	}
	if len(rels) == 0 {
		return "", nil
	}
	return rels[len(rels)-1].Info.Status.String(), nil
}

// Install installs MarbleRun into the cluster's namespace.
func Install(ctx context.Context, c *Cluster, o Options) error {
	out := o.progress()
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	ns := c.Namespace()

	ch, err := LoadChart(o.ChartPath)
	if err != nil {
		return err
	}
	if err := checkVersion(ch, o); err != nil {
		return err
	}
	cs, err := c.Clientset(ctx)
	if err != nil {
		return err
	}
	cfg, err := helmConfig(c)
	if err != nil {
		return err
	}
	if st, err := existingRelease(cfg); err != nil {
		return err
	} else if st != "" {
		return withNext(fmt.Errorf("MarbleRun is already installed in namespace %s (Helm release %s, %s)", ns, ReleaseName, st),
			fmt.Sprintf("Run 'marblerun uninstall -n %s' first, or install into another namespace with -n.", ns))
	}

	s := Settings{
		Domains:          o.Domains,
		Simulation:       o.Simulation,
		ResourceKey:      o.ResourceKey,
		DCAPQPL:          o.DCAPQPL,
		DCAPPCCSURL:      o.DCAPPCCSURL,
		DCAPSecureCert:   o.DCAPSecureCert,
		MeshServerPort:   o.MeshServerPort,
		ClientServerPort: o.ClientServerPort,
		Injector:         !o.DisableAutoInjection,
		Distributed:      o.DistributedDeployment,
		Replicas:         o.Replicas,
	}
	if s.ResourceKey == "" {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return withNext(fmt.Errorf("listing the nodes to find the SGX device plugin: %w", err),
				"Name the SGX resource key with --resource-key, or use a kubeconfig whose user may list nodes.")
		}
		s.ResourceKey = DetectResourceKey(nodes.Items)
		fmt.Fprintf(out, "SGX resource key: %s\n", s.ResourceKey)
	}
	// The values are checked before anything is written to the cluster.
	if _, err := Values(withDummyCA(s), ch.Values); err != nil {
		return err
	}

	createdNS, err := ensureNamespace(ctx, cs, ns)
	if err != nil {
		return err
	}
	madeSecrets := false
	cleanup := func(cause error) error {
		if !madeSecrets {
			return cause
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := deleteWebhookSecrets(cctx, cs, ns); err != nil {
			return fmt.Errorf("%w (and cleaning up: %v)", cause, err) //nolint:errorlint // the cause is the error; the failed clean-up is only reported
		}
		return cause
	}
	if createdNS {
		fmt.Fprintf(out, "Created namespace %s\n", ns)
	}

	if s.Injector {
		s.CertManager, err = certManagerPresent(cs)
		if err != nil {
			return err
		}
		if s.CertManager {
			fmt.Fprintln(out, "cert-manager found: it will issue the marble-injector's certificate")
		} else {
			madeSecrets = true
			s.CABundle, err = ensureWebhookCerts(ctx, cs, ns, now())
			if err != nil {
				return cleanup(err)
			}
			fmt.Fprintf(out, "Created the marble-injector's certificate (Secrets %s, %s)\n", WebhookCASecret, WebhookCertsSecret)
		}
	}
	vals, err := Values(s, ch.Values)
	if err != nil {
		return cleanup(err)
	}

	inst := action.NewInstall(cfg)
	inst.ReleaseName = ReleaseName
	inst.Namespace = ns
	inst.CreateNamespace = true
	inst.Timeout = helmTimeout
	fmt.Fprintf(out, "Installing chart %s %s as release %s in namespace %s\n", ch.Metadata.Name, ch.Metadata.Version, ReleaseName, ns)
	if _, err := inst.RunWithContext(ctx, ch, vals); err != nil {
		return cleanup(withNext(fmt.Errorf("installing the Helm chart: %w", err),
			fmt.Sprintf("Fix the cause, then run 'marblerun uninstall -n %s' to remove what is left and install again.", ns)))
	}
	if o.Wait {
		w := Waiter{Clientset: cs, Namespace: ns, Out: out, Interval: o.PollInterval, Heartbeat: o.heartbeat()}
		fmt.Fprintf(out, "Waiting up to %s for the Deployments %s and %s in namespace %s to be ready\n",
			o.WaitTimeout, InjectorDeployment, CoordinatorDeployment, ns)
		if err := w.Wait(ctx, o.WaitTimeout); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "MarbleRun installed successfully")
	return nil
}

// withDummyCA returns s with a placeholder CA bundle, to check the other
// values before the CA exists.
func withDummyCA(s Settings) Settings {
	if s.Injector && !s.CertManager {
		s.CABundle = []byte("-")
	}
	return s
}

// checkVersion refuses a --version that the chart does not have.
func checkVersion(ch *chart.Chart, o Options) error {
	if o.Version == "" || o.Version == ch.Metadata.Version || "v"+ch.Metadata.Version == o.Version {
		return nil
	}
	if o.ChartPath == "" {
		return withNext(fmt.Errorf("this marblerun has chart version %s built in, not %s", ch.Metadata.Version, o.Version),
			"Leave out --version, or use the marblerun CLI of the version you want, or give that chart with --marblerun-chart-path.")
	}
	return withNext(fmt.Errorf("the chart at %s has version %s, not %s", o.ChartPath, ch.Metadata.Version, o.Version),
		"Leave out --version, or give the chart of that version with --marblerun-chart-path.")
}

// ensureNamespace creates ns unless it exists and reports whether it did.
func ensureNamespace(ctx context.Context, cs kubernetes.Interface, ns string) (bool, error) {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsAlreadyExists(err):
		return false, nil
	}
	return false, fmt.Errorf("creating namespace %s: %w", ns, err)
}

// certManagerPresent reports whether the cluster serves cert-manager's
// Issuer and Certificate kinds.
func certManagerPresent(cs kubernetes.Interface) (bool, error) {
	list, err := cs.Discovery().ServerResourcesForGroupVersion("cert-manager.io/v1")
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking for the cert-manager API: %w", err)
	}
	var issuer, cert bool
	for _, r := range list.APIResources {
		switch r.Kind {
		case "Issuer":
			issuer = true
		case "Certificate":
			cert = true
		}
	}
	return issuer && cert, nil
}

// Uninstall removes the Helm release and the webhook Secrets from the
// cluster's namespace. It reports whether there was a release.
func Uninstall(ctx context.Context, c *Cluster, progress io.Writer) (bool, error) {
	if progress == nil {
		progress = io.Discard
	}
	ns := c.Namespace()
	cs, err := c.Clientset(ctx)
	if err != nil {
		return false, err
	}
	cfg, err := helmConfig(c)
	if err != nil {
		return false, err
	}
	st, err := existingRelease(cfg)
	if err != nil {
		return false, err
	}
	if st != "" {
		u := action.NewUninstall(cfg)
		u.Timeout = helmTimeout
		if _, err := u.Run(ReleaseName); err != nil {
			return true, withNext(fmt.Errorf("uninstalling the Helm release %s from namespace %s: %w", ReleaseName, ns, err),
				"Run the uninstallation again; if it keeps failing, remove the objects with kubectl.")
		}
		fmt.Fprintf(progress, "Removed the Helm release %s from namespace %s\n", ReleaseName, ns)
	}
	if err := deleteWebhookSecrets(ctx, cs, ns); err != nil {
		return st != "", withNext(err, "Run the uninstallation again, or delete the Secrets with kubectl.")
	}
	return st != "", nil
}
