package nodeagent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/marblemesh/marblemesh/test/kubetest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

const (
	shellImage  = "test.local/shell:1"
	serverImage = "localhost:5000/testserver:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	waitTimeout = 45 * time.Second
	pollEvery   = 100 * time.Millisecond
)

// fixture is the control plane and the agent that the subtests share.
type fixture struct {
	cs    kubernetes.Interface
	agent *Agent
	dir   string
	ns    string
}

func TestAgentOnAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the node agent's test against a real API server in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("the node agent runs containers in namespaces and needs root; run this test as root")
	}
	tl := NewTimeline()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("timeline:\n%s", tl)
		}
	})
	bin := testsupport.GoBuild(t,
		"github.com/marblemesh/marblemesh/test/kubetest/nodeagent/nodeagent-exec",
		"github.com/marblemesh/marblemesh/test/kubetest/nodeagent/internal/testserver",
	)
	env := kubetest.Start(t, kubetest.WithControllers(), kubetest.WithServiceCIDR("127.21.0.0/16"))
	apiURL, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "node")
	agent, err := Start(t.Context(), Config{
		Client:    env.Clientset,
		APIServer: apiURL.Host,
		Dir:       dir,
		Helper:    filepath.Join(bin, "nodeagent-exec"),
		Images: map[string]Image{
			"test.local/shell": {
				HostDirs:   []string{"/usr", "/bin", "/lib", "/lib64"},
				Entrypoint: []string{"/bin/sh", "-c"},
				Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			},
			"localhost:5000/testserver": {
				Files:      map[string]string{"/testserver": filepath.Join(bin, "testserver")},
				Entrypoint: []string{"/testserver"},
			},
		},
		ProbeInterval: pollEvery,
		Timeline:      tl,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Stop)
	x := &fixture{cs: env.Clientset, agent: agent, dir: dir}
	x.ns = x.namespace(t, env)

	// First, while no other Pod runs, so that Processes counts this one only.
	t.Run("DeletePodStopsProcesses", x.testDelete)
	t.Run("Features", func(t *testing.T) {
		for name, fn := range map[string]func(*testing.T){
			"EnvResolution":          x.testEnv,
			"InClusterClient":        x.testInClusterClient,
			"KillContainer":          x.testKillContainer,
			"EnvMissingSecret":       x.testEnvMissingSecret,
			"Volumes":                x.testVolumes,
			"PersistentVolumeClaim":  x.testClaim,
			"UnsupportedVolume":      x.testUnsupportedVolume,
			"VolumeSecretLater":      x.testVolumeSecretLater,
			"UsersAndGroups":         x.testUsers,
			"GroupsWithoutUser":      x.testGroupsWithoutUser,
			"ReadOnlyRoot":           x.testReadOnlyRoot,
			"RunAsNonRootRefused":    x.testRunAsNonRoot,
			"LocalhostInPod":         x.testLocalhost,
			"ServicesByIPAndName":    x.testServices,
			"ReadinessGatesBackends": x.testReadiness,
			"ProbeInitialDelay":      x.testInitialDelay,
			"NeverExitCode":          x.testNever,
			"OnFailureRetries":       x.testOnFailure,
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				fn(t)
			})
		}
	})
	t.Run("StopEndsEveryProcess", x.testStop)
}

// namespace creates the test's namespace and waits for what every Pod
// needs there: the default ServiceAccount and the root CA ConfigMap.
func (x *fixture) namespace(t *testing.T, env *kubetest.Env) string {
	ns := env.Namespace(t)
	err := wait.PollUntilContextTimeout(t.Context(), pollEvery, waitTimeout, true, func(ctx context.Context) (bool, error) {
		if _, err := x.cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return false, nil
		}
		_, err := x.cs.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s never got its ServiceAccount and root CA: %v", ns, err)
	}
	return ns
}

// shellPod is a Pod whose container "main" runs script in the machine's sh.
func shellPod(name, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "main", Image: shellImage, Args: []string{script}}},
		},
	}
}

// serverContainer serves its HOSTNAME on port 8080, named http.
func serverContainer(name string) corev1.Container {
	return corev1.Container{
		Name: name, Image: serverImage,
		Args:  []string{"-listen", ":8080"},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
	}
}

func (x *fixture) create(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if _, err := x.cs.CoreV1().Pods(x.ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Pod %s: %v", pod.Name, err)
	}
}

