package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	appsv1 "k8s.io/api/apps/v1"
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
// replicas are available, at most timeout in all. It returns
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
	for _, name := range []string{InjectorDeployment, CoordinatorDeployment} {
		last := ""
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
			if line != last {
				fmt.Fprintln(out, line)
				last = line
			}
			if ready {
				break
			}
			left := time.Until(deadline)
			if left <= 0 {
				return withNext(fmt.Errorf("%s is not ready after %s (%s)", name, timeout, last),
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
