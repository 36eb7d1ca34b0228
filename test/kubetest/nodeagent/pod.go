package nodeagent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// podRun is one Pod the agent runs: its network namespace holder, volumes
// and containers.
type podRun struct {
	a         *Agent
	uid       types.UID
	namespace string
	name      string
	dir       string
	ip        string

	ctx    context.Context
	cancel context.CancelFunc

	deleteOnce sync.Once
	stopOnce   sync.Once
	// releaseOnce guards releaseNetwork.
	releaseOnce sync.Once
	done        chan struct{} // closed when run has returned

	kick chan struct{} // asks the status writer to report

	mu    sync.Mutex
	pod   *corev1.Pod
	pause *exec.Cmd
	// pauseExited is set once the namespace holder has been waited for.
	pauseExited bool
	netns       string
	volumes     map[string]string // volume name -> folder on the machine
	initDone    bool
	failure     string // why the Pod cannot run, for its status
	inits       []*containerRun
	containers  []*containerRun
	started     metav1.Time
}

// newPodRun is called with a.mu held.
func newPodRun(a *Agent, pod *corev1.Pod) *podRun {
	ctx, cancel := context.WithCancel(a.ctx)
	p := &podRun{
		a: a, uid: pod.UID, namespace: pod.Namespace, name: pod.Name,
		dir: filepath.Join(a.cfg.Dir, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID)),
		ip:  a.allocateIPLocked(),
		ctx: ctx, cancel: cancel,
		done: make(chan struct{}),
		kick: make(chan struct{}, 1),
		pod:  pod.DeepCopy(),
	}
	for i := range pod.Spec.InitContainers {
		p.inits = append(p.inits, newContainerRun(p, pod.Spec.InitContainers[i], true))
	}
	for i := range pod.Spec.Containers {
		p.containers = append(p.containers, newContainerRun(p, pod.Spec.Containers[i], false))
	}
	return p
}

func (p *podRun) setPod(pod *corev1.Pod) {
	p.mu.Lock()
	p.pod = pod.DeepCopy()
	p.mu.Unlock()
}

func (p *podRun) currentPod() *corev1.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pod
}

func (p *podRun) matches(selector map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	pod := p.currentPod()
	for k, v := range selector {
		if pod.Labels[k] != v {
			return false
		}
	}
	return true
}

// ready reports whether every container is Ready.
func (p *podRun) ready() bool {
	p.mu.Lock()
	cs := p.containers
	p.mu.Unlock()
	if len(cs) == 0 {
		return false
	}
	for _, c := range cs {
		if !c.isReady() {
			return false
		}
	}
	return true
}

func (p *podRun) netNS() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.netns
}

func (p *podRun) processes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	if p.pause != nil && !p.pauseExited {
		n++
	}
	for _, c := range append(append([]*containerRun(nil), p.inits...), p.containers...) {
		if c.isRunning() {
			n++
		}
	}
	return n
}

func (p *podRun) requestStatus() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *podRun) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.mu.Lock()
	p.failure = msg
	p.mu.Unlock()
	p.a.cfg.Timeline.Addf("node agent: Pod %s/%s cannot run: %s", p.namespace, p.name, msg)
	p.requestStatus()
}

// run sets the Pod up and runs its containers until the Pod stops.
func (p *podRun) run() {
	defer close(p.done)
	statusDone := make(chan struct{})
	go func() {
		defer close(statusDone)
		p.statusWriter()
	}()
	defer func() {
		p.requestStatus()
		p.cancel()
		<-statusDone
	}()

	p.mu.Lock()
	p.started = metav1.Now()
	p.mu.Unlock()
	p.a.cfg.Timeline.Addf("node agent: starting Pod %s/%s", p.namespace, p.name)
	if err := os.MkdirAll(filepath.Join(p.dir, "logs"), 0o755); err != nil {
		p.fail("%v", err)
		return
	}
	if err := p.startPause(); err != nil {
		p.fail("network namespace: %v", err)
		return
	}
	p.a.proxy.addNetNS(p.netNS(), p.namespace, declaredPorts(p.currentPod()))
	vols, ok := p.volumesWithRetry()
	if !ok {
		return
	}
	p.mu.Lock()
	p.volumes = vols
	p.mu.Unlock()
	p.requestStatus()

	for _, c := range p.inits {
		if !c.runToCompletion() {
			return
		}
	}
	p.mu.Lock()
	p.initDone = true
	p.mu.Unlock()
	p.requestStatus()

	var wg sync.WaitGroup
	for _, c := range p.containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.loop()
		}()
	}
	wg.Wait()
	// Every container has finished for good (restartPolicy Never or
	// OnFailure): nothing needs the network any more.
	if p.ctx.Err() == nil {
		p.releaseNetwork()
	}
}

// releaseNetwork stops serving Services in the Pod's network namespace and
// ends the process that holds it.
func (p *podRun) releaseNetwork() {
	p.releaseOnce.Do(func() {
		p.a.proxy.removeNetNS(p.netNS())
		p.mu.Lock()
		pause := p.pause
		p.mu.Unlock()
		if pause == nil {
			return
		}
		_ = pause.Process.Signal(syscall.SIGTERM)
		waited := make(chan struct{})
		go func() { _ = pause.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(2 * time.Second):
			_ = pause.Process.Kill()
			<-waited
		}
		p.mu.Lock()
		p.pauseExited = true
		p.mu.Unlock()
	})
}