func (x *fixture) createObj(t *testing.T, obj any) {
	t.Helper()
	var err error
	ctx := t.Context()
	switch o := obj.(type) {
	case *corev1.Secret:
		_, err = x.cs.CoreV1().Secrets(x.ns).Create(ctx, o, metav1.CreateOptions{})
	case *corev1.ConfigMap:
		_, err = x.cs.CoreV1().ConfigMaps(x.ns).Create(ctx, o, metav1.CreateOptions{})
	case *corev1.Service:
		_, err = x.cs.CoreV1().Services(x.ns).Create(ctx, o, metav1.CreateOptions{})
	case *corev1.PersistentVolumeClaim:
		_, err = x.cs.CoreV1().PersistentVolumeClaims(x.ns).Create(ctx, o, metav1.CreateOptions{})
	default:
		t.Fatalf("createObj: unexpected %T", obj)
	}
	if err != nil {
		t.Fatalf("creating %T: %v", obj, err)
	}
}

// waitPod polls the Pod until ok holds and returns it; on time-out the test
// fails with the Pod's status and logs.
func (x *fixture) waitPod(t *testing.T, name, what string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(t.Context(), pollEvery, waitTimeout, true, func(ctx context.Context) (bool, error) {
		p, err := x.cs.CoreV1().Pods(x.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return ok(p), nil
	})
	if err != nil {
		t.Fatalf("Pod %s: waiting until %s: %v\n%s", name, what, err, x.describe(last))
	}
	return last
}

func (x *fixture) describe(p *corev1.Pod) string {
	if p == nil {
		return "(no Pod)"
	}
	st, _ := json.MarshalIndent(p.Status, "", "  ")
	var b strings.Builder
	fmt.Fprintf(&b, "status: %s\n", st)
	for _, c := range p.Spec.Containers {
		logs, err := x.agent.Logs(p.Namespace, p.Name, c.Name)
		fmt.Fprintf(&b, "logs of %s (%v):\n%s\n", c.Name, err, logs)
	}
	return b.String()
}

func (x *fixture) logs(t *testing.T, pod, ctr string) string {
	t.Helper()
	s, err := x.agent.Logs(x.ns, pod, ctr)
	if err != nil {
		t.Fatalf("logs of %s/%s: %v", pod, ctr, err)
	}
	return s
}

func phase(ph corev1.PodPhase) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool { return p.Status.Phase == ph }
}

func containerStatus(p *corev1.Pod, name string) (corev1.ContainerStatus, bool) {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name {
			return cs, true
		}
	}
	return corev1.ContainerStatus{}, false
}

func running(names ...string) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		for _, n := range names {
			cs, ok := containerStatus(p, n)
			if !ok || cs.State.Running == nil {
				return false
			}
		}
		return true
	}
}

func waitingWith(ctr, reason, contains string) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		cs, ok := containerStatus(p, ctr)
		return ok && cs.State.Waiting != nil && cs.State.Waiting.Reason == reason && strings.Contains(cs.State.Waiting.Message, contains)
	}
}

// vars parses lines of NAME=value.
func vars(logs string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(logs, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

func expectVars(t *testing.T, got map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %q (set: %v), want %q", k, g, ok, v)
		}
	}
}

// pid is the process of a running container, from its container ID.
func pid(t *testing.T, p *corev1.Pod, ctr string) int {
	t.Helper()
	cs, _ := containerStatus(p, ctr)
	n, err := strconv.Atoi(strings.TrimPrefix(cs.ContainerID, "nodeagent://"))
	if err != nil || n <= 0 {
		t.Fatalf("container %s of %s has no process in its ID %q", ctr, p.Name, cs.ContainerID)
	}
	return n
}

