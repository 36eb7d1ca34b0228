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

// TestDeleteState: only the state's Secrets and KEK ConfigMap go, and only
// once no Coordinator Pod is left to write them.
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
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "marblerun-sealed-kek", Namespace: "mr", Labels: state}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "other-config", Namespace: "mr", Labels: map[string]string{"app.kubernetes.io/managed-by": "marblemesh"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "coordinator-abc", Namespace: "mr",
			Labels: map[string]string{"app.kubernetes.io/part-of": "marblerun", "app.kubernetes.io/component": "coordinator"}}},
	)

	kept, err := listStateObjects(t.Context(), cs, "mr")
	if err != nil {
		t.Fatal(err)
	}
	if got := summarize(kept); got.String() != "2 Secrets and 1 ConfigMap" || !slices.Equal(got.States, []string{"marblerun-state"}) {
		t.Errorf("listed %+v (%s)", got, got)
	}
	n, err := deleteState(t.Context(), cs, "mr", 500*time.Millisecond)
	if err == nil || !n.Empty() || !strings.Contains(err.Error(), "Coordinator's Pods in namespace mr are still there (1") {
		t.Fatalf("with a Coordinator Pod: %+v, %v", n, err)
	}
	if err := cs.CoreV1().Pods("mr").Delete(t.Context(), "coordinator-abc", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err = deleteState(t.Context(), cs, "mr", time.Second)
	if err != nil || n.Secrets != 2 || n.ConfigMaps != 1 {
		t.Fatalf("deleted %+v: %v", n, err)
	}
	cms, err := cs.CoreV1().ConfigMaps("mr").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cms.Items) != 1 || cms.Items[0].Name != "other-config" {
		t.Errorf("ConfigMaps left: %+v, want only other-config", cms.Items)
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

func TestStateObjectsString(t *testing.T) {
	for want, o := range map[string]StateObjects{
		"0 Secrets":                 {},
		"1 Secret":                  {Secrets: 1},
		"3 Secrets and 1 ConfigMap": {Secrets: 3, ConfigMaps: 1},
		"1 Secret and 2 ConfigMaps": {Secrets: 1, ConfigMaps: 2},
		"0 Secrets and 1 ConfigMap": {ConfigMaps: 1},
	} {
		if got := o.String(); got != want {
			t.Errorf("%+v: %q, want %q", o, got, want)
		}
	}
}
