package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
