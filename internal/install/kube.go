package install

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is the connection to a cluster: its kubeconfig and the
// namespace of the installation. It serves as Helm's RESTClientGetter.
type Cluster struct {
	loader    clientcmd.ClientConfig
	namespace string
}

// NewCluster returns the cluster of kubeconfig, or when kubeconfig is
// empty, of $KUBECONFIG or ~/.kube/config, with ns as the namespace of the
// installation. Nothing is contacted yet.
func NewCluster(kubeconfig, ns string) *Cluster {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{}
	overrides.Context.Namespace = ns
	return &Cluster{
		loader:    clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides),
		namespace: ns,
	}
}

// Namespace is the namespace of the installation.
func (c *Cluster) Namespace() string { return c.namespace }

// ToRESTConfig returns the client configuration of the kubeconfig.
func (c *Cluster) ToRESTConfig() (*rest.Config, error) {
	cfg, err := c.loader.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, withNext(errors.New("no Kubernetes cluster is configured"),
				"Point KUBECONFIG or --kubeconfig at the kubeconfig file of your cluster, or create ~/.kube/config.")
		}
		return nil, withNext(fmt.Errorf("reading the kubeconfig: %w", err),
			"Check the kubeconfig file (KUBECONFIG, --kubeconfig or ~/.kube/config) and its current context.")
	}
	return cfg, nil
}

// ToDiscoveryClient returns a discovery client that caches in memory only.
func (c *Cluster) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	cfg, err := c.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return memory.NewMemCacheClient(dc), nil
}

// ToRESTMapper returns a REST mapper backed by discovery.
func (c *Cluster) ToRESTMapper() (meta.RESTMapper, error) {
	dc, err := c.ToDiscoveryClient()
	if err != nil {
		return nil, err
	}
	m := restmapper.NewDeferredDiscoveryRESTMapper(dc)
	return restmapper.NewShortcutExpander(m, dc, nil), nil
}

// ToRawKubeConfigLoader returns the kubeconfig loader.
func (c *Cluster) ToRawKubeConfigLoader() clientcmd.ClientConfig { return c.loader }

// Clientset returns a client of the cluster and checks that the API server
// answers.
func (c *Cluster) Clientset(ctx context.Context) (kubernetes.Interface, error) {
	cfg, err := c.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("making a Kubernetes client: %w", err)
	}
	// A cheap authenticated request: the namespace may or may not exist.
	_, err = cs.CoreV1().Namespaces().Get(ctx, c.namespace, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, unreachable(cfg.Host, err)
	}
	return cs, nil
}

// unreachable explains a failed first request to the API server.
func unreachable(host string, err error) error {
	switch {
	case apierrors.IsUnauthorized(err):
		return withNext(fmt.Errorf("the Kubernetes API server at %s does not accept the kubeconfig's credentials: %w", host, err),
			"Renew the credentials of your kubeconfig's current context.")
	case apierrors.IsForbidden(err):
		return withNext(fmt.Errorf("the Kubernetes API server at %s refuses access: %w", host, err),
			"Use a kubeconfig context whose user may manage namespaces, Deployments, Secrets and webhook configurations.")
	}
	return withNext(fmt.Errorf("cannot reach the Kubernetes API server at %s: %w", host, err),
		"Check that the cluster runs and that KUBECONFIG (or --kubeconfig, or ~/.kube/config) selects it.")
}
