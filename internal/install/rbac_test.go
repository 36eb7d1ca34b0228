package install

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/test/kubetest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// TestChartRoleOnAPIServer applies the ServiceAccount, Role and
// RoleBinding that the chart renders for a distributed Coordinator to a
// real API server (which authorizes by RBAC) and acts as that
// ServiceAccount: the Secrets store works with nothing forbidden (state
// written twice, so that stale chunks are swept; read by another store;
// the head watched), the KEK ConfigMap can be created, read, updated and
// patched, the key API's EndpointSlices listed and watched; and everything
// else it tries is forbidden: other Secrets updated or watched, other
// ConfigMaps touched, the KEK map deleted, EndpointSlices written, objects
// of another namespace.
func TestChartRoleOnAPIServer(t *testing.T) {
	env := kubetest.Start(t)
	ctx := t.Context()
	admin := env.Clientset
	ns := env.Namespace(t)
	other := env.Namespace(t)
	const stateName, kekMap = "rbac-state", "rbac-kek"

	got, err := render(t, ns, parseValues(t, `
coordinator: {distributedDeployment: true, replicas: 3, stateSecretName: `+stateName+`, kekConfigMap: `+kekMap+`}`))
	if err != nil {
		t.Fatal(err)
	}
	objs, _ := decodeAll(t, got)
	applied := 0
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			_, err = admin.CoreV1().ServiceAccounts(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = admin.RbacV1().Roles(ns).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = admin.RbacV1().RoleBindings(ns).Create(ctx, o, metav1.CreateOptions{})
		default:
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		applied++
	}
	if applied != 3 {
		t.Fatalf("applied %d of the ServiceAccount, Role and RoleBinding", applied)
	}

	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":marblerun-coordinator"}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The Role takes a moment to reach the authorizer's cache.
	waitAllowed(t, func(ctx context.Context) error {
		_, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
		return err
	})

	t.Run("state Secrets", func(t *testing.T) {
		var logs testsupport.SyncBuffer
		open := func() *store.KubeStore {
			sealer, err := seal.NewAESGCMSealer(bytes.Repeat([]byte{7}, seal.KeySize))
			if err != nil {
				t.Fatal(err)
			}
			s, err := store.OpenKube(store.KubeOptions{
				Client: sa, Namespace: ns, Name: stateName, KEKMapName: kekMap,
				Sealers: map[seal.Mode]seal.Sealer{seal.ModeProductKey: sealer, seal.ModeUniqueKey: sealer},
				Logger:  slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		// Big enough for several chunks.
		state := map[string][]byte{"a": bytes.Repeat([]byte{1}, 1<<20), "b": []byte("b")}
		writer := open()
		if _, err := writer.Reset(ctx, state); err != nil {
			t.Fatalf("first state: %v", err)
		}
		chunks := countChunks(t, admin, ns, stateName)
		if chunks < 2 {
			t.Fatalf("%d chunk Secrets: the test wants a state of several", chunks)
		}

		watcher := open()
		if _, err := watcher.Load(ctx); err != nil {
			t.Fatalf("another store reads the state: %v", err)
		}
		changed := make(chan struct{}, 1)
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- watcher.Watch(wctx, func() {
				select {
				case changed <- struct{}{}:
				default:
				}
			})
		}()
		t.Cleanup(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("the watch ended with %v", err)
			}
		})
		// A new state under a new key: the old chunks must be swept. (A
		// watch that starts late still sees the head differ from what the
		// watcher read.)
		if _, err := writer.Reset(ctx, state); err != nil {
			t.Fatalf("second state: %v", err)
		}
		if err := writer.Commit(ctx, map[string][]byte{"b": []byte("c")}); err != nil {
			t.Fatalf("commit: %v", err)
		}
		select {
		case <-changed:
		case <-time.After(20 * time.Second):
			t.Fatalf("the watch of the head saw no change; store log:\n%s", logs.String())
		}
		if _, err := watcher.Load(ctx); err != nil {
			t.Fatalf("reading the new state: %v", err)
		}
		if n := countChunks(t, admin, ns, stateName); n > chunks+1 {
			t.Errorf("%d chunk Secrets after the second state and a commit (%d before): stale chunks were not swept", n, chunks)
		}
		if l := logs.String(); strings.Contains(l, "forbidden") || strings.Contains(l, "Forbidden") {
			t.Errorf("the store was refused something:\n%s", l)
		}
	})

	t.Run("Secrets beyond the state", func(t *testing.T) {
		sec, err := admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "someone-elses"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		timeout := int64(1)
		forbidden(t, "update another Secret", func(ctx context.Context) error {
			_, err := sa.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{})
			return err
		})
		forbidden(t, "patch the head", func(ctx context.Context) error {
			_, err := sa.CoreV1().Secrets(ns).Patch(ctx, stateName, types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{})
			return err
		})
		forbidden(t, "watch all Secrets", func(ctx context.Context) error {
			w, err := sa.CoreV1().Secrets(ns).Watch(ctx, metav1.ListOptions{TimeoutSeconds: &timeout})
			if err == nil {
				w.Stop()
			}
			return err
		})
		forbidden(t, "watch another Secret", func(ctx context.Context) error {
			w, err := sa.CoreV1().Secrets(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", sec.Name).String(), TimeoutSeconds: &timeout})
			if err == nil {
				w.Stop()
			}
			return err
		})
		forbidden(t, "read a Secret of another namespace", func(ctx context.Context) error {
			_, err := sa.CoreV1().Secrets(other).List(ctx, metav1.ListOptions{})
			return err
		})
	})

	t.Run("KEK ConfigMap", func(t *testing.T) {
		// The stores above created the map and wrote their entries
		// through the Role: create, get and update are allowed.
		cm, err := sa.CoreV1().ConfigMaps(ns).Get(ctx, kekMap, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the KEK map the stores wrote: %v", err)
		}
		entries := len(cm.BinaryData)
		if entries == 0 {
			t.Fatal("the stores wrote no entry into the KEK map")
		}
		if cm.BinaryData == nil {
			cm.BinaryData = map[string][]byte{}
		}
		cm.BinaryData["00aa"] = []byte{1, 2, 3}
		if _, err := sa.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Errorf("update: %v", err)
		}
		patch := []byte(`[{"op":"add","path":"/binaryData/00bb","value":"BAUG"}]`)
		if _, err := sa.CoreV1().ConfigMaps(ns).Patch(ctx, kekMap, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Errorf("patch: %v", err)
		}
		got, err := sa.CoreV1().ConfigMaps(ns).Get(ctx, kekMap, metav1.GetOptions{})
		if err != nil || len(got.BinaryData) != entries+2 {
			t.Errorf("get: %v, %v", got, err)
		}
		if _, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "someone-elses"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		forbidden(t, "read another ConfigMap", func(ctx context.Context) error {
			_, err := sa.CoreV1().ConfigMaps(ns).Get(ctx, "someone-elses", metav1.GetOptions{})
			return err
		})
		forbidden(t, "patch another ConfigMap", func(ctx context.Context) error {
			_, err := sa.CoreV1().ConfigMaps(ns).Patch(ctx, "someone-elses", types.MergePatchType, []byte(`{"data":{"x":"y"}}`), metav1.PatchOptions{})
			return err
		})
		forbidden(t, "list ConfigMaps", func(ctx context.Context) error {
			_, err := sa.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
			return err
		})
		forbidden(t, "delete the KEK map", func(ctx context.Context) error {
			return sa.CoreV1().ConfigMaps(ns).Delete(ctx, kekMap, metav1.DeleteOptions{})
		})
	})

	t.Run("EndpointSlices", func(t *testing.T) {
		sel := metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=coordinator-key-api"}
		if _, err := sa.DiscoveryV1().EndpointSlices(ns).List(ctx, sel); err != nil {
			t.Errorf("list: %v", err)
		}
		timeout := int64(1)
		sel.TimeoutSeconds = &timeout
		w, err := sa.DiscoveryV1().EndpointSlices(ns).Watch(ctx, sel)
		if err != nil {
			t.Errorf("watch: %v", err)
		} else {
			w.Stop()
		}
		forbidden(t, "create an EndpointSlice", func(ctx context.Context) error {
			_, err := sa.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Name: "fake"}, AddressType: discoveryv1.AddressTypeIPv4,
			}, metav1.CreateOptions{})
			return err
		})
		forbidden(t, "list EndpointSlices of another namespace", func(ctx context.Context) error {
			_, err := sa.DiscoveryV1().EndpointSlices(other).List(ctx, metav1.ListOptions{})
			return err
		})
	})
}

// countChunks counts the chunk Secrets of a state.
func countChunks(t *testing.T, cs kubernetes.Interface, ns, state string) int {
	t.Helper()
	list, err := cs.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: StateLabel + "=" + state + ",marblemesh.io/object=chunk"})
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

// waitAllowed retries f until the API server allows it.
func waitAllowed(t *testing.T, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for {
		err := f(ctx)
		if err == nil {
			return
		}
		if !apierrors.IsForbidden(err) || ctx.Err() != nil {
			t.Fatalf("the Role never took effect: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// forbidden wants f refused by authorization.
func forbidden(t *testing.T, what string, f func(context.Context) error) {
	t.Helper()
	if err := f(t.Context()); !apierrors.IsForbidden(err) {
		t.Errorf("%s: got %v, want Forbidden", what, err)
	}
}
