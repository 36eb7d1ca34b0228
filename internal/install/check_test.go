package install

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/marblemesh/marblemesh/test/kubetest"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

// createDeployment creates a Deployment named name with replicas and sets
// its status to available of them.
func createDeployment(t *testing.T, cs kubernetes.Interface, ns, name string, replicas, available int32) {
	t.Helper()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.com/c:1"}}},
			},
		},
	}
	d, err := cs.AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setAvailable(t, cs, d, available)
}

func setAvailable(t *testing.T, cs kubernetes.Interface, d *appsv1.Deployment, available int32) {
	t.Helper()
	d.Status = appsv1.DeploymentStatus{
		ObservedGeneration: d.Generation,
		Replicas:           *d.Spec.Replicas,
		UpdatedReplicas:    *d.Spec.Replicas,
		ReadyReplicas:      available,
		AvailableReplicas:  available,
	}
	if _, err := cs.AppsV1().Deployments(d.Namespace).UpdateStatus(t.Context(), d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestWaiter(t *testing.T) {
	env := kubetest.Start(t)
	cs := env.Clientset
	ctx := t.Context()

	t.Run("not installed", func(t *testing.T) {
		ns := env.Namespace(t)
		var out strings.Builder
		err := Waiter{Clientset: cs, Namespace: ns, Out: &out, Interval: 10 * time.Millisecond}.Wait(ctx, 5*time.Second)
		var ie *Error
		if !errors.Is(err, ErrNotInstalled) || !errors.As(err, &ie) || !strings.Contains(ie.Next, "marblerun install") {
			t.Errorf("got %v", err)
		}
		want := "marble-injector is not installed in namespace " + ns + "\nmarblerun-coordinator is not installed in namespace " + ns + "\n"
		if out.String() != want {
			t.Errorf("output %q, want %q", out.String(), want)
		}
	})

	t.Run("ready", func(t *testing.T) {
		ns := env.Namespace(t)
		createDeployment(t, cs, ns, InjectorDeployment, 1, 1)
		createDeployment(t, cs, ns, CoordinatorDeployment, 1, 1)
		var out strings.Builder
		if err := (Waiter{Clientset: cs, Namespace: ns, Out: &out, Interval: 10 * time.Millisecond}).Wait(ctx, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if want := "marble-injector pods ready: 1/1\nmarblerun-coordinator pods ready: 1/1\n"; out.String() != want {
			t.Errorf("output %q, want %q", out.String(), want)
		}
	})

	t.Run("becomes ready", func(t *testing.T) {
		ns := env.Namespace(t)
		createDeployment(t, cs, ns, CoordinatorDeployment, 2, 0)
		out := &testsupport.SyncBuffer{}
		done := make(chan error, 1)
		go func() {
			done <- Waiter{Clientset: cs, Namespace: ns, Out: out, Interval: 10 * time.Millisecond}.Wait(ctx, 20*time.Second)
		}()
		waitFor(t, out, "marblerun-coordinator pods ready: 0/2\n")
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, CoordinatorDeployment, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		setAvailable(t, cs, d, 1)
		waitFor(t, out, "marblerun-coordinator pods ready: 1/2\n")
		d, err = cs.AppsV1().Deployments(ns).Get(ctx, CoordinatorDeployment, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		setAvailable(t, cs, d, 2)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		want := "marble-injector is not installed in namespace " + ns + "\n" +
			"marblerun-coordinator pods ready: 0/2\nmarblerun-coordinator pods ready: 1/2\nmarblerun-coordinator pods ready: 2/2\n"
		if out.String() != want {
			t.Errorf("output %q, want %q", out.String(), want)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		ns := env.Namespace(t)
		createDeployment(t, cs, ns, InjectorDeployment, 1, 0)
		err := Waiter{Clientset: cs, Namespace: ns, Interval: 10 * time.Millisecond}.Wait(ctx, 300*time.Millisecond)
		var ie *Error
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), "marble-injector is not ready after 300ms") || !strings.Contains(ie.Next, "--timeout") {
			t.Errorf("got %v", err)
		}
	})
}

// waitFor waits until out holds want.
func waitFor(t *testing.T, out *testsupport.SyncBuffer, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for !strings.Contains(out.String(), want) {
		select {
		case <-ctx.Done():
			t.Fatalf("output %q never held %q", out.String(), want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// coordinatorPod is a Pod of the Coordinator's Deployment (labels app=
// marblerun-coordinator, as createDeployment makes them) on node, ready or
// not, with restarts.
func coordinatorPod(name, node string, ready bool, restarts int32, waiting string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "mr", Labels: map[string]string{"app": CoordinatorDeployment}},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}}
	cs := corev1.ContainerStatus{Name: "coordinator", RestartCount: restarts}
	if waiting != "" {
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: waiting}
	}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
	return p
}

// TestWaiterReplicas: the Coordinator's replicas are listed one by one
// (name, node, readiness, restarts), again whenever one changes, and the
// wait ends when all are available.
func TestWaiterReplicas(t *testing.T) {
	replicas := int32(3)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: CoordinatorDeployment, Namespace: "mr"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": CoordinatorDeployment}},
		},
		Status: appsv1.DeploymentStatus{Replicas: 3, AvailableReplicas: 1},
	}
	pending := coordinatorPod("marblerun-coordinator-c", "", false, 0, "")
	pending.Status.Phase = corev1.PodPending
	cs := fake.NewClientset(d,
		coordinatorPod("marblerun-coordinator-b", "node-2", false, 4, "CrashLoopBackOff"),
		coordinatorPod("marblerun-coordinator-a", "node-1", true, 0, ""),
		pending,
		// Not the Coordinator's.
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "mr", Labels: map[string]string{"app": "other"}}},
	)
	out := &testsupport.SyncBuffer{}
	w := Waiter{Clientset: cs, Namespace: "mr", Out: out, Interval: 5 * time.Millisecond}
	err := w.Wait(t.Context(), 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "marblerun-coordinator is not ready after 50ms (marblerun-coordinator pods ready: 1/3)") {
		t.Errorf("got %v", err)
	}
	want := "marble-injector is not installed in namespace mr\n" +
		"marblerun-coordinator pods ready: 1/3\n" +
		"  marblerun-coordinator-a  node node-1     ready                         restarts 0\n" +
		"  marblerun-coordinator-b  node node-2     not ready (CrashLoopBackOff)  restarts 4\n" +
		"  marblerun-coordinator-c  node (no node)  not ready (Pending)           restarts 0\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}

	// The failing replica recovers, the pending one is scheduled and
	// becomes ready: each change is shown, then the wait ends.
	out = &testsupport.SyncBuffer{}
	w.Out = out
	done := make(chan error, 1)
	go func() { done <- w.Wait(t.Context(), 20*time.Second) }()
	waitFor(t, out, "not ready (Pending)")
	set := func(p *corev1.Pod) {
		t.Helper()
		if _, err := cs.CoreV1().Pods("mr").Update(t.Context(), p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	set(coordinatorPod("marblerun-coordinator-b", "node-2", true, 5, ""))
	waitFor(t, out, "  marblerun-coordinator-b  node node-2     ready                restarts 5\n")
	set(coordinatorPod("marblerun-coordinator-c", "node-3", true, 0, ""))
	d.Status.AvailableReplicas = 3
	if _, err := cs.AppsV1().Deployments("mr").UpdateStatus(t.Context(), d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	last := "marblerun-coordinator pods ready: 3/3\n" +
		"  marblerun-coordinator-a  node node-1  ready  restarts 0\n" +
		"  marblerun-coordinator-b  node node-2  ready  restarts 5\n" +
		"  marblerun-coordinator-c  node node-3  ready  restarts 0\n"
	if !strings.HasSuffix(out.String(), last) {
		t.Errorf("output:\n%s\nwant it to end in:\n%s", out, last)
	}
}

// TestWaiterHeartbeat: while nothing changes, the wait says every
// Heartbeat for which Deployment and Pods it still waits; the injector's
// Pods are listed as the Coordinator's are.
func TestWaiterHeartbeat(t *testing.T) {
	one := int32(1)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: InjectorDeployment, Namespace: "mr"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": InjectorDeployment}},
		},
		Status: appsv1.DeploymentStatus{Replicas: 1},
	}
	pod := coordinatorPod("marble-injector-x", "node-1", false, 0, "ContainerCreating")
	pod.Labels = map[string]string{"app": InjectorDeployment}
	cs := fake.NewClientset(d, pod)
	out := &testsupport.SyncBuffer{}
	w := Waiter{Clientset: cs, Namespace: "mr", Out: out, Interval: 5 * time.Millisecond, Heartbeat: 40 * time.Millisecond}
	if err := w.Wait(t.Context(), 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "marble-injector is not ready after 300ms") {
		t.Fatalf("got %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	head := []string{
		"marble-injector pods ready: 0/1",
		"  marble-injector-x  node node-1  not ready (ContainerCreating)  restarts 0",
	}
	if len(lines) < 4 || !slices.Equal(lines[:2], head) {
		t.Fatalf("output:\n%s", out)
	}
	for _, l := range lines[2:] {
		if !strings.HasPrefix(l, "  still waiting for marble-injector after ") ||
			!strings.HasSuffix(l, ": 0/1 pods ready; not ready: marble-injector-x (ContainerCreating)") {
			t.Errorf("heartbeat line %q", l)
		}
	}
	if len(lines) > 12 {
		t.Errorf("%d lines in 300ms with a 40ms heartbeat:\n%s", len(lines), out)
	}
}

func TestStillWaiting(t *testing.T) {
	for _, tc := range []struct {
		available, want int32
		notReady        []string
		line            string
	}{
		{0, 1, []string{"a (Pending)", "b"}, "  still waiting for marblerun-coordinator after 12s: 0/1 pods ready; not ready: a (Pending), b"},
		{0, 2, nil, "  still waiting for marblerun-coordinator after 12s: 0/2 pods ready; no Pod of it yet"},
		{2, 2, nil, "  still waiting for marblerun-coordinator after 12s: 2/2 pods ready"},
	} {
		if got := stillWaiting(CoordinatorDeployment, tc.available, tc.want, tc.notReady, 12400*time.Millisecond); got != tc.line {
			t.Errorf("stillWaiting = %q, want %q", got, tc.line)
		}
	}
}
