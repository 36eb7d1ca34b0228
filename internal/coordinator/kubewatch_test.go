package coordinator_test

import (
	"encoding/hex"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/kubetest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// eventually polls cond every 50 ms until it holds, failing t after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReplicasFollowSharedState runs two Coordinators on one state in
// Secrets: what is written through A becomes visible through B without a
// write through B, since B watches the stored state.
func TestReplicasFollowSharedState(t *testing.T) {
	env := kubetest.Start(t)
	kube := coordtest.WithKubeStore(env.Kubeconfig, env.Namespace(t), "replicated-state")
	a := coordtest.Start(t, kube)
	b := coordtest.Start(t, kube)
	if got := statusCode(t, b); got != 2 {
		t.Fatalf("B before the manifest: status %d, expected 2", got)
	}

	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	a.SetManifest(t, encode(t, govManifest(admin, admin2, nobody, nil)))
	eventually(t, "B serves the manifest set through A", func() bool { return statusCode(t, b) == 3 })

	// A secret set through A is read through B; the marble, whose files
	// need it, then activates through B.
	key := []byte("0123456789abcdef")
	if r := a.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, key), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("setting secrets through A: %d %s", r.Code, r.Message)
	}
	eventually(t, "B serves the secret set through A", func() bool {
		r := b.Do(t, http.MethodGet, "/api/v2/secrets?s=userKey", nil, admin.TLS)
		var v struct {
			Secrets map[string]struct{ Private []byte } `json:"secrets"`
		}
		return r.Code == http.StatusOK && json.Unmarshal(r.Data, &v) == nil && string(v.Secrets["userKey"].Private) == string(key)
	})
	p := activateApp(t, b, uuidA)
	if got := string(p.GetFiles()["/user.hex"]); got != hex.EncodeToString(key) {
		t.Fatalf("the marble activated through B got user key %q", got)
	}
}