func alive(pid int) bool {
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func (x *fixture) deletePodAndWait(t *testing.T, name string) {
	t.Helper()
	if err := x.cs.CoreV1().Pods(x.ns).Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting Pod %s: %v", name, err)
	}
	err := wait.PollUntilContextTimeout(t.Context(), pollEvery, waitTimeout, true, func(ctx context.Context) (bool, error) {
		_, err := x.cs.CoreV1().Pods(x.ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("Pod %s was not removed after its deletion: %v", name, err)
	}
}

func (x *fixture) testDelete(t *testing.T) {
	if n := x.agent.Processes(); n != 0 {
		t.Fatalf("%d processes run before the first Pod", n)
	}
	pod := shellPod("sleeper", "exec sleep infinity")
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "second", Image: shellImage, Args: []string{"exec sleep infinity"}})
	x.create(t, pod)
	p := x.waitPod(t, "sleeper", "both containers run", running("main", "second"))
	if n := x.agent.Processes(); n != 3 {
		t.Errorf("Processes() = %d with one Pod of two containers, want 3 (with the namespace holder)", n)
	}
	pids := []int{pid(t, p, "main"), pid(t, p, "second")}
	for _, pd := range pids {
		if !alive(pd) {
			t.Fatalf("process %d of a running container does not exist", pd)
		}
	}
	x.deletePodAndWait(t, "sleeper")
	err := wait.PollUntilContextTimeout(t.Context(), pollEvery, waitTimeout, true, func(context.Context) (bool, error) {
		return x.agent.Processes() == 0, nil
	})
	if err != nil {
		t.Fatalf("Processes() = %d after the Pod was deleted, want 0", x.agent.Processes())
	}
	for _, pd := range pids {
		if alive(pd) {
			t.Errorf("process %d of the deleted Pod still runs", pd)
		}
	}
}

func (x *fixture) testEnv(t *testing.T) {
	x.createObj(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "env-secret"}, Data: map[string][]byte{"pw": []byte("hunter2")}})
	x.createObj(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "env-cm"}, Data: map[string]string{"mode": "fast", "color": "blue"}})
	pod := shellPod("env", "echo arg=$(POD_NAME) && env")
	ref := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	pod.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{
		Prefix:       "CFG_",
		ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "env-cm"}},
	}}
	pod.Spec.Containers[0].Env = []corev1.EnvVar{
		{Name: "NAME", Value: "world"},
		{Name: "GREETING", Value: "hello $(NAME)"},
		{Name: "LITERAL", Value: "$$(NAME)"},
		{Name: "UNKNOWN", Value: "$(NOPE)"},
		{Name: "FROM_CFG", Value: "$(CFG_color)"},
		{Name: "POD_NAME", ValueFrom: ref("metadata.name")},
		{Name: "POD_UID", ValueFrom: ref("metadata.uid")},
		{Name: "POD_IP", ValueFrom: ref("status.podIP")},
		{Name: "POD_NAMESPACE", ValueFrom: ref("metadata.namespace")},
		{Name: "PW", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "env-secret"}, Key: "pw"}}},
		{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "env-cm"}, Key: "mode"}}},
	}
	x.create(t, pod)
	p := x.waitPod(t, "env", "it succeeds", phase(corev1.PodSucceeded))
	if p.Status.PodIP == "" {
		t.Error("the Pod has no IP in its status")
	}
	kube, err := x.cs.CoreV1().Services(metav1.NamespaceDefault).Get(t.Context(), "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	expectVars(t, vars(x.logs(t, "env", "main")), map[string]string{
		"KUBERNETES_SERVICE_HOST": kube.Spec.ClusterIP,
		"KUBERNETES_SERVICE_PORT": "443",
		"POD_NAMESPACE":           x.ns,
		"arg":                     "env",
		"HOSTNAME":                "env",
		"NAME":                    "world",
		"GREETING":                "hello world",
		"LITERAL":                 "$(NAME)",
		"UNKNOWN":                 "$(NOPE)",
		"FROM_CFG":                "blue",
		"POD_NAME":                "env",
		"POD_UID":                 string(p.UID),
		"POD_IP":                  p.Status.PodIP,
		"PW":                      "hunter2",
		"MODE":                    "fast",
		"CFG_mode":                "fast",
		"CFG_color":               "blue",
	})
}

// testInClusterClient: a container reaches the API server with client-go's
// in-cluster configuration (the `kubernetes` Service's variables and the
// service-account token, CA and namespace the Pod mounts) and is
// authenticated as its ServiceAccount.
func (x *fixture) testInClusterClient(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "incluster"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "main", Image: serverImage, Args: []string{"-whoami"}}},
		},
	}
	x.create(t, pod)
	x.waitPod(t, "incluster", "it succeeds", phase(corev1.PodSucceeded))
	expectVars(t, vars(x.logs(t, "incluster", "main")), map[string]string{
		"user":      "system:serviceaccount:" + x.ns + ":default",
		"namespace": x.ns,
	})
}

