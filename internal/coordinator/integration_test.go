package coordinator_test

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/marblemesh/marblemesh/test/coordtest"
)

const uuidA = "7e1d2f4a-0c5e-4b8b-9a8f-1d2e3f4a5b6c"

func readManifest(t testing.TB) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

type jsend struct {
	Status  string          `json:"status"`
	Data    json.RawMessage `json:"data"`
	Message string          `json:"message"`
}

func call(t *testing.T, c *coordtest.Coordinator, method, path string, body []byte) (int, jsend) {
	t.Helper()
	req, err := http.NewRequest(method, c.URL(path), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out jsend
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: not JSON: %q", method, path, raw)
	}
	return resp.StatusCode, out
}

func statusCode(t *testing.T, c *coordtest.Coordinator) int {
	t.Helper()
	code, body := call(t, c, http.MethodGet, "/api/v2/status", nil)
	if code != http.StatusOK {
		t.Fatalf("status: %d %s", code, body.Message)
	}
	var s struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body.Data, &s); err != nil {
		t.Fatal(err)
	}
	return s.Code
}

func activate(t *testing.T, c *coordtest.Coordinator, typ, uuid string) (map[string][]byte, error) {
	t.Helper()
	id, err := coordtest.NewMarbleIdentity(elliptic.P256(), typ)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := coordtest.Dial(c.MeshAddr(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := coordtest.Activate(ctx, conn, id, typ, uuid)
	if err != nil {
		return nil, err
	}
	return p.Files, nil
}

func TestActivationOverGRPC(t *testing.T) {
	c := coordtest.Start(t)
	if got := statusCode(t, c); got != 2 {
		t.Fatalf("fresh status = %d", got)
	}
	if _, err := activate(t, c, "backend", uuidA); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("activation before manifest: %v", err)
	}
	c.SetManifest(t, readManifest(t))
	if got := statusCode(t, c); got != 3 {
		t.Fatalf("status after manifest = %d", got)
	}
	files, err := activate(t, c, "backend", uuidA)
	if err != nil {
		t.Fatalf("activation: %v", err)
	}
	if len(files["/etc/backend/own.hex"]) != 64 {
		t.Fatalf("files = %v", files)
	}
	tests := []struct {
		name, typ, uuid string
		code            codes.Code
		reason          string
	}{
		{"unknown type", "nope", uuidA, codes.PermissionDenied, "unknown marble type"},
		{"bad uuid", "backend", "12345", codes.InvalidArgument, "invalid UUID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := activate(t, c, tc.typ, tc.uuid)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.reason) {
				t.Fatalf("got %v, want %v with %q", err, tc.code, tc.reason)
			}
		})
	}
	t.Run("max activations", func(t *testing.T) {
		for i := 0; i < 2; i++ {
			if _, err := activate(t, c, "frontend", uuidA); err != nil {
				t.Fatal(err)
			}
		}
		_, err := activate(t, c, "frontend", uuidA)
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("third frontend: %v", err)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		id, _ := coordtest.NewMarbleIdentity(elliptic.P256())
		id.TLS.Certificate = nil
		conn, err := coordtest.Dial(c.MeshAddr(), id)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := coordtest.Activate(ctx, conn, id, "backend", uuidA); err == nil {
			t.Fatal("activation without a client certificate succeeded")
		}
	})
}

func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	c := coordtest.Start(t, coordtest.WithSealDir(dir))
	c.SetManifest(t, readManifest(t))
	root := c.RootCertificate()
	before, err := activate(t, c, "backend", uuidA)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := activate(t, c, "frontend", uuidA); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}

	c2 := coordtest.Start(t, coordtest.WithSealDir(dir))
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

func TestCorruptStateEntersRecovery(t *testing.T) {
	dir := t.TempDir()
	c := coordtest.Start(t, coordtest.WithSealDir(dir))
	c.SetManifest(t, readManifest(t))
	root := c.RootCertificate()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	snapshot := filepath.Join(dir, "sealed_data")
	raw, err := os.ReadFile(snapshot)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-5] ^= 0x40
	if err := os.WriteFile(snapshot, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	c2 := coordtest.Start(t, coordtest.WithSealDir(dir))
	if got := statusCode(t, c2); got != 1 {
		t.Fatalf("status with corrupt state = %d, want 1 (recovery)", got)
	}
	if c2.RootCertificate().Equal(root) {
		t.Fatal("recovery mode serves the old root without having unsealed it")
	}
	if code, _ := call(t, c2, http.MethodGet, "/api/v2/quote", nil); code != http.StatusOK {
		t.Fatalf("quote in recovery: %d", code)
	}
	if err := c2.Stop(); err != nil {
		t.Fatal(err)
	}
	// Nothing was overwritten while in recovery.
	again, err := os.ReadFile(snapshot)
	if err != nil || !bytes.Equal(again, raw) {
		t.Fatal("the sealed state changed while in recovery")
	}
	// Setting a new manifest in recovery starts over.
	c3 := coordtest.Start(t, coordtest.WithSealDir(dir))
	c3.SetManifest(t, readManifest(t))
	if got := statusCode(t, c3); got != 3 {
		t.Fatalf("status after new manifest in recovery = %d", got)
	}
}

