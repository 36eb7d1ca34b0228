package cli

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/test/kubetest"
)

// TestCheck runs check against Deployments whose status the test sets.
func TestCheck(t *testing.T) {
	kube := kubetest.Start(t)
	e := newEnv(t)
	ns := kube.Namespace(t)
	e.mask(ns, "<ns>")
	kc := []string{"--kubeconfig", kube.Kubeconfig, "-n", ns}
	cs := kube.Clientset

	deploy := func(ns, name string, replicas, available int32) {
		t.Helper()
		labels := map[string]string{"app": name}
		d, err := cs.AppsV1().Deployments(ns).Create(t.Context(), &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.com/c:1"}}},
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: replicas, ReadyReplicas: available, AvailableReplicas: available}
		if _, err := cs.AppsV1().Deployments(ns).UpdateStatus(t.Context(), d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	deploy(ns, "marblerun-coordinator", 1, 1)
	e.golden("check-no-injector", e.ok(append([]string{"check", "--timeout", "5"}, kc...)...).stdout)

	deploy(ns, "marble-injector", 1, 0)
	r := e.fail([]string{"marble-injector is not ready after 1s", "kubectl -n " + ns + " describe deployment marble-injector"},
		append([]string{"check", "--timeout", "1"}, kc...)...)
	e.golden("check-not-ready", r.stdout)

	t.Run("replicas", func(t *testing.T) {
		ns := kube.Namespace(t)
		e := e.sub(t)
		e.mask(ns, "<ns>")
		kc := []string{"--kubeconfig", kube.Kubeconfig, "-n", ns}
		deploy(ns, "marble-injector", 1, 1)
		deploy(ns, "marblerun-coordinator", 3, 2)
		pod := func(name, node string, ready bool, restarts int32) {
			t.Helper()
			p, err := cs.CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "marblerun-coordinator"}},
				Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "coordinator", Image: "example.com/c:1"}}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			status := corev1.ConditionFalse
			if ready {
				status = corev1.ConditionTrue
			}
			p.Status = corev1.PodStatus{
				Phase:             corev1.PodRunning,
				Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "coordinator", Image: "example.com/c:1", ImageID: "x", RestartCount: restarts, Ready: ready}},
			}
			if !ready {
				p.Status.ContainerStatuses[0].State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}
			}
			if _, err := cs.CoreV1().Pods(ns).UpdateStatus(t.Context(), p, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		pod("marblerun-coordinator-7f9c-a1", "node-1", true, 0)
		pod("marblerun-coordinator-7f9c-b2", "node-2", true, 1)
		pod("marblerun-coordinator-7f9c-c3", "node-3", false, 6)
		r := e.fail([]string{"marblerun-coordinator is not ready after 1s (marblerun-coordinator pods ready: 2/3)"}, append([]string{"check", "--timeout", "1"}, kc...)...)
		e.golden("check-replicas-not-ready", r.stdout)

		pod("marblerun-coordinator-7f9c-d4", "node-3", true, 0)
		if err := cs.CoreV1().Pods(ns).Delete(t.Context(), "marblerun-coordinator-7f9c-c3", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		d, err := cs.AppsV1().Deployments(ns).Get(t.Context(), "marblerun-coordinator", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Status.AvailableReplicas, d.Status.ReadyReplicas = 3, 3
		if _, err := cs.AppsV1().Deployments(ns).UpdateStatus(t.Context(), d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.golden("check-replicas", e.ok(append([]string{"check", "--timeout", "5"}, kc...)...).stdout)
	})
}

// TestCheckTimeoutBound refuses a --timeout that would overflow a duration,
// before it talks to any cluster.
func TestCheckTimeoutBound(t *testing.T) {
	e := newEnv(t)
	e.fail([]string{"--timeout 18446744073709551615: at most 604800 seconds"}, "check", "--timeout", "18446744073709551615", "--kubeconfig", "/nonexistent")
}
