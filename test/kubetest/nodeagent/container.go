package nodeagent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// containerRun is one container of a Pod, over its restarts.
type containerRun struct {
	p    *podRun
	spec corev1.Container
	init bool

	mu         sync.Mutex
	cmd        *exec.Cmd
	exited     chan struct{}
	running    *metav1.Time
	ready      bool
	started    bool // the startup probe passed (or there is none)
	restarts   int32
	last       *corev1.ContainerStateTerminated
	waiting    string
	waitingMsg string
	done       bool // will not run again
}

func newContainerRun(p *podRun, spec corev1.Container, init bool) *containerRun {
	return &containerRun{p: p, spec: spec, init: init, waiting: "ContainerCreating"}
}

func (c *containerRun) isReady() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

func (c *containerRun) isRunning() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd != nil
}

func (c *containerRun) finished() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// restart reports whether a container that exited with code runs again.
func (c *containerRun) restart(code int) bool {
	switch c.p.currentPod().Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	default:
		return !c.init || code != 0
	}
}

// loop runs the container until the Pod stops or the restart policy ends it.
func (c *containerRun) loop() {
	for {
		code, err := c.once()
		if c.p.ctx.Err() != nil {
			return
		}
		if err == nil && !c.restart(code) {
			c.mu.Lock()
			c.done = true
			c.mu.Unlock()
			c.p.requestStatus()
			return
		}
		c.mu.Lock()
		backoff := min(250*time.Millisecond<<min(c.restarts, 5), 5*time.Second)
		if err == nil {
			c.restarts++
			c.waiting, c.waitingMsg = "CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container", backoff)
		}
		c.mu.Unlock()
		c.p.requestStatus()
		select {
		case <-c.p.ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// runToCompletion runs an init container until it succeeds; false means the
// Pod cannot go on.
func (c *containerRun) runToCompletion() bool {
	for {
		code, err := c.once()
		if c.p.ctx.Err() != nil {
			return false
		}
		if err == nil && code == 0 {
			c.mu.Lock()
			c.done = true
			c.mu.Unlock()
			return true
		}
		if err == nil && !c.restart(code) {
			c.p.fail("init container %s exited with %d", c.spec.Name, code)
			return false
		}
		if err == nil {
			c.mu.Lock()
			c.restarts++
			c.mu.Unlock()
		}
		select {
		case <-c.p.ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

// once starts the container and waits for it to exit. An error means it
// could not start (reported as waiting); otherwise the exit code is returned.
func (c *containerRun) once() (int, error) {
	p := c.p
	spec, err := p.a.execSpec(p.ctx, p, c.spec)
	if err != nil {
		c.setWaiting("CreateContainerConfigError", err.Error())
		p.a.cfg.Timeline.Addf("node agent: container %s of %s/%s cannot start: %v", c.spec.Name, p.namespace, p.name, err)
		return 0, err
	}
	dir := filepath.Join(p.dir, "containers", c.spec.Name)
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		c.setWaiting("CreateContainerError", err.Error())
		return 0, err
	}
	spec.Root = root
	spec.AgentPID = os.Getpid()
	b, err := json.Marshal(spec)
	if err != nil {
		return 0, err
	}
	specFile := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(specFile, b, 0o600); err != nil {
		c.setWaiting("CreateContainerError", err.Error())
		return 0, err
	}
	logf, err := os.OpenFile(filepath.Join(p.dir, "logs", c.spec.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.setWaiting("CreateContainerError", err.Error())
		return 0, err
	}
	defer logf.Close()
	cmd := exec.Command(p.a.cfg.Helper, "run", specFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.mu.Lock()
	if p.ctx.Err() != nil {
		c.mu.Unlock()
		return 0, errStopped
	}
	if err := cmd.Start(); err != nil {
		c.mu.Unlock()
		c.setWaiting("CreateContainerError", err.Error())
		return 0, err
	}
	now := metav1.Now()
	c.cmd, c.exited, c.running = cmd, make(chan struct{}), &now
	c.waiting, c.waitingMsg = "", ""
	c.started = c.spec.StartupProbe == nil
	c.ready = c.spec.ReadinessProbe == nil && c.started && !c.init
	exited := c.exited
	c.mu.Unlock()
	p.a.cfg.Timeline.Addf("node agent: started container %s of %s/%s (pid %d)", c.spec.Name, p.namespace, p.name, cmd.Process.Pid)
	p.requestStatus()

	probeCtx, stopProbes := context.WithCancel(p.ctx)
	probesDone := make(chan struct{})
	go func() {
		defer close(probesDone)
		if !c.init {
			c.probe(probeCtx)
		}
	}()
	werr := cmd.Wait()
	stopProbes()
	<-probesDone
	code := 0
	if werr != nil {
		var ee *exec.ExitError
		if errors.As(werr, &ee) {
			code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		} else {
			code = 1
		}
	}
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	finished := metav1.Now()
	c.mu.Lock()
	c.last = &corev1.ContainerStateTerminated{ExitCode: int32(code), Reason: reason, StartedAt: *c.running, FinishedAt: finished, ContainerID: containerID(cmd)}
	c.cmd, c.running, c.ready = nil, nil, false
	close(exited)
	c.mu.Unlock()
	p.a.cfg.Timeline.Addf("node agent: container %s of %s/%s exited with %d", c.spec.Name, p.namespace, p.name, code)
	p.requestStatus()
	return code, nil
}

func containerID(cmd *exec.Cmd) string {
	return "nodeagent://" + strconv.Itoa(cmd.Process.Pid)
}

func (c *containerRun) setWaiting(reason, msg string) {
	c.mu.Lock()
	c.waiting, c.waitingMsg = reason, msg
	c.mu.Unlock()
	c.p.requestStatus()
}

// kill sends SIGTERM to the container's process group and SIGKILL after
// grace, and waits until it has exited.
func (c *containerRun) kill(grace time.Duration) {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

// status is the container's entry in the Pod status.
func (c *containerRun) status() corev1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := corev1.ContainerStatus{
		Name: c.spec.Name, Image: c.spec.Image, ImageID: c.spec.Image,
		Ready: c.ready, RestartCount: c.restarts,
		// A copy: the status is encoded after the lock is released.
		Started: ptr.To(c.started),
	}
	switch {
	case c.cmd != nil:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: *c.running}
		cs.ContainerID = containerID(c.cmd)
		if c.last != nil {
			cs.LastTerminationState.Terminated = c.last
		}
	case c.waiting != "":
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: c.waiting, Message: c.waitingMsg}
		if c.last != nil {
			cs.LastTerminationState.Terminated = c.last
		}
	case c.last != nil:
		cs.State.Terminated = c.last
		cs.ContainerID = c.last.ContainerID
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	return cs
}

// probe runs the startup probe until it passes, then the readiness probe,
// every ProbeInterval until ctx ends.
func (c *containerRun) probe(ctx context.Context) {
	// Probes run with the container; each waits its initialDelaySeconds
	// from the container's start, as the kubelet does.
	start := time.Now()
	t := time.NewTicker(c.p.a.cfg.ProbeInterval)
	defer t.Stop()
	for {
		c.mu.Lock()
		started := c.started
		c.mu.Unlock()
		var pr *corev1.Probe
		if !started {
			pr = c.spec.StartupProbe
		} else {
			pr = c.spec.ReadinessProbe
		}
		switch {
		case pr == nil:
			if started {
				return
			}
		case time.Since(start) < time.Duration(pr.InitialDelaySeconds)*time.Second:
			// Before its initial delay, a probe counts as neither success nor failure.
		default:
			ok := c.p.a.runProbe(ctx, c.p, c.spec, pr)
			c.mu.Lock()
			changed := false
			if !started && ok {
				c.started, changed = true, true
				if c.spec.ReadinessProbe == nil {
					c.ready = true
				}
			} else if started && ok != c.ready {
				c.ready, changed = ok, true
			}
			ready := c.ready
			c.mu.Unlock()
			if changed {
				c.p.a.cfg.Timeline.Addf("node agent: container %s of %s/%s ready=%v", c.spec.Name, c.p.namespace, c.p.name, ready)
				c.p.requestStatus()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// runProbe runs one httpGet or tcpSocket probe inside the Pod's network
// namespace. Exec and gRPC probes fail: the agent does not run them.
func (a *Agent) runProbe(ctx context.Context, p *podRun, ctr corev1.Container, pr *corev1.Probe) bool {
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	netns := p.netNS()
	switch {
	case pr.HTTPGet != nil:
		port, ok := resolvePort(pr.HTTPGet.Port, ctr)
		if !ok {
			return false
		}
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialIn(ctx, netns, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			},
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the kubelet does not verify probe certificates either
			DisableKeepAlives: true,
		}
		defer tr.CloseIdleConnections()
		scheme := "http"
		if pr.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		host := pr.HTTPGet.Host
		if host == "" {
			host = "127.0.0.1"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path.Clean("/"+pr.HTTPGet.Path), nil)
		if err != nil {
			return false
		}
		for _, h := range pr.HTTPGet.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case pr.TCPSocket != nil:
		port, ok := resolvePort(pr.TCPSocket.Port, ctr)
		if !ok {
			return false
		}
		conn, err := dialIn(ctx, netns, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return false
		}
		conn.Close()
		return true
	default:
		return false
	}
}

// resolvePort turns a probe's or Service's port (number or container port
// name) into a number.
func resolvePort(port intstr.IntOrString, ctr corev1.Container) (int, bool) {
	if port.Type == intstr.Int {
		return int(port.IntVal), port.IntVal > 0
	}
	for _, cp := range ctr.Ports {
		if cp.Name == port.StrVal {
			return int(cp.ContainerPort), true
		}
	}
	return 0, false
}
