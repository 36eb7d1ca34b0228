//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/marblemesh/marblemesh/charts"

	"github.com/marblemesh/marblemesh/internal/install"
	"github.com/marblemesh/marblemesh/test/kubetest/nodeagent"
)

const (
	// coordReplicas is how many Coordinators the distributed installation
	// runs.
	coordReplicas = 3
	coordSelector = "edgeless.systems/control-plane-component=coordinator"
	// distributedClients is how many client marbles start while a
	// Coordinator is killed.
	distributedClients = 3
)

// installDistributed installs with --distributed-deployment and waits for
// every Coordinator replica to be Ready.
func (x *e2e) installDistributed() {
	x.t.Helper()
	args := []string{"install", "--simulation", "--domain=" + domain, "--distributed-deployment"}
	if coordReplicas != 1 {
		args = append(args, "--marblerun-chart-path="+x.chartWithReplicas(coordReplicas))
	}
	x.mustMarblerun(args...)
	x.mustMarblerun("check", "--timeout=120")
	svc, err := x.cs.CoreV1().Services(installNS).Get(x.ctx, "coordinator-client-api", metav1.GetOptions{})
	if err != nil {
		x.t.Fatal(err)
	}
	x.coordIP = svc.Spec.ClusterIP
	pods := x.coordinatorsReady(2 * time.Minute)
	for _, p := range pods {
		env := envOf(p.Spec.Containers[0])
		if env["EDG_STORE_BACKEND"] != "k8s-secret" {
			x.t.Errorf("Coordinator %s: EDG_STORE_BACKEND=%q, want k8s-secret", p.Name, env["EDG_STORE_BACKEND"])
		}
		if !hasServiceAccountVolume(p) {
			x.t.Errorf("Coordinator %s has no service-account volume: %v", p.Name, p.Spec.Volumes)
		}
		x.checkCoordinatorProcessEnv(p)
	}
	status, err := x.marblerun("status", x.coordAddr(), "--insecure", "--coordinator-cert", x.certFile)
	if err != nil {
		x.logCoordinators(pods)
		x.t.Fatalf("status of the fresh distributed Coordinators: %v\n%s", err, status)
	}
	if !strings.Contains(status, "2") {
		x.t.Fatalf("status of a fresh distributed Coordinator: want state 2 (waiting for a manifest), got:\n%s", status)
	}
	x.tl.Addf("distributed install: %d Coordinator(s) Ready; client API at %s:4433", len(pods), x.coordIP)
}

// chartWithReplicas writes the built-in chart with coordinator.replicas set
// to n into a folder and returns it: install has no flag for the value.
func (x *e2e) chartWithReplicas(n int) string {
	x.t.Helper()
	dir := filepath.Join(x.work, "chart-"+strconv.Itoa(n)+"-replicas")
	if err := os.CopyFS(dir, charts.MarbleRun()); err != nil {
		x.t.Fatal(err)
	}
	valuesFile := filepath.Join(dir, "values.yaml")
	b, err := os.ReadFile(valuesFile)
	if err != nil {
		x.t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		x.t.Fatal(err)
	}
	coord, ok := values["coordinator"].(map[string]any)
	if !ok {
		x.t.Fatalf("the chart's values have no coordinator section")
	}
	coord["replicas"] = n
	if b, err = yaml.Marshal(values); err != nil {
		x.t.Fatal(err)
	}
	if err := os.WriteFile(valuesFile, b, 0o600); err != nil {
		x.t.Fatal(err)
	}
	return dir
}

// logCoordinators logs what each Coordinator printed, to tell why they
// disagree or fail.
func (x *e2e) logCoordinators(pods []corev1.Pod) {
	for _, p := range pods {
		logs, err := x.agent.Logs(installNS, p.Name, "coordinator")
		x.t.Logf("log of Coordinator %s (%v):\n%s", p.Name, err, logs)
	}
}

