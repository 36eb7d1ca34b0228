package coordinator_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/test/coordtest"
)

// bombManifest is the test manifest with a template in the backend's
// files that doubles its output depth times from a 1 KiB leaf, as the
// body of a v2 manifest request.
func bombManifest(t *testing.T, depth int) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readManifest(t), &m); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `{{define "l0"}}%s{{end}}`, strings.Repeat("x", 1024))
	for i := 1; i <= depth; i++ {
		fmt.Fprintf(&b, `{{define "l%d"}}{{template "l%d"}}{{template "l%d"}}{{end}}`, i, i-1, i-1)
	}
	fmt.Fprintf(&b, `{{template "l%d"}}`, depth)
	files := m["Marbles"].(map[string]any)["backend"].(map[string]any)["Parameters"].(map[string]any)["Files"].(map[string]any)
	files["/etc/backend/bomb"] = b.String()
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(map[string][]byte{"manifest": raw}) // the v2 request body
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestManifestBombRefusedBeforeWork: once a manifest is set, anyone's
// POST of another manifest, and an update from a caller who is no user,
// are refused before the manifest is parsed, checked or dry-run, so a
// manifest whose templates explode costs nothing.
func TestManifestBombRefusedBeforeWork(t *testing.T) {
	c := coordtest.Start(t)
	c.SetManifest(t, readManifest(t))
	bomb := bombManifest(t, 18) // 256 MiB of output if it were rendered
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for range 5 {
		code, body := call(t, c, http.MethodPost, "/api/v2/manifest", bomb)
		if code != http.StatusBadRequest || !strings.Contains(body.Message, "a manifest is already set") {
			t.Fatalf("POST manifest in state 3: %d %q", code, body.Message)
		}
		// An update needs a user: without one it is refused unread.
		code, body = call(t, c, http.MethodPost, "/api/v2/update", bomb)
		if code != http.StatusUnauthorized {
			t.Fatalf("POST update without a user certificate: %d %q", code, body.Message)
		}
	}
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("ten refused requests allocated %d MiB", alloc>>20)
	}
	if took > 2*time.Second {
		t.Errorf("ten refused requests took %v", took)
	}
}

// TestManifestBombRefusedByName: a manifest whose template explodes is
// refused in state 2 with its marble and field named, and nothing is set.
func TestManifestBombRefusedByName(t *testing.T) {
	c := coordtest.Start(t)
	code, body := call(t, c, http.MethodPost, "/api/v2/manifest", bombManifest(t, 40))
	if code != http.StatusBadRequest {
		t.Fatalf("POST exploding manifest: %d %q", code, body.Message)
	}
	for _, want := range []string{`Marbles["backend"].Parameters.Files["/etc/backend/bomb"]`, "exceeds 1048576 bytes"} {
		if !strings.Contains(body.Message, want) {
			t.Errorf("message lacks %q: %q", want, body.Message)
		}
	}
	if got := statusCode(t, c); got != 2 {
		t.Errorf("state after the refused manifest: %d", got)
	}
}