// testKillContainer: a killed container is reported with exit code 137
// and restarted per restartPolicy Always.
func (x *fixture) testKillContainer(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crashes"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{serverContainer("main")}},
	}
	x.create(t, pod)
	p := x.waitPod(t, "crashes", "it runs", running("main"))
	first := pid(t, p, "main")
	killed, err := x.agent.KillContainer(x.ns, "crashes", "main")
	if err != nil {
		t.Fatal(err)
	}
	if killed != first {
		t.Errorf("KillContainer killed %d, want the container's process %d", killed, first)
	}
	p = x.waitPod(t, "crashes", "it runs again", func(p *corev1.Pod) bool {
		cs, ok := containerStatus(p, "main")
		return ok && cs.RestartCount == 1 && cs.State.Running != nil
	})
	cs, _ := containerStatus(p, "main")
	if last := cs.LastTerminationState.Terminated; last == nil || last.ExitCode != 137 {
		t.Errorf("last termination %+v, want exit code 137 (SIGKILL)", last)
	}
	if pid(t, p, "main") == first {
		t.Error("the restarted container has the killed process's ID")
	}
	if _, err := x.agent.KillContainer(x.ns, "crashes", "nope"); err == nil {
		t.Error("KillContainer of a container the Pod does not have succeeded")
	}
}

func (x *fixture) testEnvMissingSecret(t *testing.T) {
	pod := shellPod("late", "echo LATE=$LATE")
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "LATE", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "late-secret"}, Key: "k"},
	}}}
	x.create(t, pod)
	p := x.waitPod(t, "late", "it waits for its Secret", waitingWith("main", "CreateContainerConfigError", "late-secret"))
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("phase %s while the container cannot start, want Pending", p.Status.Phase)
	}
	x.createObj(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "late-secret"}, Data: map[string][]byte{"k": []byte("arrived")}})
	x.waitPod(t, "late", "it succeeds once the Secret exists", phase(corev1.PodSucceeded))
	expectVars(t, vars(x.logs(t, "late", "main")), map[string]string{"LATE": "arrived"})
}

func (x *fixture) testVolumes(t *testing.T) {
	x.createObj(t, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "vol-cm"}, Data: map[string]string{"a": "alpha", "b": "beta"}})
	x.createObj(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "vol-secret"}, Data: map[string][]byte{"pw": []byte("s3cret")}})
	script := `while [ ! -f /shared/msg ]; do sleep 0.1; done
for f in /cfg/sub/a.txt /sec/pw /dapi/name /dapi/app /shared/msg /tok/token; do echo "$f=` + "`cat $f`" + `"; done
echo "mode=` + "`stat -c %a /cfg/sub/a.txt`" + `"
if [ -e /cfg/b ]; then echo b=present; else echo b=absent; fi`
	pod := shellPod("volumes", script)
	pod.Labels = map[string]string{"app": "vol-test"}
	pod.Spec.Containers[0].Name = "reader"
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
		{Name: "cm", MountPath: "/cfg"},
		{Name: "sec", MountPath: "/sec"},
		{Name: "dapi", MountPath: "/dapi"},
		{Name: "shared", MountPath: "/shared"},
		{Name: "tok", MountPath: "/tok"},
	}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
		Name: "writer", Image: shellImage, Args: []string{"echo from-writer > /shared/msg"},
		VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/shared"}},
	})
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "vol-cm"},
			Items:                []corev1.KeyToPath{{Key: "a", Path: "sub/a.txt", Mode: ptr.To[int32](0o400)}},
		}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "vol-secret"}}},
		{Name: "dapi", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
			{Path: "app", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}},
		}}}},
		{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "tok", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
			ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "test-aud", ExpirationSeconds: ptr.To[int64](3600), Path: "token"},
		}}}}},
	}
	x.create(t, pod)
	x.waitPod(t, "volumes", "it succeeds", phase(corev1.PodSucceeded))
	got := vars(x.logs(t, "volumes", "reader"))
	expectVars(t, got, map[string]string{
		"/cfg/sub/a.txt": "alpha",
		"mode":           "400",
		"b":              "absent",
		"/sec/pw":        "s3cret",
		"/dapi/name":     "volumes",
		"/dapi/app":      "vol-test",
		"/shared/msg":    "from-writer",
	})

	// The token is a JWT for the Pod's ServiceAccount, bound to the Pod.
	parts := strings.Split(got["/tok/token"], ".")
	if len(parts) != 3 {
		t.Fatalf("the projected token %q is not a JWT", got["/tok/token"])
	}
	var header map[string]any
	var claims struct {
		Aud []string `json:"aud"`
		Sub string   `json:"sub"`
		K8s struct {
			Pod struct {
				Name string `json:"name"`
			} `json:"pod"`
		} `json:"kubernetes.io"`
	}
	for i, dst := range []any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err == nil {
			err = json.Unmarshal(b, dst)
		}
		if err != nil {
			t.Fatalf("part %d of the token: %v", i, err)
		}
	}
	if header["alg"] == nil {
		t.Errorf("the token's header %v has no alg", header)
	}
	if !slices.Contains(claims.Aud, "test-aud") || claims.Sub != "system:serviceaccount:"+x.ns+":default" || claims.K8s.Pod.Name != "volumes" {
		t.Errorf("the token's claims %+v: want audience test-aud, the default ServiceAccount and Pod volumes", claims)
	}
}

