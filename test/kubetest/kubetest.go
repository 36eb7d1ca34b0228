// Package kubetest starts a real Kubernetes control plane for tests: etcd and
// kube-apiserver through controller-runtime's envtest and, on request,
// kube-controller-manager and kube-scheduler, all on 127.0.0.1 and stopped
// when the test ends.
//
// The binaries are built from the Go module proxy by hack/kube (once per
// machine, several minutes) and cached under
// $(os.UserCacheDir)/marblemesh/kube/<version>/bin. Run
// `go run ./hack/kube/build` beforehand to see that build's progress.
//
// Nothing here runs containers: Pods are stored and scheduled, never run.
package kubetest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/marblemesh/marblemesh/hack/kube/kubebin"
)

const (
	// serviceAccountIssuer is the issuer of service-account tokens.
	serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
	// startTimeout bounds the start of each control-plane process.
	startTimeout = 60 * time.Second
	// stopTimeout bounds the graceful stop of each process before SIGKILL.
	stopTimeout = 20 * time.Second
	// controllersTimeout bounds the wait for the controller manager's first
	// result, the default ServiceAccount.
	controllersTimeout = 90 * time.Second
	// logTail is how many lines of each process log a failed test shows.
	logTail = 40
)

// Env is a running control plane.
type Env struct {
	// Config reaches the API server as an admin (group system:masters).
	Config *rest.Config
	// Clientset is a client for Config.
	Clientset *kubernetes.Clientset
	// Kubeconfig is the path of a kubeconfig file for Config, for tools that
	// read KUBECONFIG.
	Kubeconfig string
	// BinDir holds etcd, kube-apiserver, kubectl, kube-controller-manager
	// and kube-scheduler.
	BinDir string
	// Dir is the folder of the control plane's certificates, data and logs.
	Dir string

	te      *envtest.Environment
	certDir string
	apiLog  *logFile
	// mu guards apiDown and guards, which StopAPIServer and
	// StartAPIServer change.
	mu      sync.Mutex
	apiDown bool
	guards  []func()
}

type options struct {
	controllers bool
	serviceCIDR string
}

// Option configures Start.
type Option func(*options)

// WithControllers also starts kube-controller-manager and kube-scheduler, so
// that Deployments get ReplicaSets and Pods, Pods get scheduled (and stay
// Pending without a Node), namespaces get their `default` ServiceAccount and
// `kube-root-ca.crt` ConfigMap, and deleted namespaces go away. Start then
// returns once the `default` ServiceAccount of namespace default exists.
func WithControllers() Option {
	return func(o *options) { o.controllers = true }
}

// WithServiceCIDR sets the range the API server allocates Service cluster
// IPs from (default 10.0.0.0/24). Its first address is the `kubernetes`
// Service's, which the API server's certificate names. A loopback range such as
// 127.20.0.0/16 lets a test stand in for kube-proxy: it can listen on each
// Service's cluster IP, and the API server reaches webhooks through it.
func WithServiceCIDR(cidr string) Option {
	return func(o *options) { o.serviceCIDR = cidr }
}

// BinDir returns the folder holding the control-plane binaries, building them
// first (several minutes, progress on standard error) when they are missing
// or older than the wrapper modules in hack/kube. Concurrent callers, also in
// other processes, wait for one build.
func BinDir(ctx context.Context) (string, error) {
	return kubebin.Ensure(ctx, os.Stderr)
}

