package coordinator_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/kubetest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// readyz returns the answer of GET /readyz.
func readyz(t *testing.T, c *coordtest.Coordinator) (int, string) {
	t.Helper()
	return probe(t, c, "/readyz")
}

// replicaStatus returns the replica that answered GET /api/v2/status.
func replicaStatus(t *testing.T, c *coordtest.Coordinator) wire.ReplicaStatus {
	t.Helper()
	r := c.Do(t, http.MethodGet, "/api/v2/status", nil)
	var s wire.StatusV2
	if r.Code != http.StatusOK || json.Unmarshal(r.Data, &s) != nil || s.Replica == nil {
		t.Fatalf("status: %d %s %s", r.Code, r.Message, r.Data)
	}
	return *s.Replica
}

// metric returns the line of the named gauge on c's /metrics.
func metric(t *testing.T, c *coordtest.Coordinator, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + c.Server.PrometheusAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, name+" ") {
			return l
		}
	}
	t.Fatalf("no metric %s", name)
	return ""
}

// TestReplicaLosesAPIServer runs two Coordinators on one state in Secrets,
// B reaching the API server through a proxy that the test cuts: B is not
// Ready within a few seconds and says why, refuses writes as Unavailable
// and goes on with activations that need no write, while A takes writes;
// once the proxy forwards again B serves what A wrote and is Ready.
func TestReplicaLosesAPIServer(t *testing.T) {
	env := kubetest.Start(t)
	ns := env.Namespace(t)
	a := coordtest.Start(t, coordtest.WithKubeStore(env.Kubeconfig, ns, "cut-state"), coordtest.WithReplicaName("a"))
	proxied, proxy := proxiedKubeconfig(t, env.Kubeconfig)
	b := coordtest.Start(t, coordtest.WithKubeStore(proxied, ns, "cut-state"), coordtest.WithReplicaName("b"), coordtest.WithPrometheus())

	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	m := govManifest(admin, admin2, nobody, nil)
	sub(m, "Marbles")["limited"] = map[string]any{"Package": "app", "MaxActivations": 10}
	a.SetManifest(t, encode(t, m))
	if r := a.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("0123456789abcdef")), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("setting secrets through A: %d %s", r.Code, r.Message)
	}
	eventually(t, "B serves the manifest and the secret", func() bool {
		r := b.Do(t, http.MethodGet, "/api/v2/secrets?s=userKey", nil, admin.TLS)
		return r.Code == http.StatusOK
	})
	eventually(t, "B is Ready", func() bool { code, _ := readyz(t, b); return code == http.StatusOK })
	if rs := replicaStatus(t, b); rs.Name != "b" || !rs.Ready || rs.Degraded || rs.StoreBackend != "k8s-secret" || rs.Generation == 0 {
		t.Fatalf("B before the cut: %+v", rs)
	}
	if got := metric(t, b, "coordinator_ready"); got != "coordinator_ready 1" {
		t.Fatalf("B before the cut: %s", got)
	}
	if _, err := activate(t, b, "limited", uuidA); err != nil {
		t.Fatalf("a limited activation through B before the cut: %v", err)
	}

	proxy.Cut()
	cutAt := time.Now()
	deadline := cutAt.Add(10 * time.Second)
	for {
		code, body := readyz(t, b)
		if code == http.StatusServiceUnavailable {
			if !strings.HasPrefix(body, "not ready: ") || len(body) < len("not ready: ")+10 {
				t.Fatalf("GET /readyz on B after the cut: %q", body)
			}
			t.Logf("B not Ready %v after the cut: %s", time.Since(cutAt).Round(time.Millisecond), strings.TrimSpace(body))
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("B is still Ready 10 s after it lost the API server")
		}
		time.Sleep(50 * time.Millisecond)
	}
	rs := replicaStatus(t, b)
	if rs.Ready || !rs.Degraded || rs.Reason == "" {
		t.Fatalf("B's status after the cut: %+v", rs)
	}
	if statusCode(t, b) != 3 {
		t.Fatal("B's state code changed after the cut")
	}
	if got := metric(t, b, "coordinator_ready"); got != "coordinator_ready 0" {
		t.Fatalf("B after the cut: %s", got)
	}
	if got := metric(t, b, "coordinator_state_current"); got != "coordinator_state_current 0" {
		t.Fatalf("B after the cut: %s", got)
	}

	// Writes through B are refused at once as Unavailable.
	start := time.Now()
	r := b.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("bbbbbbbbbbbbbbbb")), admin.TLS)
	if r.Code != http.StatusServiceUnavailable || !strings.Contains(r.Message, "not current with the shared state") {
		t.Fatalf("a secret set through B after the cut: %d %s", r.Code, r.Message)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the refused secret set took %v", d)
	}
	update := govManifest(admin, admin2, nobody, nil)
	sub(update, "Marbles")["limited"] = map[string]any{"Package": "app", "MaxActivations": 10}
	sub(sub(update, "Packages"), "app")["SecurityVersion"] = 2
	r = b.Do(t, http.MethodPost, "/api/v2/update-manifest", manifestBody(t, encode(t, update)), admin.TLS)
	if r.Code != http.StatusServiceUnavailable || !strings.Contains(r.Message, "not current with the shared state") {
		t.Fatalf("a manifest update through B after the cut: %d %s", r.Code, r.Message)
	}
	// An activation that needs no write goes on from memory; a limited
	// one needs a write.
	activateApp(t, b, uuidA)
	if _, err := activate(t, b, "limited", uuidA); status.Code(err) != codes.Unavailable {
		t.Fatalf("a limited activation through B after the cut: %v", err)
	}

	// A takes writes meanwhile.
	key := []byte("aaaaaaaaaaaaaaaa")
	if r := a.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, key), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("a secret set through A during the cut: %d %s", r.Code, r.Message)
	}
	if code, _ := readyz(t, a); code != http.StatusOK {
		t.Fatal("A is not Ready during B's cut")
	}

	proxy.Restore()
	restoredAt := time.Now()
	eventually(t, "B is Ready again", func() bool { code, _ := readyz(t, b); return code == http.StatusOK })
	t.Logf("B Ready %v after the proxy forwards again", time.Since(restoredAt).Round(time.Millisecond))
	r = b.Do(t, http.MethodGet, "/api/v2/secrets?s=userKey", nil, admin.TLS)
	var v struct {
		Secrets map[string]struct{ Private []byte } `json:"secrets"`
	}
	if r.Code != http.StatusOK || json.Unmarshal(r.Data, &v) != nil || string(v.Secrets["userKey"].Private) != string(key) {
		t.Fatalf("B after the reconnection serves %d %s, want the secret A set", r.Code, r.Data)
	}
	if rs := replicaStatus(t, b); !rs.Ready || rs.Degraded || rs.Reason != "" || rs.Generation != replicaStatus(t, a).Generation {
		t.Fatalf("B after the reconnection: %+v, A: %+v", rs, replicaStatus(t, a))
	}
	if _, err := activate(t, b, "limited", uuidA); err != nil {
		t.Fatalf("a limited activation through B after the reconnection: %v", err)
	}
}