func (x *fixture) testClaim(t *testing.T) {
	x.createObj(t, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")}},
		},
	})
	claims := x.cs.CoreV1().PersistentVolumeClaims(x.ns)
	var claim *corev1.PersistentVolumeClaim
	err := wait.PollUntilContextTimeout(t.Context(), pollEvery, waitTimeout, true, func(ctx context.Context) (bool, error) {
		c, err := claims.Get(ctx, "data", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		claim = c
		return c.Status.Phase == corev1.ClaimBound, nil
	})
	if err != nil {
		t.Fatalf("the claim was not bound: %v (%+v)", err, claim)
	}
	pvName := "nodeagent-" + string(claim.UID)
	if claim.Spec.VolumeName != pvName {
		t.Fatalf("the claim is bound to %q, want the agent's %q", claim.Spec.VolumeName, pvName)
	}
	pv, err := x.cs.CoreV1().PersistentVolumes().Get(t.Context(), pvName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	folder := filepath.Join(x.dir, "pv", string(claim.UID))
	if pv.Spec.HostPath == nil || pv.Spec.HostPath.Path != folder || pv.Spec.Capacity.Storage().String() != "1Mi" {
		t.Errorf("PersistentVolume %s: %+v, want a 1Mi volume at %s", pvName, pv.Spec, folder)
	}

	withClaim := func(name, script string) *corev1.Pod {
		p := shellPod(name, script)
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"},
		}}}
		return p
	}
	x.create(t, withClaim("pvc-write", "echo persisted > /data/f"))
	x.waitPod(t, "pvc-write", "it succeeds", phase(corev1.PodSucceeded))
	x.create(t, withClaim("pvc-read", "echo data=`cat /data/f`"))
	x.waitPod(t, "pvc-read", "it succeeds", phase(corev1.PodSucceeded))
	expectVars(t, vars(x.logs(t, "pvc-read", "main")), map[string]string{"data": "persisted"})

	x.deletePodAndWait(t, "pvc-write")
	x.deletePodAndWait(t, "pvc-read")
	if err := claims.Delete(t.Context(), "data", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(t.Context(), pollEvery, waitTimeout, true, func(ctx context.Context) (bool, error) {
		_, err := x.cs.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("PersistentVolume %s still exists after its claim was deleted: %v", pvName, err)
	}
	if _, err := os.Stat(folder); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the volume's folder %s is still there: %v", folder, err)
	}
}

func (x *fixture) testUnsupportedVolume(t *testing.T) {
	pod := shellPod("hostpath", "echo ran")
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "host", MountPath: "/host"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/etc"}}}}
	x.create(t, pod)
	p := x.waitPod(t, "hostpath", "it fails", phase(corev1.PodFailed))
	if !strings.Contains(p.Status.Message, "volume host: unsupported volume type") {
		t.Errorf("the Pod failed with %q, want a message about its unsupported volume host", p.Status.Message)
	}
	if logs, _ := x.agent.Logs(x.ns, "hostpath", "main"); logs != "" {
		t.Errorf("the container ran: %q", logs)
	}
}

func (x *fixture) testUsers(t *testing.T) {
	x.createObj(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ids-secret"}, Data: map[string][]byte{"pw": []byte("grouped")}})
	pod := shellPod("ids", `echo uid=`+"`id -u`"+`; echo gid=`+"`id -g`"+`; echo groups=`+"`id -G`"+`
echo scratchgroup=`+"`stat -c %g /scratch`"+`
echo ok > /scratch/f && echo scratch=writable
echo secret=`+"`cat /sec/pw`")
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsUser: ptr.To[int64](1000), RunAsGroup: ptr.To[int64](3000), FSGroup: ptr.To[int64](2000),
		SupplementalGroups: []int64{4000}, RunAsNonRoot: ptr.To(true),
	}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}, {Name: "sec", MountPath: "/sec"}}
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		// Readable by the owner only: the container's user reads it as a
		// member of the fsGroup.
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "ids-secret", DefaultMode: ptr.To[int32](0o400)}}},
	}
	x.create(t, pod)
	x.waitPod(t, "ids", "it succeeds", phase(corev1.PodSucceeded))
	got := vars(x.logs(t, "ids", "main"))
	expectVars(t, got, map[string]string{
		"uid": "1000", "gid": "3000", "scratchgroup": "2000", "scratch": "writable", "secret": "grouped",
	})
	groups := strings.Fields(got["groups"])
	slices.Sort(groups)
	if !slices.Equal(groups, []string{"2000", "3000", "4000"}) {
		t.Errorf("id -G = %q, want the group 3000, the fsGroup 2000 and the supplemental group 4000", got["groups"])
	}
}

