package coordinator

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"k8s.io/klog/v2"

	"github.com/marblemesh/marblemesh/internal/logging"
)

// TestKubernetesClientLogIsJSON: what client-go logs through klog comes out
// as the Coordinator's JSON lines while routed, and no longer after.
// klog is process-wide, so this test does not run in parallel.
func TestKubernetesClientLogIsJSON(t *testing.T) {
	var buf bytes.Buffer
	stop := routeKubernetesClientLog(logging.NewJSON(&buf, slog.LevelInfo).With("simulation", true))
	klog.ErrorS(nil, "watch of Secrets failed", "namespace", "marblerun")
	klog.InfoS("throttled", "wait", "1s")
	stop()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines:\n%s", buf.String())
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("%v: %s", err, lines[0])
	}
	if first["msg"] != "watch of Secrets failed" || first["level"] != "ERROR" || first["component"] != "kubernetes-client" ||
		first["namespace"] != "marblerun" || first["simulation"] != true {
		t.Fatalf("klog line %s", lines[0])
	}
	buf.Reset()
	klog.InfoS("after the route")
	klog.Flush()
	if buf.Len() != 0 {
		t.Fatalf("klog still routed after stop: %s", buf.String())
	}
}