// TestSingleCoordinatorReadiness: a Coordinator alone on the file store is
// Ready once started; in recovery it is not Ready and says why, but
// /readyz?exclude=recovery (the chart's readiness probe for it) answers
// 200, so that owners reach it through its Service to upload their
// recovery secrets. It is alive (/healthz) in both, never degraded, and
// reports no generation.
func TestSingleCoordinatorReadiness(t *testing.T) {
	dir := t.TempDir()
	c := coordtest.Start(t, coordtest.WithSealDir(dir), coordtest.WithSealer(coordtest.NewAESSealer(t)), coordtest.WithPrometheus())
	for _, path := range []string{"/readyz", "/readyz?exclude=recovery"} {
		if code, body := probe(t, c, path); code != http.StatusOK || body != "ready\n" {
			t.Fatalf("GET %s on a fresh Coordinator: %d %q", path, code, body)
		}
	}
	if code, body := probe(t, c, "/healthz"); code != http.StatusOK || body != "alive\n" {
		t.Fatalf("GET /healthz on a fresh Coordinator: %d %q", code, body)
	}
	want := wire.ReplicaStatus{Name: "test-coordinator", Ready: true, StoreBackend: "file"}
	if rs := replicaStatus(t, c); rs != want {
		t.Fatalf("status of a fresh Coordinator: %+v, want %+v", rs, want)
	}
	if got := metric(t, c, "coordinator_ready"); got != "coordinator_ready 1" {
		t.Fatalf("a fresh Coordinator: %s", got)
	}
	if got := metric(t, c, "coordinator_core_lock_held_seconds"); got != "coordinator_core_lock_held_seconds 0" {
		t.Fatalf("an idle Coordinator: %s", got)
	}
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	owner := testsupport.NewRecoveryKey(t)
	c.SetManifest(t, encode(t, govManifest(admin, admin2, nobody, map[string]*testsupport.RecoveryKey{"owner": owner})))
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	c = coordtest.Start(t, coordtest.WithSealDir(dir), coordtest.WithSealer(coordtest.NewAESSealer(t)), coordtest.WithPrometheus())
	if got := statusCode(t, c); got != 1 {
		t.Fatalf("status on another sealing key = %d, want recovery", got)
	}
	const reason = "the Coordinator cannot open the stored state and waits for the owners' recovery secrets"
	if code, body := probe(t, c, "/readyz"); code != http.StatusServiceUnavailable || body != "not ready: "+reason+"\n" {
		t.Fatalf("GET /readyz on a Coordinator alone in recovery: %d %q", code, body)
	}
	if code, _ := probe(t, c, "/readyz?exclude=recovery"); code != http.StatusOK {
		t.Fatalf("GET /readyz?exclude=recovery on a Coordinator alone in recovery: %d", code)
	}
	if code, _ := probe(t, c, "/healthz"); code != http.StatusOK {
		t.Fatalf("GET /healthz on a Coordinator alone in recovery: %d", code)
	}
	want = wire.ReplicaStatus{Name: "test-coordinator", Reason: reason, StoreBackend: "file"}
	if rs := replicaStatus(t, c); rs != want {
		t.Fatalf("status in recovery: %+v, want %+v", rs, want)
	}
	if got := metric(t, c, "coordinator_ready"); got != "coordinator_ready 0" {
		t.Fatalf("in recovery: %s", got)
	}
}

// probe returns the answer of GET path on c's client API.
func probe(t *testing.T, c *coordtest.Coordinator, path string) (int, string) {
	t.Helper()
	client := c.Client()
	defer client.CloseIdleConnections()
	resp, err := client.Get(c.URL(path))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}