func TestClientAPI(t *testing.T) {
	c := coordtest.Start(t, coordtest.WithPrometheus())
	raw := readManifest(t)

	t.Run("before manifest", func(t *testing.T) {
		if code, body := call(t, c, http.MethodGet, "/api/v2/manifest", nil); code != http.StatusBadRequest || body.Status != "fail" {
			t.Fatalf("v2 manifest GET: %d %+v", code, body)
		}
		if code, body := call(t, c, http.MethodGet, "/manifest", nil); code != http.StatusOK || string(body.Data) != "{}" {
			t.Fatalf("v1 manifest GET: %d %s", code, body.Data)
		}
		if code, _ := call(t, c, http.MethodGet, "/api/v2/update", nil); code != http.StatusBadRequest {
			t.Fatalf("update log before manifest: %d", code)
		}
	})

	t.Run("bad manifest bodies change nothing", func(t *testing.T) {
		tests := []struct {
			name string
			path string
			body []byte
			code int
		}{
			{"v2 empty body", "/api/v2/manifest", nil, http.StatusBadRequest},
			{"v2 malformed JSON", "/api/v2/manifest", []byte(`{"manifest":`), http.StatusBadRequest},
			{"v2 not base64", "/api/v2/manifest", []byte(`{"manifest":"%%%"}`), http.StatusBadRequest},
			{"v2 invalid manifest", "/api/v2/manifest", []byte(`{"manifest":"` + base64.StdEncoding.EncodeToString([]byte(`{"Packages":{}}`)) + `"}`), http.StatusBadRequest},
			{"v1 empty body", "/manifest", nil, http.StatusBadRequest},
			{"v1 unknown secret type", "/manifest", bytes.Replace(raw, []byte(`"symmetric-key", "Size": 256`), []byte(`"magic", "Size": 256`), 1), http.StatusBadRequest},
			{"oversized", "/manifest", make([]byte, 23<<20), http.StatusRequestEntityTooLarge},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				code, body := call(t, c, http.MethodPost, tc.path, tc.body)
				if code != tc.code || body.Status != "fail" || body.Message == "" {
					t.Fatalf("got %d %+v, want %d with a message", code, body, tc.code)
				}
				if got := statusCode(t, c); got != 2 {
					t.Fatalf("state changed to %d", got)
				}
			})
		}
	})

	c.SetManifest(t, raw)
	digest := sha256.Sum256(raw)

	t.Run("manifest v2", func(t *testing.T) {
		code, body := call(t, c, http.MethodGet, "/api/v2/manifest", nil)
		var m struct {
			Sig         []byte `json:"manifestSignatureRootECDSA"`
			Fingerprint string `json:"manifestFingerprint"`
			Manifest    []byte `json:"manifest"`
		}
		if code != http.StatusOK || json.Unmarshal(body.Data, &m) != nil {
			t.Fatalf("%d %s", code, body.Data)
		}
		if m.Fingerprint != hex.EncodeToString(digest[:]) || !bytes.Equal(m.Manifest, raw) || len(m.Sig) == 0 {
			t.Fatalf("manifest response %+v", m)
		}
	})
	t.Run("manifest v1", func(t *testing.T) {
		_, body := call(t, c, http.MethodGet, "/manifest", nil)
		var m struct {
			ManifestSignature string
			Manifest          []byte
		}
		if json.Unmarshal(body.Data, &m) != nil || m.ManifestSignature != hex.EncodeToString(digest[:]) || !bytes.Equal(m.Manifest, raw) {
			t.Fatalf("v1 manifest %s", body.Data)
		}
	})
	t.Run("second manifest refused", func(t *testing.T) {
		code, body := call(t, c, http.MethodPost, "/manifest", raw)
		if code != http.StatusBadRequest || !strings.Contains(body.Message, "already set") {
			t.Fatalf("%d %+v", code, body)
		}
	})
	t.Run("status v1", func(t *testing.T) {
		_, body := call(t, c, http.MethodGet, "/status", nil)
		var s struct {
			StatusCode    int
			StatusMessage string
		}
		if json.Unmarshal(body.Data, &s) != nil || s.StatusCode != 3 || s.StatusMessage == "" {
			t.Fatalf("v1 status %s", body.Data)
		}
	})
	t.Run("quote", func(t *testing.T) {
		for _, path := range []string{"/api/v2/quote", "/api/v2/quote?nonce=" + base64.RawURLEncoding.EncodeToString([]byte("fresh")), "/quote"} {
			code, body := call(t, c, http.MethodGet, path, nil)
			var q map[string]any
			if code != http.StatusOK || json.Unmarshal(body.Data, &q) != nil {
				t.Fatalf("%s: %d %s", path, code, body.Data)
			}
			cert, _ := q["cert"].(string)
			if cert == "" {
				cert, _ = q["Cert"].(string)
			}
			if strings.Count(cert, "BEGIN CERTIFICATE") != 2 {
				t.Fatalf("%s: chain = %q", path, cert)
			}
		}
		if code, _ := call(t, c, http.MethodGet, "/api/v2/quote?nonce=%%%", nil); code != http.StatusBadRequest {
			t.Fatalf("bad nonce: %d", code)
		}
	})
	t.Run("update log", func(t *testing.T) {
		_, body := call(t, c, http.MethodGet, "/api/v2/update", nil)
		var l struct {
			UpdateLog []string `json:"updateLog"`
		}
		if json.Unmarshal(body.Data, &l) != nil || len(l.UpdateLog) != 1 || !strings.Contains(l.UpdateLog[0], "Initial manifest set") {
			t.Fatalf("update log %s", body.Data)
		}
		_, body = call(t, c, http.MethodGet, "/update", nil)
		var s string
		if json.Unmarshal(body.Data, &s) != nil || !strings.Contains(s, "Initial manifest set") {
			t.Fatalf("v1 update log %s", body.Data)
		}
	})
	t.Run("unknown path or method is 405", func(t *testing.T) {
		for _, r := range []struct{ method, path string }{
			{http.MethodGet, "/api/v2/nothing"},
			{http.MethodDelete, "/api/v2/manifest"},
			{http.MethodPut, "/status"},
			{http.MethodGet, "/api/v3/status"},
		} {
			code, body := call(t, c, r.method, r.path, nil)
			if code != http.StatusMethodNotAllowed || body.Status != "error" {
				t.Fatalf("%s %s: %d %+v", r.method, r.path, code, body)
			}
		}
	})
	t.Run("user endpoints need a client certificate", func(t *testing.T) {
		code, body := call(t, c, http.MethodGet, "/api/v2/secrets?s=sharedKey", nil)
		if code != http.StatusUnauthorized || body.Status != "fail" || !strings.Contains(body.Message, "certificate") {
			t.Fatalf("%d %+v", code, body)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		if _, err := activate(t, c, "backend", uuidA); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + c.Server.PrometheusAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		text, _ := io.ReadAll(resp.Body)
		for _, want := range []string{
			"coordinator_state 3",
			"coordinator_simulation 1",
			`coordinator_version_info{`,
			`coordinator_marble_activations_total{type="backend"} 1`,
			`coordinator_marble_activations_success_total{type="backend"} 1`,
			`coordinator_client_api_requests_total{code="200",method="get",path="/api/v2/status"}`,
			"coordinator_client_api_request_duration_seconds_bucket",
			"coordinator_client_api_requests_in_flight",
			`coordinator_mesh_api_grpc_server_handled_total{grpc_code="OK",grpc_method="Activate",grpc_service="rpc.Marble"`,
		} {
			if !strings.Contains(string(text), want) {
				t.Errorf("metrics lack %q", want)
			}
		}
		resp, err = http.Get("http://" + c.Server.PrometheusAddr() + "/events")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var events []map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&events); err != nil || len(events) == 0 {
			t.Fatalf("events: %v %v", events, err)
		}
	})
}

func TestStartupManifest(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(t.TempDir(), "manifest.json")
	if err := os.WriteFile(path, readManifest(t), 0o600); err != nil {
		t.Fatal(err)
	}
	c := coordtest.Start(t, coordtest.WithSealDir(dir), coordtest.WithStartupManifest(path))
	if got := statusCode(t, c); got != 3 {
		t.Fatalf("status = %d", got)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	// Restarting with the same startup manifest is fine.
	if err := coordtest.Start(t, coordtest.WithSealDir(dir), coordtest.WithStartupManifest(path)).Stop(); err != nil {
		t.Fatal(err)
	}
	// A different one is refused.
	other := bytes.Replace(readManifest(t), []byte(`"--serve"`), []byte(`"--other"`), 1)
	if err := os.WriteFile(path, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := coordtest.TryStart(t, coordtest.WithSealDir(dir), coordtest.WithStartupManifest(path)); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Fatalf("different startup manifest: %v", err)
	}
}

func TestImmediateStopIsClean(t *testing.T) {
	for i := 0; i < 20; i++ {
		c, err := coordtest.TryStart(t)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(); err != nil {
			t.Fatalf("stop right after start, round %d: %v", i, err)
		}
	}
}
