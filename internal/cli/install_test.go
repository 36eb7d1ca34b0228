package cli

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/test/kubetest"
)

// TestInstallCommands installs with the CLI into a real API server,
// checks, and uninstalls. Without a controller manager the Deployments
// get no Pods, so check runs into its timeout.
func TestInstallCommands(t *testing.T) {
	kube := kubetest.Start(t)
	e := newEnv(t)
	ns := kube.Namespace(t)
	kc := []string{"--kubeconfig", kube.Kubeconfig, "-n", ns}
	e.mask(ns, "<ns>")

	r := e.ok(append([]string{"install", "--simulation", "--domain", "mr.example.com", "--resource-key", "sgx.intel.com/epc"}, kc...)...)
	e.golden("install-simulation", r.stdout)
	if !strings.Contains(r.stderr, "simulation mode") {
		t.Errorf("no simulation warning on stderr:\n%s", r.stderr)
	}
	d, err := kube.Clientset.AppsV1().Deployments(ns).Get(t.Context(), "marblerun-coordinator", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var dns string
	for _, v := range d.Spec.Template.Spec.Containers[0].Env {
		if v.Name == "EDG_COORDINATOR_DNS_NAMES" {
			dns = v.Value
		}
	}
	if !strings.HasPrefix(dns, "mr.example.com,") {
		t.Errorf("EDG_COORDINATOR_DNS_NAMES=%q lacks --domain", dns)
	}

	if r := e.ok(append([]string{"version", "--coordinator"}, kc...)...); !strings.HasSuffix(r.stdout, "\nCoordinator version: v0.1.0\n") {
		t.Errorf("version --coordinator:\n%s", r.stdout)
	}
	e.fail([]string{"already installed in namespace " + ns, "marblerun uninstall -n " + ns}, append([]string{"install", "--simulation"}, kc...)...)
	e.fail([]string{"marble-injector is not ready after 1s", "--timeout"}, append([]string{"check", "--timeout", "1"}, kc...)...)

	r = e.ok(append([]string{"uninstall"}, kc...)...)
	e.golden("uninstall", r.stdout)
	r = e.ok(append([]string{"uninstall"}, kc...)...)
	if !strings.Contains(r.stdout, "was not installed in namespace "+ns) {
		t.Errorf("second uninstall:\n%s", r.stdout)
	}
	if r := e.ok(append([]string{"version", "--coordinator"}, kc...)...); !strings.HasSuffix(r.stdout, "\nCoordinator version: no MarbleRun Coordinator in namespace "+ns+"\n") {
		t.Errorf("version --coordinator after uninstall:\n%s", r.stdout)
	}
	e.fail([]string{"MarbleRun is not installed in namespace " + ns, "marblerun install"}, append([]string{"check", "--timeout", "1"}, kc...)...)

	t.Run("distributed", func(t *testing.T) {
		ns := kube.Namespace(t)
		kc := []string{"--kubeconfig", kube.Kubeconfig, "-n", ns}
		e := e.sub(t)
		e.ok(append([]string{"install", "--simulation", "--distributed-deployment", "--replicas", "3", "--resource-key", "sgx.intel.com/epc"}, kc...)...)
		d, err := kube.Clientset.AppsV1().Deployments(ns).Get(t.Context(), "marblerun-coordinator", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
			t.Errorf("--replicas 3: the Deployment has %v replicas", d.Spec.Replicas)
		}
		if _, err := kube.Clientset.PolicyV1().PodDisruptionBudgets(ns).Get(t.Context(), "marblerun-coordinator", metav1.GetOptions{}); err != nil {
			t.Errorf("the Coordinator's PodDisruptionBudget: %v", err)
		}
		if _, err := kube.Clientset.CoreV1().Services(ns).Get(t.Context(), "coordinator-key-api", metav1.GetOptions{}); err != nil {
			t.Errorf("the key API Service: %v", err)
		}
		env := map[string]string{}
		for _, v := range d.Spec.Template.Spec.Containers[0].Env {
			env[v.Name] = v.Value
		}
		if env["EDG_DISTRIBUTED_COORDINATOR"] != "1" || env["EDG_K8S_STATE_NAME"] != "marblerun-state" || env["EDG_K8S_NAMESPACE"] != ns {
			t.Errorf("the Coordinator's environment %v lacks the distributed settings", env)
		}
		if _, err := kube.Clientset.RbacV1().Roles(ns).Get(t.Context(), "marblerun-coordinator", metav1.GetOptions{}); err != nil {
			t.Errorf("the Coordinator's Role: %v", err)
		}
		if pvcs, err := kube.Clientset.CoreV1().PersistentVolumeClaims(ns).List(t.Context(), metav1.ListOptions{}); err != nil || len(pvcs.Items) != 0 {
			t.Errorf("claims of a distributed installation: %v %v", pvcs, err)
		}
		// The state a Coordinator would have written (its Secrets and KEK
		// ConfigMap), and a Secret and a ConfigMap of someone else's.
		stateLabels := map[string]string{"app.kubernetes.io/managed-by": "marblemesh", "marblemesh.io/state": "marblerun-state"}
		for name, labels := range map[string]map[string]string{"marblerun-sealed-kek": stateLabels, "unrelated": {"app.kubernetes.io/managed-by": "marblemesh"}} {
			_, err := kube.Clientset.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
		}
		for name, labels := range map[string]map[string]string{
			"marblerun-state":         {"app.kubernetes.io/managed-by": "marblemesh", "marblemesh.io/state": "marblerun-state", "marblemesh.io/object": "head"},
			"marblerun-state-1-abc-0": {"app.kubernetes.io/managed-by": "marblemesh", "marblemesh.io/state": "marblerun-state", "marblemesh.io/object": "chunk"},
			"unrelated":               {"marblemesh.io/state": "marblerun-state"},
		} {
			_, err := kube.Clientset.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
		}
		r := e.ok(append([]string{"uninstall"}, kc...)...)
		for _, want := range []string{"Kept the Coordinator's state: 2 Secrets and 1 ConfigMap labelled marblemesh.io/state=marblerun-state",
			"marblerun uninstall -n " + ns + " --delete-state", "MarbleRun uninstalled successfully"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("uninstall output lacks %q:\n%s", want, r.stdout)
			}
		}
		if _, err := kube.Clientset.RbacV1().Roles(ns).Get(t.Context(), "marblerun-coordinator", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the Coordinator's Role after uninstall: %v", err)
		}
		r = e.ok(append([]string{"uninstall", "--delete-state"}, kc...)...)
		if !strings.Contains(r.stdout, "Deleted the Coordinator's state: 2 Secrets and 1 ConfigMap (label marblemesh.io/state)") {
			t.Errorf("uninstall --delete-state output:\n%s", r.stdout)
		}
		if _, err := kube.Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), "marblerun-sealed-kek", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the KEK ConfigMap after uninstall --delete-state: %v", err)
		}
		if _, err := kube.Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), "unrelated", metav1.GetOptions{}); err != nil {
			t.Errorf("an unrelated ConfigMap after uninstall --delete-state: %v", err)
		}
		list, err := kube.Clientset.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, s := range list.Items {
			left = append(left, s.Name)
		}
		if !slices.Equal(left, []string{"unrelated"}) {
			t.Errorf("Secrets left after uninstall --delete-state: %v, want only the unrelated one", left)
		}
		r = e.ok(append([]string{"uninstall"}, kc...)...)
		if strings.Contains(r.stdout, "Kept") {
			t.Errorf("uninstall without state:\n%s", r.stdout)
		}
	})
}