func (x *fixture) testReadOnlyRoot(t *testing.T) {
	pod := shellPod("readonly", `if echo x > /probe; then echo root=writable; else echo root=readonly; fi
if echo y > /scratch/f; then echo scratch=writable; else echo scratch=readonly; fi`)
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr.To(true)}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	x.create(t, pod)
	x.waitPod(t, "readonly", "it succeeds", phase(corev1.PodSucceeded))
	logs := x.logs(t, "readonly", "main")
	expectVars(t, vars(logs), map[string]string{"root": "readonly", "scratch": "writable"})
	if !strings.Contains(logs, "Read-only file system") {
		t.Errorf("writing to / did not fail for a read-only file system:\n%s", logs)
	}
}

func (x *fixture) testRunAsNonRoot(t *testing.T) {
	pod := shellPod("nonroot", "echo ran")
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}
	x.create(t, pod)
	p := x.waitPod(t, "nonroot", "it is refused", waitingWith("main", "CreateContainerConfigError", "runAsNonRoot but would run as root"))
	if p.Status.Phase != corev1.PodPending {
		t.Errorf("phase %s, want Pending", p.Status.Phase)
	}
	if logs, _ := x.agent.Logs(x.ns, "nonroot", "main"); logs != "" {
		t.Errorf("the container ran: %q", logs)
	}
}

func (x *fixture) testLocalhost(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pair"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyOnFailure,
			Containers: []corev1.Container{
				serverContainer("server"),
				{Name: "client", Image: serverImage, Args: []string{"-get", "http://localhost:8080/", "-get", "http://127.0.0.1:8080/"}},
			},
		},
	}
	x.create(t, pod)
	x.waitPod(t, "pair", "the client container succeeds", func(p *corev1.Pod) bool {
		cs, ok := containerStatus(p, "client")
		return ok && cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
	})
	logs := x.logs(t, "pair", "client")
	for _, u := range []string{"http://localhost:8080/", "http://127.0.0.1:8080/"} {
		if !strings.Contains(logs, u+" pair\n") {
			t.Errorf("the client did not reach the server at %s:\n%s", u, logs)
		}
	}
}

func (x *fixture) service(t *testing.T, name string, selector map[string]string) string {
	t.Helper()
	x.createObj(t, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports:    []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	})
	s, err := x.cs.CoreV1().Services(x.ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.Spec.ClusterIP, "127.21.") {
		t.Fatalf("Service %s got cluster IP %q, not from 127.21.0.0/16", name, s.Spec.ClusterIP)
	}
	return net.JoinHostPort(s.Spec.ClusterIP, "80")
}

