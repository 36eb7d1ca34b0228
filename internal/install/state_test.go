package install

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestDeleteState: only the state's Secrets go, and only once no
// Coordinator Pod is left to write them.
func TestDeleteState(t *testing.T) {
	secret := func(name string, labels map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "mr", Labels: labels}}
	}
	elsewhere := secret("other-ns", map[string]string{"app.kubernetes.io/managed-by": "marblemesh", "marblemesh.io/state": "marblerun-state"})
	elsewhere.Namespace = "elsewhere"
	state := map[string]string{"app.kubernetes.io/managed-by": "marblemesh", "marblemesh.io/state": "marblerun-state"}
	cs := fake.NewClientset(
		secret("marblerun-state", state),
		secret("marblerun-state-1-abc-0", state),
		secret("unrelated", map[string]string{"marblemesh.io/state": "marblerun-state"}),
		elsewhere,
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "coordinator-abc", Namespace: "mr",
			Labels: map[string]string{"app.kubernetes.io/part-of": "marblerun", "app.kubernetes.io/component": "coordinator"}}},
	)

	n, err := deleteState(t.Context(), cs, "mr", 500*time.Millisecond)
	if err == nil || n != 0 || !strings.Contains(err.Error(), "Coordinator's Pods in namespace mr are still there (1") {
		t.Fatalf("with a Coordinator Pod: %d, %v", n, err)
	}
	if err := cs.CoreV1().Pods("mr").Delete(t.Context(), "coordinator-abc", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err = deleteState(t.Context(), cs, "mr", time.Second)
	if err != nil || n != 2 {
		t.Fatalf("deleted %d: %v", n, err)
	}
	for ns, want := range map[string][]string{"mr": {"unrelated"}, "elsewhere": {"other-ns"}} {
		list, err := cs.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, s := range list.Items {
			left = append(left, s.Name)
		}
		if !slices.Equal(left, want) {
			t.Errorf("Secrets left in %s: %v, want %v", ns, left, want)
		}
	}
}