// volumesWithRetry sets the Pod's volumes up, retrying with backoff while
// what they need is missing (the containers wait in ContainerCreating with
// the reason); false means the Pod stops or can never run.
func (p *podRun) volumesWithRetry() (map[string]string, bool) {
	for attempt := 0; ; attempt++ {
		vols, err := p.a.materializeVolumes(p.ctx, p.currentPod(), filepath.Join(p.dir, "volumes"))
		if err == nil {
			return vols, true
		}
		if errors.Is(err, errUnsupportedVolume) {
			p.fail("volumes: %v", err)
			return nil, false
		}
		if attempt == 0 {
			p.a.cfg.Timeline.Addf("node agent: Pod %s/%s waits for its volumes: %v", p.namespace, p.name, err)
		}
		for _, c := range append(append([]*containerRun(nil), p.inits...), p.containers...) {
			c.setWaiting("ContainerCreating", "volumes: "+err.Error())
		}
		select {
		case <-p.ctx.Done():
			return nil, false
		case <-time.After(min(250*time.Millisecond<<min(attempt, 5), 5*time.Second)):
		}
	}
}

// startPause starts the process that holds the Pod's network namespace.
func (p *podRun) startPause() error {
	cmd := exec.Command(p.a.cfg.Helper, "pause")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.a.cfg.Helper, err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("the namespace holder did not start: %w %s", err, strings.TrimSpace(stderr.String()))
	}
	p.mu.Lock()
	p.pause = cmd
	p.netns = fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	p.mu.Unlock()
	return nil
}

// stop ends the Pod's containers (SIGTERM, then SIGKILL after grace) and
// its namespace holder, and waits for run to return.
func (p *podRun) stop(grace time.Duration) {
	p.stopOnce.Do(func() {
		p.cancel()
		p.mu.Lock()
		cs := append(append([]*containerRun(nil), p.inits...), p.containers...)
		p.mu.Unlock()
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.kill(grace)
			}()
		}
		wg.Wait()
		<-p.done
		p.releaseNetwork()
		p.a.cfg.Timeline.Addf("node agent: Pod %s/%s stopped", p.namespace, p.name)
	})
	<-p.done
}

// statusWriter reports the Pod's status whenever something changed.
func (p *podRun) statusWriter() {
	for {
		select {
		case <-p.kick:
		case <-p.ctx.Done():
			// One last report of the final states.
			select {
			case <-p.kick:
				p.writeStatus()
			default:
			}
			return
		}
		p.writeStatus()
	}
}

func (p *podRun) writeStatus() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), 10*time.Second)
	defer cancel()
	pods := p.a.cfg.Client.CoreV1().Pods(p.namespace)
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := pods.Get(ctx, p.name, metav1.GetOptions{})
		if err != nil || cur.UID != p.uid {
			return
		}
		cur.Status = p.status(cur.Status)
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if err == nil || apierrors.IsNotFound(err) {
			return
		}
		if !apierrors.IsConflict(err) {
			p.a.cfg.Timeline.Addf("node agent: reporting the status of %s/%s: %v", p.namespace, p.name, err)
			return
		}
	}
}

// status computes the Pod's status from its containers.
func (p *podRun) status(old corev1.PodStatus) corev1.PodStatus {
	p.mu.Lock()
	failure := p.failure
	initDone := p.initDone
	netReady := p.netns != ""
	started := p.started
	pod := p.pod
	p.mu.Unlock()

	st := corev1.PodStatus{
		HostIP:    "127.0.0.1",
		HostIPs:   []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP:     p.ip,
		PodIPs:    []corev1.PodIP{{IP: p.ip}},
		StartTime: &started,
		QOSClass:  old.QOSClass,
	}
	for _, c := range p.inits {
		st.InitContainerStatuses = append(st.InitContainerStatuses, c.status())
	}
	allReady, anyRunning, allDone, anyFailed := true, false, true, false
	for _, c := range p.containers {
		cs := c.status()
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		allReady = allReady && cs.Ready
		anyRunning = anyRunning || cs.State.Running != nil
		done := c.finished()
		allDone = allDone && done
		if done && cs.State.Terminated != nil && cs.State.Terminated.ExitCode != 0 {
			anyFailed = true
		}
	}
	switch {
	case failure != "":
		st.Phase = corev1.PodFailed
		st.Reason = "NodeAgentError"
		st.Message = failure
		allReady = false
	case initDone && allDone && len(p.containers) > 0:
		st.Phase = corev1.PodSucceeded
		if anyFailed {
			st.Phase = corev1.PodFailed
		}
		allReady = false
	case anyRunning:
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	if !initDone {
		allReady = false
	}
	cond := func(t corev1.PodConditionType, ok bool) {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		c := corev1.PodCondition{Type: t, Status: s, LastTransitionTime: metav1.Now()}
		for _, o := range old.Conditions {
			if o.Type == t && o.Status == s {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		st.Conditions = append(st.Conditions, c)
	}
	cond(corev1.PodReadyToStartContainers, netReady)
	cond(corev1.PodInitialized, initDone)
	cond(corev1.ContainersReady, allReady)
	cond(corev1.PodReady, allReady)
	for _, o := range old.Conditions {
		switch o.Type {
		case corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady:
		default:
			st.Conditions = append(st.Conditions, o) // e.g. PodScheduled, set by the scheduler
		}
	}
	_ = pod
	return st
}

// errStopped is returned when the Pod stops while a container starts.
var errStopped = errors.New("the Pod is stopping")

// declaredPorts are the container ports of a Pod.
func declaredPorts(pod *corev1.Pod) map[int]bool {
	ports := map[int]bool{}
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, p := range c.Ports {
			if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
				ports[int(p.ContainerPort)] = true
			}
		}
	}
	return ports
}
