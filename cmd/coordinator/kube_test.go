package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/test/kubetest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// TestDistributedStateSurvivesRestart runs the Coordinator in distributed
// mode against a real kube-apiserver (reached through KUBECONFIG): a
// manifest set on the first run is still set after a restart, and the
// state lives in labelled Secrets of the namespace, not in a folder.
func TestDistributedStateSurvivesRestart(t *testing.T) {
	env := kubetest.Start(t)
	ns := env.Namespace(t)
	work := t.TempDir()
	settings := []string{
		"EDG_DISTRIBUTED_COORDINATOR=1",
		"EDG_K8S_NAMESPACE=" + ns,
		"KUBECONFIG=" + env.Kubeconfig,
		"EDG_CWD=" + work, // where a file store would put its folder
	}

	p, clientAddr := startCoordinatorWith(t, settings...)
	if got := status(t, clientAddr); got != 2 {
		t.Fatalf("status of a fresh Coordinator = %d, want 2 (accepting a manifest)\n%s", got, p.Output())
	}
	manifest := `{"Packages": {"app": {"UniqueID": "6b2822ac2585040d4b9397675d54977a71ef292ab5b3c0a6acceca26074ae585"}}, "Marbles": {"app": {"Package": "app"}}}`
	setManifest(t, clientAddr, manifest)
	if got := status(t, clientAddr); got != 3 {
		t.Fatalf("status after setting the manifest = %d, want 3\n%s", got, p.Output())
	}
	p.Terminate(t, 30*time.Second)
	out := p.Output()
	// One format: the Kubernetes client's lines are JSON too, and no key
	// appears twice.
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "{") {
			t.Errorf("a line that is not JSON: %q", line)
		}
	}
	testsupport.JSONLogLines(t, out)
	for _, want := range []string{`"store":"k8s-secret","namespace":"` + ns + `","stateSecret":"marblerun-state"`, `"kubeconfig":"` + env.Kubeconfig + `"`} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %s:\n%s", want, out)
		}
	}

	list, err := env.Clientset.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "marblemesh.io/state=marblerun-state"})
	if err != nil {
		t.Fatal(err)
	}
	head := false
	for _, s := range list.Items {
		if s.Name == "marblerun-state" && s.Labels["marblemesh.io/object"] == "head" {
			head = true
		}
	}
	if !head || len(list.Items) < 2 {
		names := make([]string, 0, len(list.Items))
		for _, s := range list.Items {
			names = append(names, s.Name)
		}
		t.Fatalf("Secrets of the state in %s: %v, want the head marblerun-state and its chunks", ns, names)
	}
	if entries, err := os.ReadDir(work); err != nil || len(entries) != 0 {
		t.Errorf("the Coordinator wrote into its working folder: %v %v", entries, err)
	}

	p2, clientAddr2 := startCoordinatorWith(t, settings...)
	if got := status(t, clientAddr2); got != 3 {
		t.Fatalf("status after a restart = %d, want 3\n%s", got, p2.Output())
	}
	resp, err := client().Get("https://" + clientAddr2 + "/api/v2/manifest")
	if err != nil {
		t.Fatal(err)
	}
	var got wire.Success[wire.ManifestV2]
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got.Data.Manifest, []byte(manifest)) {
		t.Fatalf("manifest after a restart: %q (%v), want the one set before", got.Data.Manifest, err)
	}
	p2.Terminate(t, 30*time.Second)
}

func client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS}}
}

// status returns the Coordinator's state code.
func status(t *testing.T, clientAddr string) int {
	t.Helper()
	resp, err := client().Get("https://" + clientAddr + "/api/v2/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st wire.Success[wire.StatusV2]
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st.Data.Code
}

// setManifest sets a manifest through the client API.
func setManifest(t *testing.T, clientAddr, manifest string) {
	t.Helper()
	body, err := json.Marshal(wire.ManifestRequest{Manifest: []byte(manifest)})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client().Post("https://"+clientAddr+"/api/v2/manifest", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		answer, _ := io.ReadAll(resp.Body)
		t.Fatalf("setting the manifest: %s %s", resp.Status, answer)
	}
}