// checkCoordinatorProcessEnv compares what the Coordinator's process got
// from the downward API and the node agent with its Pod.
func (x *e2e) checkCoordinatorProcessEnv(p corev1.Pod) {
	x.t.Helper()
	kube, err := x.cs.CoreV1().Services(metav1.NamespaceDefault).Get(x.ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		x.t.Fatal(err)
	}
	id := p.Status.ContainerStatuses[0].ContainerID
	pid, err := strconv.Atoi(strings.TrimPrefix(id, "nodeagent://"))
	if err != nil {
		x.t.Fatalf("Coordinator %s: no process in container ID %q", p.Name, id)
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		x.t.Fatalf("the environment of Coordinator %s: %v", p.Name, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	for k, want := range map[string]string{
		"POD_NAME":                p.Name,
		"POD_NAMESPACE":           installNS,
		"POD_IP":                  p.Status.PodIP,
		"KUBERNETES_SERVICE_HOST": kube.Spec.ClusterIP,
		"KUBERNETES_SERVICE_PORT": "443",
	} {
		if env[k] != want {
			x.t.Errorf("Coordinator %s (pid %d): %s=%q, want %q", p.Name, pid, k, env[k], want)
		}
	}
}

// hasServiceAccountVolume reports whether the Pod mounts the service-account
// files that the in-cluster configuration reads.
func hasServiceAccountVolume(p corev1.Pod) bool {
	for _, m := range p.Spec.Containers[0].VolumeMounts {
		if m.MountPath == "/var/run/secrets/kubernetes.io/serviceaccount" {
			return true
		}
	}
	return false
}

// checkStateInSecrets: the manifest went into the labelled Secrets, and no
// volume claim was made.
func (x *e2e) checkStateInSecrets() {
	x.t.Helper()
	secrets, err := x.cs.CoreV1().Secrets(installNS).List(x.ctx, metav1.ListOptions{LabelSelector: install.StateLabel})
	if err != nil {
		x.t.Fatal(err)
	}
	if len(secrets.Items) == 0 {
		x.t.Fatalf("no Secret labelled %s after the manifest was set", install.StateLabel)
	}
	pvcs, err := x.cs.CoreV1().PersistentVolumeClaims(installNS).List(x.ctx, metav1.ListOptions{})
	if err != nil {
		x.t.Fatal(err)
	}
	if len(pvcs.Items) != 0 {
		x.t.Errorf("a distributed Coordinator made %d volume claims", len(pvcs.Items))
	}
	x.tl.Addf("the state is in %d Secrets labelled %s", len(secrets.Items), install.StateLabel)
}

// marblesDuringFailover starts a server and several clients and kills a
// Coordinator as soon as the first marble's process runs; every client
// then completes its mTLS exchange with the server, so both activated.
func (x *e2e) marblesDuringFailover(ns string) {
	x.t.Helper()
	before := x.coordinatorsReady(time.Minute)
	d := serverDeployment("sample-server", "sample-server", "")
	if _, err := x.cs.AppsV1().Deployments(ns).Create(x.ctx, d, metav1.CreateOptions{}); err != nil {
		x.t.Fatal(err)
	}
	if _, err := x.cs.CoreV1().Services(ns).Create(x.ctx, serverService(d.Name), metav1.CreateOptions{}); err != nil {
		x.t.Fatal(err)
	}
	clients := make([]string, distributedClients)
	for i := range clients {
		clients[i] = "client-" + strconv.Itoa(i)
		p := clientPod(clients[i], fmt.Sprintf("sample-server.%s:%d", ns, serverPort), nil)
		if _, err := x.cs.CoreV1().Pods(ns).Create(x.ctx, p, metav1.CreateOptions{}); err != nil {
			x.t.Fatal(err)
		}
	}
	x.tl.Addf("created a server Deployment and %d client Pods in %s", len(clients), ns)

	x.waitMarbleRunning(ns)
	victim := before[0]
	x.killCoordinator(victim)

	for _, name := range clients {
		x.waitPodPhase(ns, name, corev1.PodSucceeded, 3*time.Minute)
		logs, _ := x.agent.Logs(ns, name, "client")
		if !strings.Contains(logs, "matches: both marbles hold the same shared key") {
			x.t.Fatalf("client %s did not complete the mTLS exchange:\n%s", name, logs)
		}
	}
	server := x.podOf(ns, "app=sample-server")
	x.tl.Addf("all %d clients talked mTLS to server %s after the failover", len(clients), server.Name)

	after := x.coordinatorsReady(2 * time.Minute)
	if coordReplicas == 1 {
		// The one Coordinator was killed in place: it restarted and read
		// its state back from the Secrets.
		if after[0].UID != victim.UID || after[0].Status.ContainerStatuses[0].RestartCount < 1 {
			x.t.Errorf("the killed Coordinator %s (restarts %d) did not restart in place", after[0].Name, after[0].Status.ContainerStatuses[0].RestartCount)
		}
	}
	for _, p := range after {
		if p.UID == victim.UID && coordReplicas > 1 {
			x.t.Errorf("the deleted Coordinator %s is back among the Ready ones", p.Name)
		}
	}
	status, err := x.marblerun("status", x.coordAddr(), "--insecure", "--coordinator-cert", x.certFile)
	if err != nil || !strings.Contains(status, "3") {
		x.logCoordinators(after)
		x.t.Fatalf("status after the failover: want state 3 (accepting marbles), got %v:\n%s", err, status)
	}
	x.tl.Addf("after the failover: %d Coordinators Ready, status %s", len(after), strings.TrimSpace(status))
}

// waitMarbleRunning waits until a marble's container has started.
func (x *e2e) waitMarbleRunning(ns string) {
	x.t.Helper()
	err := wait.PollUntilContextTimeout(x.ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := x.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range list.Items {
			for _, cs := range p.Status.ContainerStatuses {
				if cs.State.Running != nil {
					x.tl.Addf("marble Pod %s runs", p.Name)
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		x.t.Fatalf("no marble started: %v", err)
	}
}

// killCoordinator ends one Coordinator abruptly: its process is
// SIGKILLed, as in a crash. With one replica it restarts in place; with
// several its Pod is also deleted without grace, and the Deployment starts
// a new replica beside the running ones.
func (x *e2e) killCoordinator(p corev1.Pod) {
	x.t.Helper()
	pid, err := x.agent.KillContainer(installNS, p.Name, "coordinator")
	if err != nil {
		x.t.Fatal(err)
	}
	x.tl.Addf("killed the Coordinator of Pod %s (pid %d)", p.Name, pid)
	if coordReplicas == 1 {
		return
	}
	if err := x.cs.CoreV1().Pods(installNS).Delete(x.ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		x.t.Fatal(err)
	}
	x.tl.Addf("deleted Coordinator Pod %s without grace", p.Name)
}

// coordinatorsReady waits until the Coordinator Deployment has all its
// replicas, each in a live Pod that is Ready, and returns the Pods.
func (x *e2e) coordinatorsReady(timeout time.Duration) []corev1.Pod {
	x.t.Helper()
	var live []corev1.Pod
	err := wait.PollUntilContextTimeout(x.ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		d, err := x.cs.AppsV1().Deployments(installNS).Get(ctx, "marblerun-coordinator", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != coordReplicas || d.Status.ReadyReplicas != coordReplicas {
			return false, nil
		}
		list, err := x.cs.CoreV1().Pods(installNS).List(ctx, metav1.ListOptions{LabelSelector: coordSelector})
		if err != nil {
			return false, err
		}
		live = live[:0]
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				live = append(live, p)
			}
		}
		if len(live) != coordReplicas {
			return false, nil
		}
		for i := range live {
			if !nodeagent.PodReady(&live[i]) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		x.t.Fatalf("the Coordinator Deployment is not at %d Ready replicas: %v", coordReplicas, err)
	}
	return live
}

// uninstallDistributed removes the installation and, with --delete-state,
// its state Secrets.
func (x *e2e) uninstallDistributed() {
	x.t.Helper()
	out := x.mustMarblerun("uninstall", "--delete-state")
	if !strings.Contains(out, "Deleted") {
		x.t.Errorf("uninstall --delete-state does not report deleted state:\n%s", out)
	}
	err := wait.PollUntilContextTimeout(x.ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		left, err := x.leftovers(ctx)
		if err != nil {
			return false, err
		}
		return len(left) == 0, nil
	})
	if err != nil {
		left, _ := x.leftovers(x.ctx)
		x.t.Fatalf("after uninstall --delete-state: %v; left behind: %v", err, left)
	}
	x.tl.Addf("uninstall removed the installation and its state")
}
