//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/marblemesh/marblemesh/internal/image"
	"github.com/marblemesh/marblemesh/test/kubetest"
	"github.com/marblemesh/marblemesh/test/kubetest/nodeagent"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

const (
	installNS  = "marblerun"
	domain     = "e2e.example.com"
	sgxKey     = "sgx.intel.com/epc"
	sampleRepo = "e2e.local/samples"
	sidecarImg = "e2e.local/sidecar:1"
	serverPort = 8443
)

// e2e is the state of one run of the flow.
type e2e struct {
	t        testing.TB
	ctx      context.Context
	cs       kubernetes.Interface
	env      *kubetest.Env
	agent    *nodeagent.Agent
	tl       *nodeagent.Timeline
	bin      string
	work     string
	coordIP  string // cluster IP of coordinator-client-api
	certFile string
}

func TestKubernetesEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the end-to-end test in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("the node agent runs containers in namespaces and needs root")
	}
	x := setup(t)
	// The two installations share the control plane, the node agent and
	// the binaries; each one removes itself at its end.
	if !t.Run("Default", func(t *testing.T) {
		x := x.in(t)
		x.install()
		x.checkReady()
		x.setManifest()
		ns := x.env.Namespace(t)
		x.deployMarbles(ns)
		x.recreateServer(ns)
		x.uninstall()
	}) {
		t.Fatal("the default installation failed and may be left behind; not installing again")
	}
	// The Coordinator keeps its state in Secrets (--distributed-deployment)
	// and reaches the API server with its in-cluster configuration; it is
	// killed while marbles start: every marble still activates, the state
	// survives and the Coordinator Deployment is back at all replicas Ready.
	t.Run("DistributedFailover", func(t *testing.T) {
		x := x.in(t)
		x.installDistributed()
		x.setManifest()
		x.checkStateInSecrets()
		ns := x.env.Namespace(t)
		x.marblesDuringFailover(ns)
		x.uninstallDistributed()
	})
}

// in is x for the subtest t, with a file of its own for the certificate
// of its installation's Coordinator.
func (x *e2e) in(t *testing.T) *e2e {
	y := *x
	y.t, y.ctx = t, t.Context()
	y.certFile = filepath.Join(x.work, "coordinator-cert-"+filepath.Base(t.Name())+".pem")
	return &y
}

// setup builds the binaries and starts a control plane and a node agent
// whose node offers Intel SGX resources. Everything stops when tb ends; the
// timeline is logged last.
func setup(tb testing.TB) *e2e {
	tb.Helper()
	tl := nodeagent.NewTimeline()
	// Registered first, so it runs last: the whole story, also on failure.
	tb.Cleanup(func() { tb.Logf("timeline:\n%s", tl) })

	tl.Addf("building the binaries")
	bin := testsupport.GoBuild(tb,
		"github.com/marblemesh/marblemesh/cmd/coordinator",
		"github.com/marblemesh/marblemesh/cmd/marble-injector",
		"github.com/marblemesh/marblemesh/cmd/marblerun",
		"github.com/marblemesh/marblemesh/cmd/premain",
		"github.com/marblemesh/marblemesh/samples/server",
		"github.com/marblemesh/marblemesh/samples/client",
		"github.com/marblemesh/marblemesh/test/kubetest/nodeagent/nodeagent-exec",
	)

	tl.Addf("starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler")
	env := kubetest.Start(tb, kubetest.WithControllers(), kubetest.WithServiceCIDR("127.20.0.0/16"))
	x := &e2e{t: tb, ctx: tb.Context(), cs: env.Clientset, env: env, tl: tl, bin: bin, work: tb.TempDir()}
	x.certFile = filepath.Join(x.work, "coordinator-cert.pem")

	apiURL, err := url.Parse(env.Config.Host)
	if err != nil {
		tb.Fatal(err)
	}
	agent, err := nodeagent.Start(tb.Context(), nodeagent.Config{
		Client:    env.Clientset,
		APIServer: apiURL.Host, // for distributed Coordinators' in-cluster clients
		NodeName:  "sgx-node-1",
		Dir:       filepath.Join(x.work, "node"),
		Helper:    filepath.Join(bin, "nodeagent-exec"),
		Images:    x.images(),
		Capacity: corev1.ResourceList{
			sgxKey:                    resource.MustParse("1Gi"),
			"sgx.intel.com/enclave":   resource.MustParse("110"),
			"sgx.intel.com/provision": resource.MustParse("110"),
		},
		Timeline: tl,
	})
	if err != nil {
		tb.Fatal(err)
	}
	x.agent = agent
	tb.Cleanup(func() {
		agent.Stop()
		if n := agent.Processes(); n != 0 {
			tb.Errorf("%d processes of the node agent are still running", n)
		}
		tl.Addf("node agent stopped; every process it started has exited")
	})
	// Runs before the agent stops: no webhook may outlive the test, even
	// when it fails half-way.
	tb.Cleanup(x.removeWebhooks)

	return x
}