func httpGet(ctx context.Context, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// waitServes polls addr until it answers with want.
func waitServes(t *testing.T, addr, want string) {
	t.Helper()
	var last string
	var lastErr error
	err := wait.PollUntilContextTimeout(t.Context(), pollEvery, waitTimeout, true, func(ctx context.Context) (bool, error) {
		last, lastErr = httpGet(ctx, addr)
		return lastErr == nil && last == want, nil
	})
	if err != nil {
		t.Fatalf("%s never answered %q: last %q, %v", addr, want, last, lastErr)
	}
}

func (x *fixture) testServices(t *testing.T) {
	for _, name := range []string{"web-a", "web-b"} {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{serverContainer("server")}},
		}
		x.create(t, p)
	}
	a := x.service(t, "web-a", map[string]string{"app": "web-a"})
	b := x.service(t, "web-b", map[string]string{"app": "web-b"})
	// Both Pods listen on 8080, each in its own network namespace.
	waitServes(t, a, "web-a")
	waitServes(t, b, "web-b")
	for _, name := range []string{"web-a", "web-b"} {
		// A Pod can serve before the agent's status update reaches the API
		// server: wait for Ready, then check that nothing restarted.
		p := x.waitPod(t, name, "it is Ready", PodReady)
		if cs, _ := containerStatus(p, "server"); cs.RestartCount != 0 || cs.State.Running == nil || !PodReady(p) {
			t.Errorf("Pod %s: %+v, want it Ready and running without restarts", name, cs)
		}
	}

	urls := []string{
		"http://web-a/",
		"http://web-a." + x.ns + "/",
		"http://web-a." + x.ns + ".svc/",
		"http://web-a." + x.ns + ".svc.cluster.local/",
		"http://web-b/",
	}
	client := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-client"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyOnFailure,
			Containers:    []corev1.Container{{Name: "client", Image: serverImage}},
		},
	}
	for _, u := range urls {
		client.Spec.Containers[0].Args = append(client.Spec.Containers[0].Args, "-get", u)
	}
	x.create(t, client)
	x.waitPod(t, "web-client", "it reached every name", phase(corev1.PodSucceeded))
	logs := x.logs(t, "web-client", "client")
	for _, u := range urls {
		want := "web-a"
		if strings.Contains(u, "web-b") {
			want = "web-b"
		}
		if !strings.Contains(logs, u+" "+want+"\n") {
			t.Errorf("the client did not reach %s at %s:\n%s", want, u, logs)
		}
	}
}

func (x *fixture) testReadiness(t *testing.T) {
	ready := serverContainer("server")
	ready.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}}}
	unready := serverContainer("server")
	unready.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9999)}}}
	x.create(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "rd-ready", Labels: map[string]string{"app": "rd"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{ready}},
	})
	x.create(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "rd-unready", Labels: map[string]string{"app": "rd", "only": "unready"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{unready}},
	})
	both := x.service(t, "rd", map[string]string{"app": "rd"})
	onlyUnready := x.service(t, "rd-unready", map[string]string{"only": "unready"})
	nobody := x.service(t, "rd-nobody", map[string]string{"app": "nobody"})

	x.waitPod(t, "rd-ready", "it is Ready", PodReady)
	x.waitPod(t, "rd-unready", "it runs", running("server"))
	waitServes(t, both, "rd-ready")
	for i := range 8 {
		got, err := httpGet(t.Context(), both)
		if err != nil || got != "rd-ready" {
			t.Errorf("request %d to Service rd: %q, %v; want only the Ready Pod rd-ready", i, got, err)
		}
	}
	for _, addr := range []string{onlyUnready, nobody} {
		// The agent listens (the connection is accepted) but has no
		// backend, so the request gets no answer.
		err := wait.PollUntilContextTimeout(t.Context(), pollEvery, waitTimeout, true, func(ctx context.Context) (bool, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return false, nil
			}
			c.Close()
			return true, nil
		})
		if err != nil {
			t.Fatalf("the agent never listened at %s: %v", addr, err)
		}
		if got, err := httpGet(t.Context(), addr); err == nil {
			t.Errorf("a Service without Ready Pods at %s answered %q", addr, got)
		}
	}
	p, err := x.cs.CoreV1().Pods(x.ns).Get(t.Context(), "rd-unready", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cs, _ := containerStatus(p, "server"); PodReady(p) || cs.Ready || cs.State.Running == nil {
		t.Errorf("Pod rd-unready, whose readiness probe fails: Ready %v, container %+v; want running and not Ready", PodReady(p), cs)
	}
}

func (x *fixture) testNever(t *testing.T) {
	x.create(t, shellPod("exit3", "echo bye; exit 3"))
	p := x.waitPod(t, "exit3", "it fails", phase(corev1.PodFailed))
	cs, _ := containerStatus(p, "main")
	if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 3 || cs.State.Terminated.Reason != "Error" || cs.RestartCount != 0 {
		t.Errorf("container status %+v, want terminated with exit code 3 and no restart", cs)
	}
	if logs := x.logs(t, "exit3", "main"); logs != "bye\n" {
		t.Errorf("logs %q, want one run", logs)
	}
	// A finished Pod keeps no process, not even its namespace holder.
	err := wait.PollUntilContextTimeout(t.Context(), pollEvery, waitTimeout, true, func(context.Context) (bool, error) {
		return x.agent.PodProcesses(x.ns, "exit3") == 0, nil
	})
	if err != nil {
		t.Errorf("the finished Pod still has %d processes", x.agent.PodProcesses(x.ns, "exit3"))
	}
}

