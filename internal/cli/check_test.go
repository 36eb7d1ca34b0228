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

	deploy := func(name string, available int32) {
		t.Helper()
		replicas := int32(1)
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
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, ReadyReplicas: available, AvailableReplicas: available}
		if _, err := cs.AppsV1().Deployments(ns).UpdateStatus(t.Context(), d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	deploy("marblerun-coordinator", 1)
	e.golden("check-no-injector", e.ok(append([]string{"check", "--timeout", "5"}, kc...)...).stdout)

	deploy("marble-injector", 0)
	r := e.fail([]string{"marble-injector is not ready after 1s", "kubectl -n " + ns + " describe deployment marble-injector"},
		append([]string{"check", "--timeout", "1"}, kc...)...)
	e.golden("check-not-ready", r.stdout)
}

// TestCheckTimeoutBound refuses a --timeout that would overflow a duration,
// before it talks to any cluster.
func TestCheckTimeoutBound(t *testing.T) {
	e := newEnv(t)
	e.fail([]string{"--timeout 18446744073709551615: at most 604800 seconds"}, "check", "--timeout", "18446744073709551615", "--kubeconfig", "/nonexistent")
}