// images maps the chart's and the test's images to the built binaries,
// laid out as internal/image lays out the real ones.
func (x *e2e) images() map[string]nodeagent.Image {
	at := func(name string) string { return filepath.Join(image.BinDir, name) }
	one := func(name, built string) nodeagent.Image {
		return nodeagent.Image{
			Files:      map[string]string{at(name): filepath.Join(x.bin, built)},
			Entrypoint: []string{at(name)},
			Env:        []string{image.DefaultPath},
		}
	}
	return map[string]nodeagent.Image{
		"ghcr.io/marblemesh/coordinator":     one("coordinator", "coordinator"),
		"ghcr.io/marblemesh/marble-injector": one("marble-injector", "marble-injector"),
		sampleRepo + "/server":               one("sample-server", "server"),
		sampleRepo + "/client": {
			Files: map[string]string{
				at("premain"):       filepath.Join(x.bin, "premain"),
				at("sample-client"): filepath.Join(x.bin, "client"),
			},
			Entrypoint: []string{at("premain"), "--", at("sample-client")},
			Env:        []string{image.DefaultPath},
		},
		// A sidecar that runs the machine's sleep.
		strings.Split(sidecarImg, ":")[0]: {
			HostDirs:   []string{"/usr", "/bin", "/lib", "/lib64"},
			Entrypoint: []string{"sleep", "infinity"},
		},
	}
}

