package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// Image is what the agent runs for a container image: local files placed in
// the container's root, and the image's configuration.
type Image struct {
	// Files maps absolute paths inside the container to files on the
	// machine, e.g. "/usr/local/bin/coordinator": "<built binary>". They
	// are mounted read-only.
	Files map[string]string
	// HostDirs are folders of the machine that appear read-only at the same
	// path, for images that run the machine's programs (e.g. "/usr",
	// "/bin", "/lib", "/lib64" for /usr/bin/sleep).
	HostDirs   []string
	Entrypoint []string
	Cmd        []string
	// Env holds the image's variables (e.g. PATH=...), before the
	// container's own.
	Env        []string
	WorkingDir string
}

// Config configures an Agent.
type Config struct {
	Client kubernetes.Interface
	// NodeName is the Node the agent registers and runs Pods of
	// (default "node-agent").
	NodeName string
	// Dir is the agent's folder: Pod folders, volumes, logs, hosts files.
	// Processes running as other users must be able to traverse it.
	Dir string
	// Helper is the path of the nodeagent-exec binary.
	Helper string
	// Images maps image references without tag or digest (e.g.
	// "ghcr.io/marblemesh/coordinator") to what runs for them.
	Images map[string]Image
	// Capacity is added to the Node's cpu, memory and pods, e.g. an SGX
	// device plugin's resources.
	Capacity corev1.ResourceList
	// Labels are added to the Node's.
	Labels map[string]string
	// ClusterDomain is the DNS suffix of Service names (default
	// cluster.local).
	ClusterDomain string
	// APIServer is the API server's host:port in the machine's network
	// namespace, e.g. "127.0.0.1:6443". With it the agent forwards the
	// `kubernetes` Service of namespace default there (the API server keeps
	// no endpoints for it on loopback) and gives every container
	// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT, as the kubelet
	// does, so that in-cluster clients reach the API server with the
	// service-account files mounted into the Pod. The API server's
	// certificate must name the Service's cluster IP (kubetest's does).
	APIServer string
	// ProbeInterval is how often probes run (default 250ms).
	ProbeInterval time.Duration
	// Timeline receives what the agent does; nil drops it.
	Timeline *Timeline
}

// Agent is a running node agent.
type Agent struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	proxy *proxy

	mu     sync.Mutex
	pods   map[types.UID]*podRun
	nextIP int
}

// Start registers the Node and begins running its Pods, serving Services
// and provisioning PersistentVolumeClaims. Stop ends it.
func Start(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.Client == nil || cfg.Dir == "" || cfg.Helper == "" {
		return nil, errors.New("nodeagent: Client, Dir and Helper are required")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("nodeagent: the node agent needs root (namespaces, mounts, container users)")
	}
	if cfg.NodeName == "" {
		cfg.NodeName = "node-agent"
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = 250 * time.Millisecond
	}
	for _, d := range []string{"pods", "pv", "hosts"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("nodeagent: %w", err)
		}
	}
	// Container users other than root must reach their volumes.
	if err := os.Chmod(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("nodeagent: %w", err)
	}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a := &Agent{cfg: cfg, ctx: actx, cancel: cancel, pods: map[types.UID]*podRun{}}
	a.proxy = newProxy(a)
	if err := a.registerNode(ctx); err != nil {
		cancel()
		return nil, err
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.renewLease()
	}()

	all := informers.NewSharedInformerFactory(cfg.Client, 0)
	svcInf := all.Core().V1().Services().Informer()
	pvcInf := all.Core().V1().PersistentVolumeClaims().Informer()
	onNode := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	}))
	podInf := onNode.Core().V1().Pods().Informer()

	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandlerFuncs
	}{
		{svcInf, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { a.proxy.serviceChanged(o.(*corev1.Service)) },
			UpdateFunc: func(_, o any) { a.proxy.serviceChanged(o.(*corev1.Service)) },
			DeleteFunc: func(o any) {
				if s, ok := deleted[*corev1.Service](o); ok {
					a.proxy.serviceDeleted(s)
				}
			},
		}},
		{pvcInf, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { a.claimChanged(o.(*corev1.PersistentVolumeClaim)) },
			UpdateFunc: func(_, o any) { a.claimChanged(o.(*corev1.PersistentVolumeClaim)) },
			DeleteFunc: func(o any) {
				if c, ok := deleted[*corev1.PersistentVolumeClaim](o); ok {
					a.claimDeleted(c)
				}
			},
		}},
		{podInf, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { a.podChanged(o.(*corev1.Pod)) },
			UpdateFunc: func(_, o any) { a.podChanged(o.(*corev1.Pod)) },
			DeleteFunc: func(o any) {
				if p, ok := deleted[*corev1.Pod](o); ok {
					a.podDeleted(p)
				}
			},
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			a.Stop()
			return nil, fmt.Errorf("nodeagent: %w", err)
		}
	}
	all.Start(actx.Done())
	onNode.Start(actx.Done())
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		<-actx.Done()
		all.Shutdown()
		onNode.Shutdown()
	}()
	for _, h := range handlers {
		if !cache.WaitForCacheSync(ctx.Done(), h.inf.HasSynced) {
			a.Stop()
			return nil, errors.New("nodeagent: the informers did not sync")
		}
	}
	a.cfg.Timeline.Addf("node agent: Node %s registered and running", cfg.NodeName)
	return a, nil
}

