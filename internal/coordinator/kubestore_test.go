package coordinator_test

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/kubetest"
)

// TestRestartKeepsStateInSecrets is TestRestartKeepsState with the state
// in Secrets of a real kube-apiserver: the manifest, the root, per-marble
// keys and activation counts survive a restart, and the metrics name the
// store.
func TestRestartKeepsStateInSecrets(t *testing.T) {
	env := kubetest.Start(t)
	ns := env.Namespace(t)
	kube := coordtest.WithKubeStore(env.Kubeconfig, ns, "coord-state")

	c := coordtest.Start(t, kube, coordtest.WithPrometheus())
	c.SetManifest(t, readManifest(t))
	root := c.RootCertificate()
	before, err := activate(t, c, "backend", uuidA)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := activate(t, c, "frontend", uuidA); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get("http://" + c.Server.PrometheusAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(text), `coordinator_store_info{backend="k8s-secret"} 1`) {
		t.Errorf("metrics do not name the store:\n%s", text)
	}
	for _, m := range []string{`coordinator_store_conflicts_total 0`, `coordinator_store_loads_total{kind="incremental"}`, `coordinator_store_loads_total{kind="full"}`} {
		if !strings.Contains(string(text), m) {
			t.Errorf("metrics lack %s:\n%s", m, text)
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	head, err := env.Clientset.CoreV1().Secrets(ns).Get(t.Context(), "coord-state", metav1.GetOptions{})
	if err != nil || head.Labels["marblemesh.io/state"] != "coord-state" {
		t.Fatalf("the state's head Secret: %v %v", head, err)
	}

	c2 := coordtest.Start(t, kube)
	if got := statusCode(t, c2); got != 3 {
		t.Fatalf("status after restart = %d", got)
	}
	if !c2.RootCertificate().Equal(root) {
		t.Fatal("root certificate changed across restart")
	}
	after, err := activate(t, c2, "backend", uuidA)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before["/etc/backend/own.hex"], after["/etc/backend/own.hex"]) {
		t.Fatal("per-marble key changed across restart for the same UUID")
	}
	if _, err := activate(t, c2, "frontend", uuidA); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("activation count lost across restart: %v", err)
	}
}

// TestFileStoreMetric: the file store stays the default and says so.
func TestFileStoreMetric(t *testing.T) {
	c := coordtest.Start(t, coordtest.WithPrometheus())
	resp, err := http.Get("http://" + c.Server.PrometheusAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(text), `coordinator_store_info{backend="file"} 1`) {
		t.Errorf("metrics do not name the file store:\n%s", text)
	}
}

// TestStartupManifestRaceOnSharedState starts three Coordinators at once on
// one state in Secrets, each with the same startup manifest: whichever sets
// it first, every one starts and serves it with the same root. A different
// startup manifest is still refused.
func TestStartupManifestRaceOnSharedState(t *testing.T) {
	env := kubetest.Start(t)
	kube := coordtest.WithKubeStore(env.Kubeconfig, env.Namespace(t), "shared-state")
	path := filepath.Join(t.TempDir(), "manifest.json")
	if err := os.WriteFile(path, readManifest(t), 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 3
	started := make(chan *coordtest.Coordinator, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			c, err := coordtest.TryStart(t, kube, coordtest.WithStartupManifest(path))
			if err != nil {
				errs <- err
				return
			}
			started <- c
		}()
	}
	var cs []*coordtest.Coordinator
	for range n {
		select {
		case err := <-errs:
			t.Errorf("a Coordinator did not start: %v", err)
		case c := <-started:
			cs = append(cs, c)
		}
	}
	if t.Failed() {
		return
	}
	for i, c := range cs {
		if got := statusCode(t, c); got != 3 {
			t.Errorf("Coordinator %d: status %d, expected 3", i, got)
		}
		if !c.RootCertificate().Equal(cs[0].RootCertificate()) {
			t.Errorf("Coordinator %d serves another root", i)
		}
	}
	other := bytes.Replace(readManifest(t), []byte(`"--serve"`), []byte(`"--other"`), 1)
	if err := os.WriteFile(path, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := coordtest.TryStart(t, kube, coordtest.WithStartupManifest(path)); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Fatalf("a different startup manifest: expected a refusal, found %v", err)
	}
}