// marblerun runs the CLI binary against the test's cluster and returns its
// combined output.
func (x *e2e) marblerun(args ...string) (string, error) {
	cmd := exec.CommandContext(x.ctx, filepath.Join(x.bin, "marblerun"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+x.env.Kubeconfig, "HOME="+x.work)
	cmd.Dir = x.work
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	x.tl.Addf("marblerun %s → %v", strings.Join(args, " "), exitOf(err))
	return out.String(), err
}

func exitOf(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

func (x *e2e) mustMarblerun(args ...string) string {
	x.t.Helper()
	out, err := x.marblerun(args...)
	if err != nil {
		x.t.Fatalf("marblerun %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (x *e2e) removeWebhooks() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := x.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		x.t.Errorf("listing webhook configurations: %v", err)
		return
	}
	for _, w := range list.Items {
		if err := x.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, w.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			x.t.Errorf("deleting webhook configuration %s: %v", w.Name, err)
			continue
		}
		x.tl.Addf("cleanup: removed MutatingWebhookConfiguration %s", w.Name)
	}
}

// Step 2: the seed's install command, with the embedded chart.
func (x *e2e) install() {
	x.t.Helper()
	x.mustMarblerun("install", "--simulation", "--domain="+domain)
	cs := x.cs
	for _, name := range []string{"marblerun-coordinator", "marble-injector"} {
		if _, err := cs.AppsV1().Deployments(installNS).Get(x.ctx, name, metav1.GetOptions{}); err != nil {
			x.t.Fatalf("Deployment %s after install: %v", name, err)
		}
	}
	for _, name := range []string{"coordinator-client-api", "coordinator-mesh-api", "marble-injector"} {
		if _, err := cs.CoreV1().Services(installNS).Get(x.ctx, name, metav1.GetOptions{}); err != nil {
			x.t.Fatalf("Service %s after install: %v", name, err)
		}
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(x.ctx, "marble-injector-"+installNS, metav1.GetOptions{}); err != nil {
		x.t.Fatalf("the webhook configuration after install: %v", err)
	}
	svc, err := cs.CoreV1().Services(installNS).Get(x.ctx, "coordinator-client-api", metav1.GetOptions{})
	if err != nil {
		x.t.Fatal(err)
	}
	x.coordIP = svc.Spec.ClusterIP
	x.tl.Addf("install created the seed's objects; client API at %s:4433", x.coordIP)
}

// Steps 3 and 4: the Coordinator and the injector run from their Pods'
// specs; check says ready; the Coordinator waits for a manifest.
func (x *e2e) checkReady() {
	x.t.Helper()
	out := x.mustMarblerun("check", "--timeout=120")
	for _, want := range []string{"marblerun-coordinator", "marble-injector"} {
		if !strings.Contains(out, want) {
			x.t.Errorf("check does not mention %s:\n%s", want, out)
		}
	}
	coord := x.podOf(installNS, "edgeless.systems/control-plane-component=coordinator")
	env := map[string]string{}
	for _, e := range coord.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["OE_SIMULATION"] != "1" || !strings.Contains(env["EDG_COORDINATOR_DNS_NAMES"], domain) {
		x.t.Errorf("Coordinator env: OE_SIMULATION=%q, DNS names %q (want simulation and %s)", env["OE_SIMULATION"], env["EDG_COORDINATOR_DNS_NAMES"], domain)
	}
	logs, _ := x.agent.Logs(installNS, coord.Name, "coordinator")
	if !strings.Contains(strings.ToLower(logs), "simulation") {
		x.t.Errorf("the Coordinator's log does not say it runs in simulation:\n%s", logs)
	}
	status := x.mustMarblerun("status", x.coordAddr(), "--insecure", "--coordinator-cert", x.certFile)
	if !strings.Contains(status, "2") || !strings.Contains(strings.ToLower(status), "manifest") {
		x.t.Fatalf("status before the manifest: want state 2 (waiting for a manifest), got:\n%s", status)
	}
	x.tl.Addf("Coordinator status: %s", strings.TrimSpace(status))
}

func (x *e2e) coordAddr() string { return net.JoinHostPort(x.coordIP, "4433") }

// manifest is the two-service manifest of the samples, with the server's
// address given to the client by its Pod.
const manifest = `{
  "Packages": {
    "sample": {"Debug": true, "SignerID": "0000000000000000000000000000000000000000000000000000000000000001", "ProductID": 1, "SecurityVersion": 1}
  },
  "Marbles": {
    "sample-server": {
      "Package": "sample",
      "Parameters": {"Env": {"SAMPLE_SHARED_KEY": "{{ hex .Secrets.sharedKey }}"}}
    },
    "sample-client": {
      "Package": "sample",
      "Parameters": {
        "Files": {"secrets/shared.key": "{{ raw .Secrets.sharedKey }}"},
        "Argv": ["sample-client", "-key-file", "secrets/shared.key", "-message", "hello from the cluster"]
      }
    }
  },
  "Secrets": {"sharedKey": {"Type": "symmetric-key", "Size": 256, "Shared": true}}
}`

// Step 5.
func (x *e2e) setManifest() {
	x.t.Helper()
	path := filepath.Join(x.work, "manifest.json")
	if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
		x.t.Fatal(err)
	}
	x.mustMarblerun("manifest", "set", path, x.coordAddr(), "--insecure", "--coordinator-cert", x.certFile)
	status := x.mustMarblerun("status", x.coordAddr(), "--insecure", "--coordinator-cert", x.certFile)
	if !strings.Contains(status, "3") {
		x.t.Fatalf("status after the manifest: want state 3, got:\n%s", status)
	}
	x.tl.Addf("manifest set; Coordinator status: %s", strings.TrimSpace(status))
}

func serverDeployment(name, marbleType string, presetDNS string) *appsv1.Deployment {
	labels := map[string]string{"app": name, "marblerun/marbletype": marbleType, "marblerun/marblecontainer": "server"}
	server := corev1.Container{
		Name:  "server",
		Image: sampleRepo + "/server:1",
		Args:  []string{"-listen", fmt.Sprintf("0.0.0.0:%d", serverPort)},
		Ports: []corev1.ContainerPort{{Name: "https", ContainerPort: serverPort}},
		Env:   []corev1.EnvVar{{Name: "OE_SIMULATION", Value: "1"}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
			TCPSocket: &corev1.TCPSocketAction{Port: intstrName("https")},
		}},
		WorkingDir:   "/data",
		VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
	}
	if presetDNS != "" {
		server.Env = append(server.Env, corev1.EnvVar{Name: "EDG_MARBLE_DNS_NAMES", Value: presetDNS})
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr.To(false),
					Containers: []corev1.Container{server, {
						Name:  "sidecar",
						Image: sidecarImg,
					}},
					Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				},
			},
		},
	}
}

