package install

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// Labels of the Secrets in which a distributed Coordinator keeps its state
// (the Coordinator's store writes them; a test checks that they match).
const (
	StateLabel          = "marblemesh.io/state"
	stateManagedBy      = "app.kubernetes.io/managed-by"
	stateManagedByValue = "marblemesh"
)

// stateSelector selects every Secret of every state kept in a namespace.
const stateSelector = stateManagedBy + "=" + stateManagedByValue + "," + StateLabel

// StateSecrets are the Secrets of the Coordinator's state in a namespace.
type StateSecrets struct {
	// States are the state names (the label values), sorted.
	States []string
	// Count is the number of Secrets.
	Count int
}

// ListState returns the Secrets of the Coordinator's state in the
// cluster's namespace: those a distributed Coordinator wrote.
func ListState(ctx context.Context, c *Cluster) (StateSecrets, error) {
	cs, err := c.Clientset(ctx)
	if err != nil {
		return StateSecrets{}, err
	}
	var st StateSecrets
	seen := map[string]bool{}
	opts := metav1.ListOptions{LabelSelector: stateSelector}
	for {
		list, err := cs.CoreV1().Secrets(c.Namespace()).List(ctx, opts)
		if err != nil {
			return StateSecrets{}, withNext(fmt.Errorf("listing the Secrets of the Coordinator's state in namespace %s: %w", c.Namespace(), err),
				"Use a kubeconfig whose user may list Secrets in the namespace.")
		}
		for _, s := range list.Items {
			st.Count++
			if name := s.Labels[StateLabel]; !seen[name] {
				seen[name] = true
				st.States = append(st.States, name)
			}
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	sort.Strings(st.States)
	return st, nil
}

// coordinatorPods selects the Coordinator's Pods by the chart's labels.
const coordinatorPods = "app.kubernetes.io/part-of=marblerun,app.kubernetes.io/component=coordinator"

// stateDeleteWait bounds how long DeleteState waits for the Coordinator's
// Pods to go, so that none writes the state while it is deleted.
const stateDeleteWait = 2 * time.Minute

// DeleteState deletes the Secrets of the Coordinator's state in the
// cluster's namespace and returns how many it deleted. It first waits
// until no Coordinator Pod is left (uninstall has removed its Deployment),
// since a stopping Coordinator may still write. The state is gone for
// good: a Coordinator installed afterwards starts afresh.
func DeleteState(ctx context.Context, c *Cluster) (int, error) {
	cs, err := c.Clientset(ctx)
	if err != nil {
		return 0, err
	}
	return deleteState(ctx, cs, c.Namespace(), stateDeleteWait)
}

// deleteState is DeleteState waiting at most podWait for the Pods.
func deleteState(ctx context.Context, cs kubernetes.Interface, ns string, podWait time.Duration) (int, error) {
	var pods int
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, podWait, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: coordinatorPods})
		if err != nil {
			return false, err
		}
		pods = len(list.Items)
		return pods == 0, nil
	})
	if err != nil {
		return 0, withNext(fmt.Errorf("the Coordinator's Pods in namespace %s are still there (%d; %w), so its state is kept", ns, pods, err),
			"Run the uninstallation with --delete-state again once they are gone.")
	}
	list, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: stateSelector})
	if err != nil {
		return 0, withNext(fmt.Errorf("listing the Secrets of the Coordinator's state in namespace %s: %w", ns, err),
			"Use a kubeconfig whose user may list and delete Secrets in the namespace.")
	}
	n := 0
	var errs []error
	for _, s := range list.Items {
		err := cs.CoreV1().Secrets(ns).Delete(ctx, s.Name, metav1.DeleteOptions{})
		switch {
		case err == nil:
			n++
		case !apierrors.IsNotFound(err):
			errs = append(errs, fmt.Errorf("deleting Secret %s/%s: %w", ns, s.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return n, withNext(err, fmt.Sprintf("Run it again, or delete them with 'kubectl -n %s delete secrets -l %s'.", ns, stateSelector))
	}
	return n, nil
}