// deleted unwraps an informer's delete notification.
func deleted[T any](o any) (T, bool) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	t, ok := o.(T)
	return t, ok
}

// Stop kills every process the agent started, closes its listeners and
// waits for its goroutines. Pods keep their last reported status.
func (a *Agent) Stop() {
	a.cancel()
	a.mu.Lock()
	runs := make([]*podRun, 0, len(a.pods))
	for _, p := range a.pods {
		runs = append(runs, p)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop(2 * time.Second)
		}()
	}
	wg.Wait()
	a.proxy.close()
	a.wg.Wait()
}

// Processes returns how many container and namespace-holder processes run.
func (a *Agent) Processes() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, p := range a.pods {
		n += p.processes()
	}
	return n
}

// PodProcesses returns how many processes run for one Pod: its containers
// and, until the Pod has finished, the holder of its network namespace.
func (a *Agent) PodProcesses(namespace, pod string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, p := range a.pods {
		if p.namespace == namespace && p.name == pod {
			n += p.processes()
		}
	}
	return n
}

// KillContainer sends SIGKILL to the running process of a container, as
// when it crashes or the machine's OOM killer ends it; the Pod's
// restartPolicy decides what follows. It returns the process ID killed.
func (a *Agent) KillContainer(namespace, pod, container string) (int, error) {
	a.mu.Lock()
	var cs []*containerRun
	for _, p := range a.pods {
		if p.namespace == namespace && p.name == pod {
			p.mu.Lock()
			cs = append(cs, p.containers...)
			p.mu.Unlock()
		}
	}
	a.mu.Unlock()
	for _, c := range cs {
		if c.spec.Name != container {
			continue
		}
		c.mu.Lock()
		cmd := c.cmd
		c.mu.Unlock()
		if cmd == nil {
			return 0, fmt.Errorf("nodeagent: container %s of %s/%s is not running", container, namespace, pod)
		}
		// The container leads its own process group.
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
			return 0, fmt.Errorf("nodeagent: killing container %s of %s/%s: %w", container, namespace, pod, err)
		}
		a.cfg.Timeline.Addf("node agent: killed container %s of %s/%s (pid %d)", container, namespace, pod, cmd.Process.Pid)
		return cmd.Process.Pid, nil
	}
	return 0, fmt.Errorf("nodeagent: no container %s of a Pod %s/%s on this node", container, namespace, pod)
}

// Logs returns what the container printed so far, over all its restarts.
func (a *Agent) Logs(namespace, pod, container string) (string, error) {
	a.mu.Lock()
	var dir string
	for _, p := range a.pods {
		if p.namespace == namespace && p.name == pod {
			dir = p.dir
		}
	}
	a.mu.Unlock()
	if dir == "" {
		return "", fmt.Errorf("nodeagent: no Pod %s/%s on this node", namespace, pod)
	}
	b, err := os.ReadFile(filepath.Join(dir, "logs", container+".log"))
	return string(b), err
}