// Start starts etcd and kube-apiserver (and, WithControllers, the controller
// manager and the scheduler) and stops them when t ends. It skips the test in
// -short mode and fails it when the binaries can neither be found nor built.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	if testing.Testing() && testing.Short() {
		t.Skip("kubetest: skipping a test that runs a Kubernetes control plane in -short mode")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}

	bin, err := BinDir(t.Context())
	if err != nil {
		t.Fatalf("kubetest: the Kubernetes test binaries are missing and could not be built "+
			"(building them needs the Go module proxy; try `go run ./hack/kube/build`): %v", err)
	}

	dir := t.TempDir()
	e := &Env{BinDir: bin, Dir: dir}
	certDir := filepath.Join(dir, "apiserver")
	dataDir := filepath.Join(dir, "etcd")
	for _, d := range []string{certDir, dataDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatalf("kubetest: %v", err)
		}
	}
	serviceCIDR := o.serviceCIDR
	if serviceCIDR == "" {
		serviceCIDR = defaultServiceCIDR
	}
	caPEM, err := writeAPIServerCerts(certDir, serviceCIDR)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	etcdLog := newLogFile(t, filepath.Join(dir, "etcd.log"))
	apiLog := newLogFile(t, filepath.Join(dir, "kube-apiserver.log"))

	// envtest logs through controller-runtime's global logger, which
	// complains on stdout (into benchmark output) when nothing was set.
	ctrllog.SetLogger(logr.Discard())
	notExisting := false
	te := &envtest.Environment{
		UseExistingCluster:       &notExisting,
		BinaryAssetsDirectory:    bin,
		ControlPlaneStartTimeout: startTimeout,
		ControlPlaneStopTimeout:  stopTimeout,
		ControlPlane: envtest.ControlPlane{
			Etcd: &envtest.Etcd{
				Path:    filepath.Join(bin, "etcd"),
				DataDir: dataDir,
				Out:     etcdLog,
				Err:     etcdLog,
			},
			APIServer: &envtest.APIServer{
				Path:          filepath.Join(bin, "kube-apiserver"),
				CertDir:       certDir,
				SecureServing: envtest.SecureServing{ListenAddr: envtest.ListenAddr{Address: "127.0.0.1"}},
				Out:           apiLog,
				Err:           apiLog,
			},
			KubectlPath: filepath.Join(bin, "kubectl"),
		},
	}
	te.ControlPlane.APIServer.CA = caPEM
	te.ControlPlane.Etcd.Configure().Set("unsafe-no-fsync", "true")
	api := te.ControlPlane.APIServer.Configure()
	api.Set("bind-address", "127.0.0.1")
	api.Set("advertise-address", "127.0.0.1")
	api.Set("endpoint-reconciler-type", "none")
	api.Set("service-account-issuer", serviceAccountIssuer)
	api.Set("enable-admission-plugins", "MutatingAdmissionWebhook,ValidatingAdmissionWebhook")
	api.Set("service-cluster-ip-range", serviceCIDR)
	if o.controllers {
		// The controller manager creates the ServiceAccounts that this
		// plugin requires of every Pod.
		api.Disable("disable-admission-plugins")
	} else {
		api.Set("disable-admission-plugins", "ServiceAccount")
	}

	start := time.Now()
	cfg, err := te.Start()
	if err != nil {
		// Start stops what it started when the processes fail to come up,
		// but not when a later step fails.
		stopErr := te.Stop()
		showLogs(t, etcdLog, apiLog)
		t.Fatalf("kubetest: starting etcd and kube-apiserver: %v (stop: %v)", err, stopErr)
	}
	e.te, e.certDir, e.apiLog = te, certDir, apiLog
	t.Cleanup(func() {
		if err := te.Stop(); err != nil {
			t.Errorf("kubetest: stopping etcd and kube-apiserver: %v", err)
		}
		e.mu.Lock()
		for _, stop := range e.guards {
			stop()
		}
		e.mu.Unlock()
		if t.Failed() {
			showLogs(t, etcdLog, apiLog)
		}
	})
	e.guards = append(e.guards, guardOrphans(t, "--data-dir="+dataDir, "--cert-dir="+certDir))
	if !strings.HasPrefix(cfg.Host, "https://127.0.0.1:") {
		t.Fatalf("kubetest: the API server serves %s, not 127.0.0.1", cfg.Host)
	}
	e.Config = cfg
	e.Clientset, err = kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	e.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, te.KubeConfig, 0o600); err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Logf("kubetest: etcd and kube-apiserver ready at %s in %s", cfg.Host, time.Since(start).Round(time.Millisecond))

	if o.controllers {
		start := time.Now()
		caFile := filepath.Join(dir, "apiserver-ca.crt")
		if err := os.WriteFile(caFile, te.ControlPlane.APIServer.CA, 0o600); err != nil {
			t.Fatalf("kubetest: %v", err)
		}
		saKey := filepath.Join(certDir, "sa-signer.key") // written by envtest
		if _, err := os.Stat(saKey); err != nil {
			t.Fatalf("kubetest: the service-account signing key: %v", err)
		}
		kcm := startProcess(t, filepath.Join(bin, "kube-controller-manager"), filepath.Join(dir, "kube-controller-manager.log"),
			"--kubeconfig="+e.Kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=0",
			"--leader-elect=false",
			"--service-account-private-key-file="+saKey,
			"--root-ca-file="+caFile,
			"--use-service-account-credentials=false",
		)
		sched := startProcess(t, filepath.Join(bin, "kube-scheduler"), filepath.Join(dir, "kube-scheduler.log"),
			"--kubeconfig="+e.Kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=0",
			"--leader-elect=false",
		)
		if err := waitForDefaultServiceAccount(t.Context(), e.Clientset, kcm, sched); err != nil {
			showLogs(t, kcm.log, sched.log)
			t.Fatalf("kubetest: controllers: %v", err)
		}
		t.Logf("kubetest: kube-controller-manager and kube-scheduler ready in %s", time.Since(start).Round(time.Millisecond))
	}
	return e
}

