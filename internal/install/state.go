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

// Labels of the objects in which a distributed Coordinator keeps its state
// (the Coordinator writes them; a test checks that they match): the
// Secrets of the state and the ConfigMap of its sealed key-encryption key.
const (
	StateLabel          = "marblemesh.io/state"
	stateManagedBy      = "app.kubernetes.io/managed-by"
	stateManagedByValue = "marblemesh"
)

// stateSelector selects every object of every state kept in a namespace.
const stateSelector = stateManagedBy + "=" + stateManagedByValue + "," + StateLabel

// StateObjects are the objects of the Coordinator's state in a namespace.
type StateObjects struct {
	// States are the state names (the label values), sorted.
	States []string
	// Secrets is the number of Secrets (the state itself) and ConfigMaps
	// the number of ConfigMaps (the sealed key-encryption key).
	Secrets, ConfigMaps int
}

// Empty reports whether there are no objects.
func (o StateObjects) Empty() bool { return o.Secrets+o.ConfigMaps == 0 }

// String says what the objects are, e.g. "3 Secrets and 1 ConfigMap".
func (o StateObjects) String() string {
	s := plural(o.Secrets, "Secret")
	if o.ConfigMaps > 0 {
		s += " and " + plural(o.ConfigMaps, "ConfigMap")
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// stateObject is what ListState and DeleteState need of an object.
type stateObject struct {
	kind, name, state string
}

// listStateObjects lists the state's Secrets and ConfigMaps in ns.
func listStateObjects(ctx context.Context, cs kubernetes.Interface, ns string) ([]stateObject, error) {
	var objs []stateObject
	opts := metav1.ListOptions{LabelSelector: stateSelector, Limit: 500}
	for {
		list, err := cs.CoreV1().Secrets(ns).List(ctx, opts)
		if err != nil {
			return nil, withNext(fmt.Errorf("listing the Secrets of the Coordinator's state in namespace %s: %w", ns, err),
				"Use a kubeconfig whose user may list and delete Secrets and ConfigMaps in the namespace.")
		}
		for _, s := range list.Items {
			objs = append(objs, stateObject{"Secret", s.Name, s.Labels[StateLabel]})
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	opts.Continue = ""
	for {
		list, err := cs.CoreV1().ConfigMaps(ns).List(ctx, opts)
		if err != nil {
			return nil, withNext(fmt.Errorf("listing the ConfigMaps of the Coordinator's state in namespace %s: %w", ns, err),
				"Use a kubeconfig whose user may list and delete Secrets and ConfigMaps in the namespace.")
		}
		for _, c := range list.Items {
			objs = append(objs, stateObject{"ConfigMap", c.Name, c.Labels[StateLabel]})
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	return objs, nil
}

// summarize counts objs by kind and state.
func summarize(objs []stateObject) StateObjects {
	var st StateObjects
	seen := map[string]bool{}
	for _, o := range objs {
		if o.kind == "ConfigMap" {
			st.ConfigMaps++
		} else {
			st.Secrets++
		}
		if !seen[o.state] {
			seen[o.state] = true
			st.States = append(st.States, o.state)
		}
	}
	sort.Strings(st.States)
	return st
}

// ListState returns the objects of the Coordinator's state in the
// cluster's namespace: the Secrets and the ConfigMap a distributed
// Coordinator wrote.
func ListState(ctx context.Context, c *Cluster) (StateObjects, error) {
	cs, err := c.Clientset(ctx)
	if err != nil {
		return StateObjects{}, err
	}
	objs, err := listStateObjects(ctx, cs, c.Namespace())
	if err != nil {
		return StateObjects{}, err
	}
	return summarize(objs), nil
}

// coordinatorPods selects the Coordinator's Pods by the chart's labels.
const coordinatorPods = "app.kubernetes.io/part-of=marblerun,app.kubernetes.io/component=coordinator"

// stateDeleteWait bounds how long DeleteState waits for the Coordinator's
// Pods to go, so that none writes the state while it is deleted.
const stateDeleteWait = 2 * time.Minute

// DeleteState deletes the objects of the Coordinator's state in the
// cluster's namespace (its Secrets and the ConfigMap of its sealed
// key-encryption key) and returns what it deleted. It first waits until
// no Coordinator Pod is left (uninstall has removed its Deployment), since
// a stopping Coordinator may still write. The state is gone for good: a
// Coordinator installed afterwards starts afresh.
func DeleteState(ctx context.Context, c *Cluster) (StateObjects, error) {
	cs, err := c.Clientset(ctx)
	if err != nil {
		return StateObjects{}, err
	}
	return deleteState(ctx, cs, c.Namespace(), stateDeleteWait)
}

// deleteState is DeleteState waiting at most podWait for the Pods.
func deleteState(ctx context.Context, cs kubernetes.Interface, ns string, podWait time.Duration) (StateObjects, error) {
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
		return StateObjects{}, withNext(fmt.Errorf("the Coordinator's Pods in namespace %s are still there (%d; %w), so its state is kept", ns, pods, err),
			"Run the uninstallation with --delete-state again once they are gone.")
	}
	objs, err := listStateObjects(ctx, cs, ns)
	if err != nil {
		return StateObjects{}, err
	}
	var deleted []stateObject
	var errs []error
	for _, o := range objs {
		var err error
		if o.kind == "ConfigMap" {
			err = cs.CoreV1().ConfigMaps(ns).Delete(ctx, o.name, metav1.DeleteOptions{})
		} else {
			err = cs.CoreV1().Secrets(ns).Delete(ctx, o.name, metav1.DeleteOptions{})
		}
		switch {
		case err == nil:
			deleted = append(deleted, o)
		case !apierrors.IsNotFound(err):
			errs = append(errs, fmt.Errorf("deleting %s %s/%s: %w", o.kind, ns, o.name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return summarize(deleted), withNext(err, fmt.Sprintf("Run it again, or delete them with 'kubectl -n %s delete secrets,configmaps -l %s'.", ns, stateSelector))
	}
	return summarize(deleted), nil
}
