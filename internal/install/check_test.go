package install

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

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
