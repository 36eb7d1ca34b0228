package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Names of the control plane's Deployments, in the order they are checked.
const (
	InjectorDeployment    = "marble-injector"
	CoordinatorDeployment = "marblerun-coordinator"
)

// ErrNotInstalled means that neither Deployment of MarbleRun exists.
var ErrNotInstalled = errors.New("MarbleRun is not installed")

// Waiter waits for the control plane's Deployments to be ready.
type Waiter struct {
	Clientset kubernetes.Interface
	Namespace string
	// Out receives the progress lines.
	Out io.Writer
	// Interval is the time between checks; 0 means 1 s.
	Interval time.Duration
	// Heartbeat, when not 0, is how often a line says that the wait goes
	// on while nothing changes: for which Deployment and Pods, and for how
	// long already.
	Heartbeat time.Duration
}

// deploymentReady reports whether all of d's replicas are available, and
// how many of how many are.
func deploymentReady(d *appsv1.Deployment) (ready bool, available, want int32) {
	want = 1
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	available = d.Status.AvailableReplicas
	ready = d.Status.ObservedGeneration >= d.Generation &&
		d.Status.Replicas == want &&
		available == d.Status.Replicas
	return ready, available, want
}

// Wait checks marble-injector and then marblerun-coordinator. A missing
// Deployment is reported and skipped; for the others it waits until all
// replicas are available, at most timeout in all, printing how many are
// and each Pod (name, node, readiness, restarts) whenever one of them
// changes, and every Heartbeat (if set) while none does. It returns
// ErrNotInstalled (wrapped) when both are missing.
func (w Waiter) Wait(ctx context.Context, timeout time.Duration) error {
	out := w.Out
	if out == nil {
		out = io.Discard
	}
	interval := w.Interval
	if interval <= 0 {
		interval = time.Second
	}
	deadline := time.Now().Add(timeout)

	missing := 0
	start := time.Now()
	for _, name := range []string{InjectorDeployment, CoordinatorDeployment} {
		last := ""
		var lastLine time.Time
		for {
			d, err := w.Clientset.AppsV1().Deployments(w.Namespace).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				fmt.Fprintf(out, "%s is not installed in namespace %s\n", name, w.Namespace)
				missing++
				break
			}
			if err != nil {
				return fmt.Errorf("reading Deployment %s/%s: %w", w.Namespace, name, err)
			}
			ready, available, want := deploymentReady(d)
			line := fmt.Sprintf("%s pods ready: %d/%d", name, available, want)
			pods, notReady, err := w.podStates(ctx, d)
			if err != nil {
				return err
			}
			block := line + "\n" + pods
			switch now := time.Now(); {
			case block != last:
				fmt.Fprint(out, block)
				last, lastLine = block, now
			case !ready && w.Heartbeat > 0 && now.Sub(lastLine) >= w.Heartbeat:
				fmt.Fprintln(out, stillWaiting(name, available, want, notReady, now.Sub(start)))
				lastLine = now
			}
			if ready {
				break
			}
			left := time.Until(deadline)
			if left <= 0 {
				return withNext(fmt.Errorf("%s is not ready after %s (%s)", name, timeout, line),
					fmt.Sprintf("See why with 'kubectl -n %s describe deployment %s' and its Pods' events, or wait longer with --timeout.", w.Namespace, name))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(min(interval, left)):
			}
		}
	}
	if missing == 2 {
		return withNext(fmt.Errorf("%w in namespace %s", ErrNotInstalled, w.Namespace),
			"Install it with 'marblerun install', or give the namespace of your installation with -n.")
	}
	return nil
}

// maxShownPods bounds the Pods listed for one Deployment.
const maxShownPods = 50

// stillWaiting is the heartbeat line of a wait for Deployment name that
// has lasted elapsed.
func stillWaiting(name string, available, want int32, notReady []string, elapsed time.Duration) string {
	s := fmt.Sprintf("  still waiting for %s after %s: %d/%d pods ready", name, elapsed.Round(time.Second), available, want)
	switch {
	case len(notReady) > 0:
		s += "; not ready: " + strings.Join(notReady, ", ")
	case available < want:
		s += "; no Pod of it yet"
	}
	return s
}

// podStates lists the Pods of d's selector, one line each: name, node,
// readiness and restarts. It also returns the names of those not ready.
func (w Waiter) podStates(ctx context.Context, d *appsv1.Deployment) (string, []string, error) {
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return "", nil, fmt.Errorf("the selector of Deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	list, err := w.Clientset.CoreV1().Pods(w.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String(), Limit: maxShownPods})
	if err != nil {
		return "", nil, withNext(fmt.Errorf("listing the Pods of Deployment %s/%s: %w", d.Namespace, d.Name, err),
			"Use a kubeconfig whose user may list Pods in the namespace.")
	}
	pods := list.Items
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	var (
		b        strings.Builder
		notReady []string
	)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for i := range pods {
		p := &pods[i]
		node := p.Spec.NodeName
		if node == "" {
			node = "(no node)"
		}
		readiness := podReadiness(p)
		switch {
		case readiness == "ready":
		case readiness == "not ready":
			notReady = append(notReady, p.Name)
		case strings.HasPrefix(readiness, "not ready ("):
			notReady = append(notReady, p.Name+" "+strings.TrimPrefix(readiness, "not ready "))
		default:
			notReady = append(notReady, p.Name+" ("+readiness+")")
		}
		fmt.Fprintf(tw, "  %s\tnode %s\t%s\trestarts %d\n", p.Name, node, readiness, podRestarts(p))
	}
	if err := tw.Flush(); err != nil {
		return "", nil, err
	}
	if list.Continue != "" {
		fmt.Fprintf(&b, "  (more Pods than the %d shown)\n", maxShownPods)
	}
	return b.String(), notReady, nil
}

// podReadiness says whether p is Ready and, if not, why as far as its
// status tells.
func podReadiness(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "terminating"
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return "ready"
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Waiting != nil && cs.State.Waiting.Reason != "" {
			return "not ready (" + cs.State.Waiting.Reason + ")"
		}
		if cs.State.Terminated != nil && cs.State.Terminated.Reason != "" {
			return "not ready (" + cs.State.Terminated.Reason + ")"
		}
	}
	if p.Status.Phase != "" && p.Status.Phase != corev1.PodRunning {
		return "not ready (" + string(p.Status.Phase) + ")"
	}
	return "not ready"
}

// podRestarts sums the restarts of p's containers.
func podRestarts(p *corev1.Pod) int32 {
	var n int32
	for _, cs := range p.Status.ContainerStatuses {
		n += cs.RestartCount
	}
	return n
}