// registerNode creates (or takes over) the Node and reports it Ready.
func (a *Agent) registerNode(ctx context.Context) error {
	labels := map[string]string{
		"kubernetes.io/hostname": a.cfg.NodeName,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
	}
	for k, v := range a.cfg.Labels {
		labels[k] = v
	}
	nodes := a.cfg.Client.CoreV1().Nodes()
	_, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("nodeagent: registering Node %s: %w", a.cfg.NodeName, err)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("8"),
		corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	for k, v := range a.cfg.Capacity {
		capacity[k] = v
	}
	// The node lifecycle controller writes to a new Node too.
	err = retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		node, err := nodes.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		node.Status = corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Phase:       corev1.NodeRunning,
			Conditions: []corev1.NodeCondition{
				{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "node agent is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now},
				{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
				{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
				{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
			},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
				{Type: corev1.NodeHostName, Address: a.cfg.NodeName},
			},
			NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64", KubeletVersion: "nodeagent", ContainerRuntimeVersion: "nodeagent://1"},
		}
		_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("nodeagent: reporting Node %s ready: %w", a.cfg.NodeName, err)
	}
	return nil
}

// renewLease keeps the Node's lease fresh so that the node lifecycle
// controller never marks it unreachable.
func (a *Agent) renewLease() {
	leases := a.cfg.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	renew := func() {
		ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
		defer cancel()
		now := metav1.NewMicroTime(time.Now())
		l, err := leases.Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: a.cfg.NodeName},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       ptr.To(a.cfg.NodeName),
					LeaseDurationSeconds: ptr.To[int32](40),
					RenewTime:            &now,
				},
			}, metav1.CreateOptions{})
		} else if err == nil {
			l.Spec.RenewTime = &now
			_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
		if err != nil && a.ctx.Err() == nil {
			a.cfg.Timeline.Addf("node agent: renewing the lease of %s: %v", a.cfg.NodeName, err)
		}
	}
	renew()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
			renew()
		}
	}
}

// allocateIPLocked returns a Pod IP for status; Pods are reached through
// Services, not through it. a.mu must be held.
func (a *Agent) allocateIPLocked() string {
	a.nextIP++
	return fmt.Sprintf("10.244.%d.%d", a.nextIP/250, a.nextIP%250+2)
}

// podChanged starts a new Pod, or stops one the API server is deleting.
func (a *Agent) podChanged(pod *corev1.Pod) {
	if a.ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	p, ok := a.pods[pod.UID]
	if !ok {
		if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			a.mu.Unlock()
			if pod.DeletionTimestamp != nil {
				a.finishDeletion(pod.Namespace, pod.Name, pod.UID)
			}
			return
		}
		if pod.Spec.HostNetwork {
			a.mu.Unlock()
			a.cfg.Timeline.Addf("node agent: Pod %s/%s uses the host network, which the agent does not run", pod.Namespace, pod.Name)
			return
		}
		p = newPodRun(a, pod)
		a.pods[pod.UID] = p
		a.mu.Unlock()
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			p.run()
		}()
		return
	}
	a.mu.Unlock()
	p.setPod(pod)
	if pod.DeletionTimestamp != nil {
		p.deleteOnce.Do(func() {
			grace := 30 * time.Second
			if pod.DeletionGracePeriodSeconds != nil {
				grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
			}
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				a.cfg.Timeline.Addf("node agent: Pod %s/%s is being deleted: stopping its containers", pod.Namespace, pod.Name)
				p.stop(min(grace, 10*time.Second))
				a.forget(p)
				a.finishDeletion(pod.Namespace, pod.Name, pod.UID)
			}()
		})
	}
}

// podDeleted stops a Pod that disappeared without a graceful deletion.
func (a *Agent) podDeleted(pod *corev1.Pod) {
	a.mu.Lock()
	p, ok := a.pods[pod.UID]
	a.mu.Unlock()
	if !ok {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		p.stop(2 * time.Second)
		a.forget(p)
	}()
}

func (a *Agent) forget(p *podRun) {
	a.mu.Lock()
	if a.pods[p.uid] == p {
		delete(a.pods, p.uid)
	}
	a.mu.Unlock()
}

// finishDeletion removes the Pod object once its containers are gone, as
// the kubelet does.
func (a *Agent) finishDeletion(namespace, name string, uid types.UID) {
	if a.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	err := a.cfg.Client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		// Already gone, or replaced by a Pod of the same name.
	case err != nil:
		a.cfg.Timeline.Addf("node agent: removing Pod %s/%s: %v", namespace, name, err)
	default:
		a.cfg.Timeline.Addf("node agent: Pod %s/%s removed", namespace, name)
	}
}

// readyPods returns the running Pods in namespace whose labels match
// selector and whose containers are all Ready.
func (a *Agent) readyPods(namespace string, selector map[string]string) []*podRun {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*podRun
	for _, p := range a.pods {
		if p.namespace != namespace || !p.matches(selector) || !p.ready() {
			continue
		}
		out = append(out, p)
	}
	return out
}

// imageFor finds the agent's image for a reference such as
// "ghcr.io/marblemesh/coordinator:v1@sha256:...".
func (a *Agent) imageFor(ref string) (Image, bool) {
	name := ref
	if i := strings.Index(name, "@"); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	img, ok := a.cfg.Images[name]
	return img, ok
}