func serverService(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "https", Port: serverPort, TargetPort: intstrName("https")}},
		},
	}
}

// clientPod calls server once over mTLS and ends; OnFailure retries it
// until the server is up.
func clientPod(name, server string, labels map[string]string) *corev1.Pod {
	l := map[string]string{"marblerun/marbletype": "sample-client"}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyOnFailure,
			AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{
				Name:         "client",
				Image:        sampleRepo + "/client:1",
				Env:          []corev1.EnvVar{{Name: "OE_SIMULATION", Value: "1"}, {Name: "SAMPLE_SERVER_ADDR", Value: server}},
				WorkingDir:   "/data",
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

// Step 6.
func (x *e2e) deployMarbles(ns string) {
	x.t.Helper()
	cs := x.cs
	customDNS := "custom-server,custom-server." + ns + ".svc.cluster.local"
	for _, d := range []*appsv1.Deployment{
		serverDeployment("sample-server", "sample-server", ""),
		serverDeployment("custom-server", "sample-server", customDNS),
	} {
		if _, err := cs.AppsV1().Deployments(ns).Create(x.ctx, d, metav1.CreateOptions{}); err != nil {
			x.t.Fatalf("creating Deployment %s: %v", d.Name, err)
		}
		if _, err := cs.CoreV1().Services(ns).Create(x.ctx, serverService(d.Name), metav1.CreateOptions{}); err != nil {
			x.t.Fatalf("creating Service %s: %v", d.Name, err)
		}
	}
	x.tl.Addf("created Deployments sample-server and custom-server (EDG_MARBLE_DNS_NAMES preset) in %s", ns)
	for _, p := range []*corev1.Pod{
		clientPod("client", fmt.Sprintf("sample-server.%s:%d", ns, serverPort), map[string]string{"marblerun/resource-injection": "disabled"}),
		clientPod("custom-client", fmt.Sprintf("custom-server.%s.svc.cluster.local:%d", ns, serverPort), nil),
	} {
		if _, err := cs.CoreV1().Pods(ns).Create(x.ctx, p, metav1.CreateOptions{}); err != nil {
			x.t.Fatalf("creating Pod %s: %v", p.Name, err)
		}
	}
	x.tl.Addf("created client Pods client (resource injection disabled) and custom-client")

	coordAddr := "coordinator-mesh-api." + installNS + ":2001"
	server := x.podOf(ns, "app=sample-server")
	x.checkInjected(server, "server", map[string]string{
		"EDG_MARBLE_COORDINATOR_ADDR": coordAddr,
		"EDG_MARBLE_TYPE":             "sample-server",
		"EDG_MARBLE_DNS_NAMES":        "sample-server,sample-server." + ns + ",sample-server." + ns + ".svc.cluster.local",
		"EDG_MARBLE_UUID_FILE":        "/sample-server-uid/uuid-file",
	}, true)
	if env := envOf(server.Spec.Containers[1]); len(env) != 0 || server.Spec.Containers[1].Resources.Limits != nil {
		x.t.Errorf("the sidecar got injected settings: env %v, limits %v", env, server.Spec.Containers[1].Resources.Limits)
	}
	custom := x.podOf(ns, "app=custom-server")
	x.checkInjected(custom, "server", map[string]string{
		"EDG_MARBLE_COORDINATOR_ADDR": coordAddr,
		"EDG_MARBLE_TYPE":             "sample-server",
		"EDG_MARBLE_DNS_NAMES":        customDNS,
		"EDG_MARBLE_UUID_FILE":        "/sample-server-uid/uuid-file",
	}, true)
	client, err := cs.CoreV1().Pods(ns).Get(x.ctx, "client", metav1.GetOptions{})
	if err != nil {
		x.t.Fatal(err)
	}
	x.checkInjected(client, "client", map[string]string{
		"EDG_MARBLE_COORDINATOR_ADDR": coordAddr,
		"EDG_MARBLE_TYPE":             "sample-client",
		"EDG_MARBLE_DNS_NAMES":        "sample-client,sample-client." + ns + ",sample-client." + ns + ".svc.cluster.local",
		"EDG_MARBLE_UUID_FILE":        "/sample-client-uid/uuid-file",
	}, false)

	for _, name := range []string{"client", "custom-client"} {
		p := x.waitPodPhase(ns, name, corev1.PodSucceeded, 2*time.Minute)
		logs, _ := x.agent.Logs(ns, name, "client")
		if !strings.Contains(logs, "matches: both marbles hold the same shared key") {
			x.t.Fatalf("client %s did not complete the mTLS exchange:\n%s", name, logs)
		}
		x.tl.Addf("Pod %s succeeded: %s", p.Name, lastLine(logs))
	}
	// The client saw the server's marble certificate, whose CN is the
	// server's UUID: the UID of its Pod.
	logs, _ := x.agent.Logs(ns, "client", "client")
	if !strings.Contains(logs, "CN="+string(server.UID)) {
		x.t.Errorf("the server's certificate does not name its Pod's UID %s:\n%s", server.UID, logs)
	}
}

// checkInjected compares one container's marble settings with what the
// seed lists, and the SGX resources and toleration.
func (x *e2e) checkInjected(pod *corev1.Pod, container string, want map[string]string, sgx bool) {
	x.t.Helper()
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == container {
			c = &pod.Spec.Containers[i]
		}
	}
	if c == nil {
		x.t.Fatalf("Pod %s has no container %s", pod.Name, container)
	}
	env := envOf(*c)
	for k, v := range want {
		if env[k] != v {
			x.t.Errorf("Pod %s: %s = %q, want %q", pod.Name, k, env[k], v)
		}
	}
	uuidDir := filepath.Dir(want["EDG_MARBLE_UUID_FILE"])
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == uuidDir && m.ReadOnly }) {
		x.t.Errorf("Pod %s: no read-only mount at %s: %v", pod.Name, uuidDir, c.VolumeMounts)
	}
	if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool {
		return v.DownwardAPI != nil && len(v.DownwardAPI.Items) == 1 && v.DownwardAPI.Items[0].FieldRef != nil &&
			v.DownwardAPI.Items[0].FieldRef.FieldPath == "metadata.uid"
	}) {
		x.t.Errorf("Pod %s: no downward-API volume with metadata.uid", pod.Name)
	}
	_, hasLimit := c.Resources.Limits[sgxKey]
	hasToleration := slices.ContainsFunc(pod.Spec.Tolerations, func(t corev1.Toleration) bool { return t.Key == sgxKey })
	if hasLimit != sgx || hasToleration != sgx {
		x.t.Errorf("Pod %s: SGX limit %v, toleration %v; want both %v", pod.Name, hasLimit, hasToleration, sgx)
	}
}