// waitForDefaultServiceAccount waits until the controller manager has created
// the default ServiceAccount of namespace default, or one of the processes has
// exited.
func waitForDefaultServiceAccount(ctx context.Context, cs kubernetes.Interface, procs ...*process) error {
	ctx, cancel := context.WithTimeout(ctx, controllersTimeout)
	defer cancel()
	var last error
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, p := range procs {
			if err := p.exited(); err != nil {
				return false, err
			}
		}
		_, err := cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		last = err
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("no ServiceAccount default/default after %s: %w (last: %w)", controllersTimeout, err, last)
	}
	return nil
}

// Namespace creates a namespace with a generated name for the test and
// returns its name. It is deleted when the test ends.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns, err := e.Clientset.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: creating a namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := e.Clientset.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("kubetest: deleting namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// StopAPIServer stops the kube-apiserver and leaves etcd running, so that
// a test sees its clients lose the API server. On Linux the API server is
// killed (SIGKILL, as when its node fails): a graceful stop would wait for
// its clients' watches to end. StartAPIServer starts it again. The test
// fails when the API server is stopped already or does not stop.
func (e *Env) StopAPIServer(t testing.TB) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.apiDown {
		t.Fatalf("kubetest: the API server is stopped already")
	}
	if err := killChildren("--cert-dir=" + e.certDir); err != nil {
		t.Fatalf("kubetest: killing kube-apiserver: %v", err)
	}
	// Stop waits for the exit of the killed process (elsewhere, it stops
	// it with SIGTERM).
	if err := e.te.ControlPlane.APIServer.Stop(); err != nil {
		t.Fatalf("kubetest: stopping kube-apiserver: %v", err)
	}
	e.apiDown = true
}

// StartAPIServer starts the kube-apiserver that StopAPIServer stopped, on
// the same etcd, address, port and certificates, so that clients of
// Config reconnect with the credentials they have. It returns once the
// API server answers its health check. The test fails when the API server
// is running or does not start.
func (e *Env) StartAPIServer(t testing.TB) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.apiDown {
		t.Fatalf("kubetest: the API server is running already")
	}
	start := time.Now()
	if err := e.te.ControlPlane.APIServer.Start(); err != nil {
		showLogs(t, e.apiLog)
		t.Fatalf("kubetest: starting kube-apiserver again: %v", err)
	}
	e.apiDown = false
	e.guards = append(e.guards, guardOrphans(t, "--cert-dir="+e.certDir))
	serving := e.te.ControlPlane.APIServer.SecureServing
	want, err := url.Parse(e.Config.Host)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	if got := net.JoinHostPort(serving.Address, serving.Port); got != want.Host {
		t.Fatalf("kubetest: the API server came back at %s, not at %s", got, want.Host)
	}
	t.Logf("kubetest: kube-apiserver ready again at %s in %s", e.Config.Host, time.Since(start).Round(time.Millisecond))
}