func TestKubeCommandsWithoutCluster(t *testing.T) {
	e := newEnv(t)
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	t.Setenv("HOME", t.TempDir())
	for _, cmd := range []string{"install", "uninstall", "check", "precheck"} {
		t.Run(cmd, func(t *testing.T) {
			e.sub(t).fail([]string{"no Kubernetes cluster is configured", "Point KUBECONFIG or --kubeconfig"}, cmd)
		})
	}
}

func TestInstallVersionFlag(t *testing.T) {
	e := newEnv(t)
	e.fail([]string{"built in, not 0.0.7", "--marblerun-chart-path"}, "install", "--version", "0.0.7", "--kubeconfig", filepath.Join(t.TempDir(), "unused"))
	if _, err := os.Stat(filepath.Join(e.dir, "config")); err == nil {
		t.Error("install wrote to the config folder")
	}
}

// TestInstallReplicasFlag: --replicas is refused without
// --distributed-deployment and outside 1..15, before any cluster is
// contacted.
func TestInstallReplicasFlag(t *testing.T) {
	e := newEnv(t)
	kc := []string{"--kubeconfig", filepath.Join(t.TempDir(), "unused")}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--replicas", "3"}, []string{"--replicas 3 needs --distributed-deployment", "Add --distributed-deployment"}},
		{[]string{"--replicas", "1"}, []string{"--replicas 1 needs --distributed-deployment"}},
		{[]string{"--replicas", "0", "--distributed-deployment"}, []string{"--replicas 0: the Coordinator runs 1 to 15 replicas", "from 1 to 15"}},
		{[]string{"--replicas", "16", "--distributed-deployment"}, []string{"--replicas 16: the Coordinator runs 1 to 15 replicas"}},
		{[]string{"--replicas", "-2", "--distributed-deployment"}, []string{"--replicas -2: the Coordinator runs 1 to 15 replicas"}},
		{[]string{"--replicas", "three", "--distributed-deployment"}, []string{`invalid argument "three" for "--replicas"`}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			e.sub(t).fail(tc.want, append(append([]string{"install"}, tc.args...), kc...)...)
		})
	}
	// Within bounds the flags pass, and the cluster is asked for next.
	e.fail([]string{"kubeconfig"}, append([]string{"install", "--distributed-deployment", "--replicas", "15"}, kc...)...)
}
