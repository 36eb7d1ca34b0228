package kubetest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
)

// poll runs cond every 100ms until it returns true or 60s have passed.
func poll(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func TestStart(t *testing.T) {
	e := Start(t)
	ctx := t.Context()
	cs := e.Clientset

	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.37.1" || v.Major != "1" || v.Minor != "37" {
		t.Errorf("server version %+v, want v1.37.1", v)
	}

	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().ConfigMaps(ns.Name).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "settings"},
		Data:       map[string]string{"mode": "simulation"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gotNS, err := cs.CoreV1().Namespaces().Get(ctx, "smoke", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gotNS.Labels[corev1.LabelMetadataName] != "smoke" {
		t.Errorf("namespace labels %v", gotNS.Labels)
	}
	cm, err := cs.CoreV1().ConfigMaps("smoke").Get(ctx, "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["mode"] != "simulation" {
		t.Errorf("configmap data %v", cm.Data)
	}

	// Without the controller manager, Pods need no ServiceAccount.
	_, err = cs.CoreV1().Pods("smoke").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Errorf("creating a Pod without controllers: %v", err)
	}

	// The serving certificate names the `kubernetes` Service's cluster IP,
	// the first of the Service range, for in-cluster clients.
	var kube *corev1.Service
	poll(t, "the kubernetes Service", func(ctx context.Context) (bool, error) {
		kube, err = cs.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
		return err == nil, nil
	})
	if kube.Spec.ClusterIP != "10.0.0.1" {
		t.Errorf("the kubernetes Service has cluster IP %s, want 10.0.0.1", kube.Spec.ClusterIP)
	}
	apiURL, err := url.Parse(e.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(e.Config.CAData) {
		t.Fatal("the client configuration has no CA")
	}
	for _, name := range []string{kube.Spec.ClusterIP, "127.0.0.1", "localhost"} {
		conn, err := tls.Dial("tcp", apiURL.Host, &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Errorf("TLS to the API server as %s: %v", name, err)
			continue
		}
		conn.Close()
	}
	if _, err := tls.Dial("tcp", apiURL.Host, &tls.Config{RootCAs: roots, ServerName: "10.0.0.2", MinVersion: tls.VersionTLS12}); err == nil {
		t.Error("the API server's certificate also verifies for 10.0.0.2")
	}

	// The kubeconfig file reaches the same server, also for kubectl.
	cfg, err := clientcmd.BuildConfigFromFlags("", e.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSuffix(cfg.Host, "/") != strings.TrimSuffix(e.Config.Host, "/") {
		t.Errorf("kubeconfig host %s, want %s", cfg.Host, e.Config.Host)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(e.BinDir, "kubectl"), "get", "configmap", "settings", "-n", "smoke", "-o", "jsonpath={.data.mode}")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.Kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "simulation" {
		t.Errorf("kubectl get configmap: %q, %v", out, err)
	}
}

func TestStartWithControllers(t *testing.T) {
	e := Start(t, WithControllers())
	ctx := t.Context()
	cs := e.Clientset
	ns := e.Namespace(t)

	// The service-account controller gives every new namespace its default
	// ServiceAccount; the root-CA publisher its kube-root-ca.crt.
	poll(t, "the default ServiceAccount in "+ns, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	poll(t, "kube-root-ca.crt in "+ns, func(ctx context.Context) (bool, error) {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil && strings.Contains(cm.Data["ca.crt"], "BEGIN CERTIFICATE"), nil
	})

	replicas := int32(2)
	sel := map[string]string{"app": "marble"}
	_, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "marble"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "marble", Image: "example.invalid/marble:1"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, "a ReplicaSet of the Deployment", func(ctx context.Context) (bool, error) {
		rs, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.FormatLabels(sel)})
		return err == nil && len(rs.Items) == 1 && len(rs.Items[0].OwnerReferences) == 1 &&
			rs.Items[0].OwnerReferences[0].Name == "marble", nil
	})
	var pods []corev1.Pod
	poll(t, "2 Pods of the Deployment", func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.FormatLabels(sel)})
		if err != nil {
			return false, nil
		}
		pods = list.Items
		return len(pods) == 2, nil
	})
	for _, p := range pods {
		if p.Spec.ServiceAccountName != "default" {
			t.Errorf("pod %s service account %q, want default", p.Name, p.Spec.ServiceAccountName)
		}
		if p.Status.Phase != corev1.PodPending {
			t.Errorf("pod %s phase %s, want Pending (no kubelet)", p.Name, p.Status.Phase)
		}
	}
	// With no Node, the scheduler marks the Pods unschedulable.
	poll(t, "the scheduler to mark a Pod unschedulable", func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pods[0].Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return true, nil
			}
		}
		return false, nil
	})
}

func TestStartInShortModeSkips(t *testing.T) {
	if !testing.Short() {
		t.Skip("checks the -short behaviour; run with -short")
	}
	ran := false
	t.Run("inner", func(t *testing.T) {
		Start(t)
		ran = true
	})
	if ran {
		t.Error("Start did not skip in -short mode")
	}
}

func TestKubernetesServiceIP(t *testing.T) {
	for cidr, want := range map[string]string{
		"10.0.0.0/24":   "10.0.0.1",
		"127.20.0.0/16": "127.20.0.1",
		"127.20.5.7/16": "127.20.0.1",
		"fd00:10::/108": "fd00:10::1",
		"not-a-cidr":    "",
		"10.0.0.255/32": "",
	} {
		ip, err := kubernetesServiceIP(cidr)
		if want == "" {
			if err == nil {
				t.Errorf("%s: got %s, want an error", cidr, ip)
			}
			continue
		}
		if err != nil || ip.String() != want {
			t.Errorf("%s: got %v, %v; want %s", cidr, ip, err, want)
		}
	}
}

// TestStartCommand starts a control plane as a program that is not a test
// does, and checks that it serves and that stop removes it.
func TestStartCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kubernetes control plane")
	}
	e, stop, err := StartCommand()
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	if _, err := e.Clientset.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "command"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stop()
	stopped = true
	if _, err := e.Clientset.CoreV1().Namespaces().Get(t.Context(), "command", metav1.GetOptions{}); err == nil {
		t.Error("the API server still answers after stop")
	}
	if _, err := os.Stat(e.Dir); !os.IsNotExist(err) {
		t.Errorf("the control plane's folder %s is left after stop (stat: %v)", e.Dir, err)
	}
}

// TestStopAndStartAPIServer stops the API server and starts it again: in
// between, requests of the Env's client fail; afterwards the same client,
// with the same address and credentials, reads what was written before
// (etcd kept running) and writes again.
func TestStopAndStartAPIServer(t *testing.T) {
	e := Start(t)
	ns := e.Namespace(t)
	cms := e.Clientset.CoreV1().ConfigMaps(ns)
	if _, err := cms.Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "before"},
		Data:       map[string]string{"k": "v"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	e.StopAPIServer(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	_, err := cms.Get(ctx, "before", metav1.GetOptions{})
	cancel()
	if err == nil {
		t.Fatal("a read while the API server is stopped succeeded")
	}

	e.StartAPIServer(t)
	got, err := cms.Get(t.Context(), "before", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading after the restart: %v", err)
	}
	if got.Data["k"] != "v" {
		t.Errorf("after the restart: data %v, want k=v", got.Data)
	}
	if _, err := cms.Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after"}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("writing after the restart: %v", err)
	}
}