// Step 7: a deleted server Pod comes back with a new UID, hence a new UUID,
// and activates again.
func (x *e2e) recreateServer(ns string) {
	x.t.Helper()
	old := x.podOf(ns, "app=sample-server")
	if err := x.cs.CoreV1().Pods(ns).Delete(x.ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		x.t.Fatal(err)
	}
	x.tl.Addf("deleted server Pod %s (UID %s)", old.Name, old.UID)
	var fresh *corev1.Pod
	err := wait.PollUntilContextTimeout(x.ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := x.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=sample-server"})
		if err != nil {
			return false, err
		}
		if len(list.Items) != 1 || list.Items[0].UID == old.UID || !nodeagent.PodReady(&list.Items[0]) {
			return false, nil
		}
		fresh = &list.Items[0]
		return true, nil
	})
	if err != nil {
		x.t.Fatalf("no new Ready server Pod after deleting %s: %v", old.Name, err)
	}
	x.tl.Addf("new server Pod %s (UID %s) is Ready", fresh.Name, fresh.UID)
	p := clientPod("client-again", fmt.Sprintf("sample-server.%s:%d", ns, serverPort), nil)
	if _, err := x.cs.CoreV1().Pods(ns).Create(x.ctx, p, metav1.CreateOptions{}); err != nil {
		x.t.Fatal(err)
	}
	x.waitPodPhase(ns, p.Name, corev1.PodSucceeded, 2*time.Minute)
	logs, _ := x.agent.Logs(ns, p.Name, "client")
	if !strings.Contains(logs, "CN="+string(fresh.UID)) {
		x.t.Fatalf("after the restart the server's certificate does not name the new UID %s:\n%s", fresh.UID, logs)
	}
	x.tl.Addf("Pod %s talked mTLS to the new server %s", p.Name, fresh.UID)
}

