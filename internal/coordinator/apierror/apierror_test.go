package apierror_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/internal/coordinator/clientapi"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/meshapi"
	"github.com/marblemesh/marblemesh/rpc"
)

// errStore is what a failing store returns: it names a path.
var errStore = errors.New("writing /var/lib/coordinator/sealed/state.tmp: input/output error")

const secretDetail = "/var/lib/coordinator"

// failingCore answers activations and manifest uploads with err.
type failingCore struct {
	clientapi.Core
	err error
}

func (f failingCore) Activate(context.Context, core.ActivationRequest) (*core.Parameters, error) {
	return nil, f.err
}
func (f failingCore) SetManifest(context.Context, []byte) (map[string][]byte, error) {
	return nil, f.err
}

type outcome struct {
	grpc        codes.Code
	http        int
	jsend       string
	shows       string // the caller sees this
	hidesDetail bool   // the caller must not see the store detail
}

func TestOnePolicyForBothAPIs(t *testing.T) {
	wrapped := func(k core.Kind, reason string) error { return &core.Error{Kind: k, Reason: reason, Err: errStore} }
	tests := []struct {
		name string
		err  error
		want outcome
	}{
		{"plain error", errStore, outcome{codes.Internal, 500, "error", "internal error (id ", true}},
		{"wrapped plain error", fmt.Errorf("persisting: %w", errStore), outcome{codes.Internal, 500, "error", "internal error (id ", true}},
		{"internal core error", wrapped(core.KindInternal, "rendering the parameters"), outcome{codes.Internal, 500, "error", "internal error (id ", true}},
		{"data loss", wrapped(core.KindDataLoss, "the stored state is damaged"), outcome{codes.DataLoss, 500, "error", "the stored state is damaged", true}},
		{"unavailable shows why", &core.Error{Kind: core.KindUnavailable, Reason: "retry later", Err: errors.New("collateral: connection refused")}, outcome{codes.Unavailable, 503, "error", "retry later: collateral: connection refused", false}},
		{"invalid argument", &core.Error{Kind: core.KindInvalidArgument, Reason: "invalid manifest", Err: errors.New("no marbles")}, outcome{codes.InvalidArgument, 400, "fail", "invalid manifest: no marbles", false}},
		{"failed precondition", &core.Error{Kind: core.KindFailedPrecondition, Reason: "already set"}, outcome{codes.FailedPrecondition, 400, "fail", "already set", false}},
		{"resource exhausted", &core.Error{Kind: core.KindResourceExhausted, Reason: "limit reached"}, outcome{codes.ResourceExhausted, 400, "fail", "limit reached", false}},
		{"unauthenticated", &core.Error{Kind: core.KindUnauthenticated, Reason: "no cert"}, outcome{codes.Unauthenticated, 401, "fail", "no cert", false}},
		{"permission denied shows the verifier's reason", &core.Error{Kind: core.KindPermissionDenied, Reason: "invalid evidence", Err: errors.New("MRENCLAVE differs")}, outcome{codes.PermissionDenied, 403, "error", "invalid evidence: MRENCLAVE differs", false}},
		{"not found", &core.Error{Kind: core.KindNotFound, Reason: "none pending"}, outcome{codes.NotFound, 404, "error", "none pending", false}},
		{"unimplemented", &core.Error{Kind: core.KindUnimplemented, Reason: "no verifier"}, outcome{codes.Unimplemented, 501, "error", "no verifier", false}},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/mesh", func(t *testing.T) {
			var logBuf bytes.Buffer
			svc := meshapi.NewService(failingCore{err: tc.err}, slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
			ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}})
			ctx = withCert(ctx)
			_, err := svc.Activate(ctx, &rpc.ActivationReq{MarbleType: "backend"})
			st := status.Convert(err)
			if st.Code() != tc.want.grpc || !strings.HasPrefix(st.Message(), tc.want.shows) {
				t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), tc.want.grpc, tc.want.shows)
			}
			checkLeakAndLog(t, st.Message(), logBuf.String(), tc.want, "type=backend")
		})
		for _, path := range []string{"/manifest", "/api/v2/manifest"} {
			t.Run(tc.name+path, func(t *testing.T) {
				var logBuf bytes.Buffer
				api := clientapi.New(failingCore{err: tc.err}, readyReplica{}, slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
				rec := httptest.NewRecorder()
				api.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(`{"manifest":"e30="}`)))
				var body struct{ Status, Message string }
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
					t.Fatal(err)
				}
				if rec.Code != tc.want.http || body.Status != tc.want.jsend || !strings.HasPrefix(body.Message, tc.want.shows) {
					t.Fatalf("got %d %+v, want %d %s %q", rec.Code, body, tc.want.http, tc.want.jsend, tc.want.shows)
				}
				checkLeakAndLog(t, body.Message, logBuf.String(), tc.want, "path="+path)
			})
		}
	}
}

func checkLeakAndLog(t *testing.T, shown, log string, want outcome, attr string) {
	t.Helper()
	if want.hidesDetail && strings.Contains(shown, secretDetail) {
		t.Errorf("the caller sees the store detail: %q", shown)
	}
	if !strings.Contains(log, attr) || !strings.Contains(log, "kind=") {
		t.Errorf("log line lacks %s: %s", attr, log)
	}
	if want.hidesDetail && !strings.Contains(log, secretDetail) {
		t.Errorf("the log lacks the hidden detail: %s", log)
	}
	if i := strings.Index(shown, "(id "); i >= 0 {
		id := strings.TrimSuffix(strings.Fields(shown[i+4:])[0], ");")
		id = strings.TrimSuffix(id, ")")
		if !strings.Contains(log, "id="+id) {
			t.Errorf("id %q of the answer is not in the log: %s", id, log)
		}
	}
}

func withCert(ctx context.Context) context.Context {
	p, _ := peer.FromContext(ctx)
	info := p.AuthInfo.(credentials.TLSInfo)
	info.State.PeerCertificates = []*x509.Certificate{{}}
	p.AuthInfo = info
	return peer.NewContext(ctx, p)
}

// readyReplica describes a Ready Coordinator.
type readyReplica struct{}

func (readyReplica) Replica() wire.ReplicaStatus { return wire.ReplicaStatus{Ready: true} }

func (readyReplica) Replicas(context.Context) []wire.ReplicaStatus { return nil }

func (readyReplica) ReadyExcept([]string) (bool, string) { return true, "" }

func (readyReplica) Alive() (bool, string) { return true, "" }