func (x *fixture) testOnFailure(t *testing.T) {
	pod := shellPod("retry", `if [ -f /state/tried ]; then echo second=ok; exit 0; fi
touch /state/tried; echo first=fails; exit 1`)
	pod.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "state", MountPath: "/state"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	x.create(t, pod)
	p := x.waitPod(t, "retry", "it succeeds", phase(corev1.PodSucceeded))
	cs, _ := containerStatus(p, "main")
	if cs.RestartCount < 1 || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
		t.Errorf("container status %+v, want a restart and exit code 0", cs)
	}
	expectVars(t, vars(x.logs(t, "retry", "main")), map[string]string{"first": "fails", "second": "ok"})
}

func (x *fixture) testStop(t *testing.T) {
	x.create(t, shellPod("last", "exec sleep infinity"))
	p := x.waitPod(t, "last", "it runs", running("main"))
	pd := pid(t, p, "main")
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		x.agent.Stop()
	}()
	select {
	case <-stopped:
	case <-time.After(waitTimeout):
		t.Fatalf("Stop did not return within %s", waitTimeout)
	}
	if n := x.agent.Processes(); n != 0 {
		t.Errorf("Processes() = %d after Stop, want 0", n)
	}
	if alive(pd) {
		t.Errorf("process %d of a container still runs after Stop", pd)
	}
}

// testInitialDelay: a probe waits its initialDelaySeconds from the
// container's start before it can make the container Ready.
func (x *fixture) testInitialDelay(t *testing.T) {
	const delay = 3 * time.Second
	c := serverContainer("server")
	c.ReadinessProbe = &corev1.Probe{
		InitialDelaySeconds: int32(delay / time.Second),
		ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}},
	}
	x.create(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "delayed"}, Spec: corev1.PodSpec{Containers: []corev1.Container{c}}})
	p := x.waitPod(t, "delayed", "it is Ready", PodReady)
	cs, ok := containerStatus(p, "server")
	if !ok || cs.State.Running == nil {
		t.Fatalf("container status %+v", cs)
	}
	var readyAt time.Time
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			readyAt = cond.LastTransitionTime.Time
		}
	}
	// Both times are rounded down to seconds by the API.
	if waited := readyAt.Sub(cs.State.Running.StartedAt.Time); waited < delay-time.Second {
		t.Errorf("Ready %s after the start, before the initial delay of %s", waited, delay)
	}
}

// testVolumeSecretLater: a Secret volume whose Secret does not exist yet
// keeps the Pod in ContainerCreating, naming the Secret, until it exists.
func (x *fixture) testVolumeSecretLater(t *testing.T) {
	pod := shellPod("late-volume", "cat /secret/key")
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "s", MountPath: "/secret"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "late-volume-secret"}}}}
	x.create(t, pod)
	x.waitPod(t, "late-volume", "it waits for its Secret", waitingWith("main", "ContainerCreating", "late-volume-secret"))
	x.createObj(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "late-volume-secret"}, Data: map[string][]byte{"key": []byte("arrived")}})
	x.waitPod(t, "late-volume", "it succeeded", phase(corev1.PodSucceeded))
	if got := x.logs(t, "late-volume", "main"); strings.TrimSpace(got) != "arrived" {
		t.Errorf("the container read %q from the Secret volume, want %q", got, "arrived")
	}
}

// testGroupsWithoutUser: without runAsUser the image's user (root) runs,
// with runAsGroup as its group and the fsGroup and supplemental groups.
func (x *fixture) testGroupsWithoutUser(t *testing.T) {
	pod := shellPod("groups-only", `echo uid=`+"`id -u`"+`; echo gid=`+"`id -g`"+`; echo groups=`+"`id -G`")
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsGroup: ptr.To[int64](3100), FSGroup: ptr.To[int64](2100), SupplementalGroups: []int64{4100},
	}
	x.create(t, pod)
	x.waitPod(t, "groups-only", "it succeeds", phase(corev1.PodSucceeded))
	got := vars(x.logs(t, "groups-only", "main"))
	expectVars(t, got, map[string]string{"uid": "0", "gid": "3100"})
	groups := strings.Fields(got["groups"])
	slices.Sort(groups)
	if !slices.Equal(groups, []string{"2100", "3100", "4100"}) {
		t.Errorf("id -G = %q, want the group 3100, the fsGroup 2100 and the supplemental group 4100", got["groups"])
	}
}