// Step 7: uninstall removes everything.
func (x *e2e) uninstall() {
	x.t.Helper()
	x.mustMarblerun("uninstall")
	err := wait.PollUntilContextTimeout(x.ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		left, err := x.leftovers(ctx)
		if err != nil {
			return false, err
		}
		return len(left) == 0, nil
	})
	if err != nil {
		left, _ := x.leftovers(x.ctx)
		x.t.Fatalf("after uninstall: %v; left behind: %v", err, left)
	}
	x.tl.Addf("uninstall removed the installation; its Pods have stopped")
}

// leftovers lists what remains of the installation.
func (x *e2e) leftovers(ctx context.Context) ([]string, error) {
	var left []string
	cs := x.cs
	ds, err := cs.AppsV1().Deployments(installNS).List(ctx, metav1.ListOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, err
	}
	if ds != nil {
		for _, d := range ds.Items {
			left = append(left, "Deployment "+d.Name)
		}
	}
	pods, err := cs.CoreV1().Pods(installNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, p := range pods.Items {
		left = append(left, "Pod "+p.Name)
	}
	svcs, err := cs.CoreV1().Services(installNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, s := range svcs.Items {
		left = append(left, "Service "+s.Name)
	}
	secrets, err := cs.CoreV1().Secrets(installNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, s := range secrets.Items {
		left = append(left, "Secret "+s.Name)
	}
	pvcs, err := cs.CoreV1().PersistentVolumeClaims(installNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, p := range pvcs.Items {
		left = append(left, "PersistentVolumeClaim "+p.Name)
	}
	whs, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for _, w := range whs.Items {
		left = append(left, "MutatingWebhookConfiguration "+w.Name)
	}
	return left, nil
}

// podOf waits for the one Pod matching selector to be Ready and returns it.
func (x *e2e) podOf(ns, selector string) *corev1.Pod {
	x.t.Helper()
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(x.ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := x.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		var live []corev1.Pod
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				live = append(live, p)
			}
		}
		if len(live) != 1 || !nodeagent.PodReady(&live[0]) {
			return false, nil
		}
		pod = &live[0]
		return true, nil
	})
	if err != nil {
		x.t.Fatalf("no Ready Pod %s in %s: %v", selector, ns, err)
	}
	return pod
}

func (x *e2e) waitPodPhase(ns, name string, phase corev1.PodPhase, timeout time.Duration) *corev1.Pod {
	x.t.Helper()
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(x.ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := x.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pod = p
		return p.Status.Phase == phase, nil
	})
	if err != nil {
		logs, _ := x.agent.Logs(ns, name, "client")
		x.t.Fatalf("Pod %s/%s is not %s: %v; status %+v\nlogs:\n%s", ns, name, phase, err, pod.Status, logs)
	}
	return pod
}

// envOf returns a container's variables without the two the test sets.
func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		if e.Name != "OE_SIMULATION" && e.Name != "SAMPLE_SERVER_ADDR" {
			m[e.Name] = e.Value
		}
	}
	return m
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func intstrName(name string) intstr.IntOrString { return intstr.FromString(name) }
