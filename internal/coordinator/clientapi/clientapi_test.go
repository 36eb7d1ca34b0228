package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/health"
)

// fakeCore fails SetManifest with a configured error. Methods it does not
// define belong to the nil embedded Core and must not be reached.
type fakeCore struct {
	Core
	setErr error
}

func (fakeCore) Status() (core.State, string) { return core.StateAcceptingManifest, "ready" }
func (fakeCore) Quote(context.Context, []byte) ([]byte, []byte, error) {
	return nil, nil, errors.New("unused")
}
func (fakeCore) ManifestInfo() ([]byte, []byte, bool) { return nil, nil, false }
func (f fakeCore) SetManifest(context.Context, []byte) (map[string][]byte, error) {
	return nil, f.setErr
}
func (fakeCore) UpdateLog() ([]string, error) { return nil, nil }

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		code       int
		status     string
		msgHas     string
		msgHasNone string
	}{
		{"invalid", &core.Error{Kind: core.KindInvalidArgument, Reason: "bad manifest"}, 400, "fail", "bad manifest", ""},
		{"state", &core.Error{Kind: core.KindFailedPrecondition, Reason: "already set"}, 400, "fail", "already set", ""},
		{"unauthenticated", &core.Error{Kind: core.KindUnauthenticated, Reason: "no cert"}, 401, "fail", "no cert", ""},
		{"forbidden", &core.Error{Kind: core.KindPermissionDenied, Reason: "no role"}, 403, "error", "no role", ""},
		{"not found", &core.Error{Kind: core.KindNotFound, Reason: "none pending"}, 404, "error", "none pending", ""},
		{"unimplemented", &core.Error{Kind: core.KindUnimplemented, Reason: "no verifier"}, 501, "error", "no verifier", ""},
		{"data loss shows its reason", &core.Error{Kind: core.KindDataLoss, Reason: "state is damaged"}, 500, "error", "state is damaged", ""},
		{"internal hides details", errors.New("disk /secret/path failed"), 500, "error", "internal error", "/secret/path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := New(fakeCore{setErr: tc.err}, fixedReplica{}, slog.New(slog.DiscardHandler), nil)
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/manifest", strings.NewReader("{}")))
			var body struct {
				Status  string `json:"status"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tc.code || body.Status != tc.status || !strings.Contains(body.Message, tc.msgHas) {
				t.Fatalf("got %d %+v", rec.Code, body)
			}
			if tc.msgHasNone != "" && strings.Contains(body.Message, tc.msgHasNone) {
				t.Fatalf("message leaks %q", tc.msgHasNone)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	api := New(fakeCore{}, fixedReplica{Ready: true}, slog.New(slog.DiscardHandler), nil)
	tests := []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, "/api/v2/status", 200},
		{http.MethodGet, "/status", 200},
		{http.MethodGet, "/api/v2/status/", 200},
		{http.MethodPost, "/api/v2/status", 405},
		{http.MethodGet, "/api/v2/unknown", 405},
		{http.MethodGet, "/", 405},
		{http.MethodPost, "/recover", http.StatusGone},
		{http.MethodGet, "/recover/public-key", 405},
		{http.MethodPost, "/sign-quote", 405},
		{http.MethodPost, "/monotonic-counter", 405},
		{http.MethodGet, "/api/v2/secrets", 400},
		{http.MethodGet, "/api/v2/secrets?s=", 400},
		{http.MethodGet, "/secrets?s=a&s=", 400},
		{http.MethodPost, "/api/v2/secrets", 400},
		{http.MethodPost, "/api/v2/recover", 400},
		{http.MethodPost, "/api/v2/update", 400},
		{http.MethodPost, "/api/v2/update-manifest", 400},
		{http.MethodPost, "/api/v2/monotonic-counter", 400},
	}
	for _, tc := range tests {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.code {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, rec.Code, tc.code)
		}
	}
}

// fixedReplica describes a Coordinator with fixed values.
type fixedReplica wire.ReplicaStatus

func (r fixedReplica) Replica() wire.ReplicaStatus { return wire.ReplicaStatus(r) }

// Replicas is nil: the Coordinator is not distributed.
func (fixedReplica) Replicas(context.Context) []wire.ReplicaStatus { return nil }

// ReadyExcept answers from the fixed status: no check is known.
func (r fixedReplica) ReadyExcept([]string) (bool, string) { return r.Ready, r.Reason }

func (fixedReplica) Alive() (bool, string) { return true, "" }

func TestReady(t *testing.T) {
	tests := []struct {
		name    string
		replica fixedReplica
		method  string
		code    int
		body    string
	}{
		{"ready", fixedReplica{Ready: true}, http.MethodGet, http.StatusOK, "ready\n"},
		{"not ready", fixedReplica{Degraded: true, Reason: "no round trip to the store has succeeded for 4s"}, http.MethodGet,
			http.StatusServiceUnavailable, "not ready: no round trip to the store has succeeded for 4s\n"},
		{"only GET", fixedReplica{Ready: true}, http.MethodPost, http.StatusMethodNotAllowed, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := New(fakeCore{}, tc.replica, slog.New(slog.DiscardHandler), nil)
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, httptest.NewRequest(tc.method, ReadyPath, nil))
			if rec.Code != tc.code {
				t.Fatalf("code %d, want %d", rec.Code, tc.code)
			}
			if tc.body != "" && rec.Body.String() != tc.body {
				t.Fatalf("body %q, want %q", rec.Body.String(), tc.body)
			}
		})
	}
}

// verdictReplica answers the probes from a health verdict and a liveness.
type verdictReplica struct {
	fixedReplica
	v     health.Verdict
	alive string // why the Coordinator is not alive; "" when it is
}

func (r verdictReplica) ReadyExcept(exclude []string) (bool, string) { return r.v.ReadyExcept(exclude) }

func (r verdictReplica) Alive() (bool, string) { return r.alive == "", r.alive }

// TestReadyExclude: ?exclude= leaves out the named checks, repeated or
// comma-separated; what is not left out still fails; an unknown check is
// refused.
func TestReadyExclude(t *testing.T) {
	inRecovery := health.Verdict{Current: true, Reason: "waits for the owners' recovery secrets",
		Failures: []health.Failure{{Check: health.CheckRecovery, Reason: "waits for the owners' recovery secrets"}}}
	waitingForKey := health.Verdict{Current: true, Reason: "waits for the key from a peer",
		Failures: []health.Failure{{Check: health.CheckKey, Reason: "waits for the key from a peer"}}}
	recoveryAndBehind := health.Verdict{Reason: "waits for recovery or the key", Failures: []health.Failure{
		{Check: health.CheckRecovery, Reason: "waits for recovery or the key"},
		{Check: health.CheckCurrent, Reason: "the watch of the stored state has been down for 9s"}}}
	tests := []struct {
		name  string
		v     health.Verdict
		query string
		code  int
		body  string
	}{
		{"recovery fails", inRecovery, "", http.StatusServiceUnavailable, "not ready: waits for the owners' recovery secrets\n"},
		{"recovery left out", inRecovery, "?exclude=recovery", http.StatusOK, "ready\n"},
		{"waiting for a peer's key, recovery left out", waitingForKey, "?exclude=recovery", http.StatusServiceUnavailable, "not ready: waits for the key from a peer\n"},
		{"another check left out", inRecovery, "?exclude=current", http.StatusServiceUnavailable, "not ready: waits for the owners' recovery secrets\n"},
		{"the next failure shows", recoveryAndBehind, "?exclude=recovery", http.StatusServiceUnavailable, "not ready: the watch of the stored state has been down for 9s\n"},
		{"both left out, repeated", recoveryAndBehind, "?exclude=recovery&exclude=current", http.StatusOK, "ready\n"},
		{"both left out, listed", recoveryAndBehind, "?exclude=current,recovery", http.StatusOK, "ready\n"},
		{"unknown check", health.Verdict{Ready: true, Current: true}, "?exclude=recovery,recovry", http.StatusBadRequest,
			"unknown readiness check \"recovry\"; the checks are started, key, recovery, current\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := New(fakeCore{}, verdictReplica{v: tc.v}, slog.New(slog.DiscardHandler), nil)
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, ReadyPath+tc.query, nil))
			if rec.Code != tc.code || rec.Body.String() != tc.body {
				t.Fatalf("GET %s%s = %d %q, want %d %q", ReadyPath, tc.query, rec.Code, rec.Body, tc.code, tc.body)
			}
		})
	}
}

// TestHealthz: GET /healthz answers the Coordinator's liveness, and only
// to GET.
func TestHealthz(t *testing.T) {
	for _, tc := range []struct {
		name   string
		alive  string
		method string
		code   int
		body   string
	}{
		{"alive", "", http.MethodGet, http.StatusOK, "alive\n"},
		{"wedged", "one operation has held the Coordinator's core for 6m0s", http.MethodGet, http.StatusServiceUnavailable,
			"not alive: one operation has held the Coordinator's core for 6m0s\n"},
		{"only GET", "", http.MethodPost, http.StatusMethodNotAllowed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := New(fakeCore{}, verdictReplica{alive: tc.alive}, slog.New(slog.DiscardHandler), nil)
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, httptest.NewRequest(tc.method, HealthPath, nil))
			if rec.Code != tc.code || tc.body != "" && rec.Body.String() != tc.body {
				t.Fatalf("%s %s = %d %q, want %d %q", tc.method, HealthPath, rec.Code, rec.Body, tc.code, tc.body)
			}
		})
	}
}

// fleet describes a distributed Coordinator of two replicas.
type fleet struct{}

func (fleet) Replica() wire.ReplicaStatus {
	return wire.ReplicaStatus{Name: "coordinator-0", Ready: true, StoreBackend: "k8s-secret"}
}

func (fleet) ReadyExcept([]string) (bool, string) { return true, "" }

func (fleet) Alive() (bool, string) { return true, "" }

func (f fleet) Replicas(context.Context) []wire.ReplicaStatus {
	return []wire.ReplicaStatus{f.Replica(), {Name: "10.0.0.9:5433", Reason: "unreachable: connection refused"}}
}

// TestStatusListsReplicas: v2 status carries every replica of a
// distributed Coordinator; the legacy status does not.
func TestStatusListsReplicas(t *testing.T) {
	api := New(fakeCore{}, fleet{}, slog.New(slog.DiscardHandler), nil)
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v2/status", nil))
	var v2 struct{ Data wire.StatusV2 }
	if err := json.Unmarshal(rec.Body.Bytes(), &v2); err != nil {
		t.Fatal(err)
	}
	if got := v2.Data.Replicas; len(got) != 2 || got[0].Name != "coordinator-0" || got[1].Reason != "unreachable: connection refused" {
		t.Fatalf("v2 replicas = %+v; body %s", got, rec.Body)
	}
	rec = httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status", nil))
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "replicas") || strings.Contains(rec.Body.String(), "10.0.0.9") {
		t.Fatalf("v1 status = %d %s", rec.Code, rec.Body)
	}
}
