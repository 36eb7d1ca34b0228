package clientapi

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/manifest"
)

var internalID = regexp.MustCompile(`internal error \(id [0-9a-f]{12}\)`)

// wireReplica is the Coordinator that answers in the golden files.
var wireReplica = fixedReplica{Name: "coordinator-0", Ready: true, Generation: 7, StoreBackend: "k8s-secret"}

var update = flag.Bool("update", false, "rewrite testdata/wire/*.golden from the current answers and delete stale ones")

// wireCore answers every call of Core with fixed values, or with err when
// it is set, so that each endpoint's answer is the same on every run.
type wireCore struct {
	err   error
	empty bool // no manifest set, no update log, no pending update
}

func (c wireCore) Status() (core.State, string) {
	return core.StateAcceptingMarbles, "Coordinator is running correctly and ready to accept marbles."
}

func (c wireCore) Quote(context.Context, []byte) ([]byte, []byte, error) {
	if c.err != nil {
		return nil, nil, c.err
	}
	return []byte("-----BEGIN CERTIFICATE-----\nQ0VSVA==\n-----END CERTIFICATE-----\n"), []byte("quote"), nil
}

func (c wireCore) ManifestInfo() ([]byte, []byte, bool) {
	if c.empty {
		return nil, nil, false
	}
	return []byte(`{"Packages":{}}`), []byte("signature"), true
}

func (c wireCore) SetManifest(context.Context, []byte) (map[string][]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	return map[string][]byte{"owner": []byte("encrypted secret")}, nil
}

func (c wireCore) UpdateLog() ([]string, error) {
	if c.err != nil {
		return nil, c.err
	}
	if c.empty {
		return nil, nil
	}
	return []string{`{"time":"2026-01-02T03:04:05Z","msg":"initial manifest set"}`, `{"time":"2026-01-02T03:04:06Z","msg":"secret set"}`}, nil
}

func (c wireCore) UpdateManifest(context.Context, *x509.Certificate, []byte) (*core.UpdateResult, error) {
	if c.err != nil {
		return nil, c.err
	}
	return &core.UpdateResult{MissingAcknowledgments: 1, MissingUsers: []string{"bob"}}, nil
}

func (c wireCore) PendingUpdate() (*core.PendingUpdate, error) {
	if c.err != nil {
		return nil, c.err
	}
	return &core.PendingUpdate{Manifest: []byte(`{"Packages":{}}`), Initiator: "alice", MissingAcknowledgments: 1, MissingUsers: []string{"bob"}}, nil
}

func (c wireCore) AcknowledgeUpdate(context.Context, *x509.Certificate, []byte) (*core.UpdateResult, error) {
	if c.err != nil {
		return nil, c.err
	}
	return &core.UpdateResult{Applied: true, MissingUsers: nil, RecoverySecrets: map[string][]byte{"owner": []byte("new secret")}}, nil
}

func (c wireCore) CancelUpdate(context.Context, *x509.Certificate) error { return c.err }

func (c wireCore) ReadSecrets(*x509.Certificate, []string) (map[string]manifest.Secret, error) {
	if c.err != nil {
		return nil, c.err
	}
	return map[string]manifest.Secret{
		"symmetric": {Type: manifest.SecretTypeSymmetricKey, Size: 128, Shared: true, Private: []byte("0123456789abcdef"), Public: []byte("0123456789abcdef")},
		"plain":     {Type: manifest.SecretTypePlain, UserDefined: true, Private: []byte("hello")},
	}, nil
}

func (c wireCore) WriteSecrets(context.Context, *x509.Certificate, map[string]core.UserSecret) error {
	return c.err
}

func (c wireCore) Recover(context.Context, []byte, []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.empty {
		return 0, nil
	}
	return 1, nil
}

func (c wireCore) RecoveryPublicKey() ([]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	return []byte("public key DER"), nil
}

func (c wireCore) SignQuote(context.Context, []byte) ([]byte, string, error) {
	if c.err != nil {
		return nil, "", c.err
	}
	return []byte("signature"), "UpToDate", nil
}

func (c wireCore) SetMonotonicCounter(context.Context, *x509.Certificate, string, uint64) (uint64, error) {
	if c.err != nil {
		return 0, c.err
	}
	return 41, nil
}

// wireCase is one request of the contract and the core behind it.
type wireCase struct {
	name   string
	core   wireCore
	method string
	path   string
	body   string
}

// The error shapes of the API: a refused request (JSend fail), a denied
// one (JSend error), and an internal error, whose details stay in the log.
var (
	errInvalid  = &core.Error{Kind: core.KindInvalidArgument, Reason: "the request is not valid"}
	errState    = &core.Error{Kind: core.KindFailedPrecondition, Reason: "the Coordinator is not in the right state"}
	errDenied   = &core.Error{Kind: core.KindPermissionDenied, Reason: "the user lacks the permission"}
	errNotFound = &core.Error{Kind: core.KindNotFound, Reason: "nothing found"}
	errInternal = errors.New("disk /var/lib/secret failed")
)

// wireCases lists every endpoint in both versions with each outcome it can
// have on the wire.
func wireCases() []wireCase {
	ok, empty := wireCore{}, wireCore{empty: true}
	manifestV2 := `{"manifest":"eyJQYWNrYWdlcyI6e319"}`
	secretsV1 := `{"plain":{"Key":"aGVsbG8="}}`
	secretsV2 := `{"secrets":` + secretsV1 + `}`
	recoverV2 := `{"recoverySecret":"c2VjcmV0","recoverySecretSignature":"c2ln"}`
	cases := []wireCase{
		{"status", ok, "GET", "status", ""},
		{"quote", ok, "GET", "quote", ""},
		{"quote-internal", wireCore{err: errInternal}, "GET", "quote", ""},
		{"quote-nonce", ok, "GET", "api/v2/quote?nonce=bm9uY2U", ""},
		{"quote-bad-nonce", ok, "GET", "api/v2/quote?nonce=%21%21", ""},
		{"manifest-get", ok, "GET", "manifest", ""},
		{"manifest-get-none", empty, "GET", "manifest", ""},
		{"manifest-set-v1", ok, "POST", "/manifest", `{"Packages":{}}`},
		{"manifest-set-v2", ok, "POST", "/api/v2/manifest", manifestV2},
		{"manifest-set-empty-body", ok, "POST", "manifest", ""},
		{"manifest-set-v2-bad-body", ok, "POST", "/api/v2/manifest", `{"manifest":1}`},
		{"manifest-set-invalid", wireCore{err: errInvalid}, "POST", "/api/v2/manifest", manifestV2},
		{"manifest-set-state", wireCore{err: errState}, "POST", "/manifest", `{}`},
		{"manifest-set-internal", wireCore{err: errInternal}, "POST", "/manifest", `{}`},
		{"update-log", ok, "GET", "update", ""},
		{"update-log-empty", empty, "GET", "update", ""},
		{"update-log-state", wireCore{err: errState}, "GET", "update", ""},
		{"update-v1", ok, "POST", "/update", `{"Packages":{}}`},
		{"update-v2", ok, "POST", "/api/v2/update", manifestV2},
		{"update-denied", wireCore{err: errDenied}, "POST", "update", `{"Packages":{}}`},
		{"update-v2-missing-manifest", ok, "POST", "/api/v2/update", `{}`},
		{"pending-update", ok, "GET", "update-manifest", ""},
		{"pending-update-none", wireCore{err: errNotFound}, "GET", "update-manifest", ""},
		{"acknowledge-v1", ok, "POST", "/update-manifest", `{"Packages":{}}`},
		{"acknowledge-v2", ok, "POST", "/api/v2/update-manifest", manifestV2},
		{"acknowledge-denied", wireCore{err: errDenied}, "POST", "update-manifest", `{"Packages":{}}`},
		{"cancel", ok, "POST", "update-cancel", ""},
		{"cancel-none", wireCore{err: errNotFound}, "POST", "update-cancel", ""},
		{"secrets-get", ok, "GET", "secrets?s=plain&s=symmetric", ""},
		{"secrets-get-unnamed", ok, "GET", "secrets", ""},
		{"secrets-get-denied", wireCore{err: errDenied}, "GET", "secrets?s=plain", ""},
		{"secrets-set-v1", ok, "POST", "/secrets", secretsV1},
		{"secrets-set-v2", ok, "POST", "/api/v2/secrets", secretsV2},
		{"secrets-set-unknown-field", ok, "POST", "/secrets", `{"plain":{"Value":"x"}}`},
		{"secrets-set-invalid", wireCore{err: errInvalid}, "POST", "/api/v2/secrets", secretsV2},
		{"recover-v1", ok, "POST", "/recover", "secret"},
		{"recover-v2", ok, "POST", "/api/v2/recover", recoverV2},
		{"recover-v2-done", empty, "POST", "/api/v2/recover", recoverV2},
		{"recover-v2-missing-signature", ok, "POST", "/api/v2/recover", `{"recoverySecret":"c2VjcmV0"}`},
		{"recover-v2-state", wireCore{err: errState}, "POST", "/api/v2/recover", recoverV2},
		{"recovery-key", ok, "GET", "/api/v2/recover/public-key", ""},
		{"recovery-key-v1", ok, "GET", "/recover/public-key", ""},
		{"sign-quote", ok, "POST", "/api/v2/sign-quote", `{"sgxQuote":"cXVvdGU="}`},
		{"sign-quote-invalid", wireCore{err: errInvalid}, "POST", "/api/v2/sign-quote", `{"sgxQuote":"cXVvdGU="}`},
		{"sign-quote-v1", ok, "POST", "/sign-quote", `{}`},
		{"counter", ok, "POST", "/api/v2/monotonic-counter", `{"name":"c","value":42}`},
		{"counter-missing-value", ok, "POST", "/api/v2/monotonic-counter", `{"name":"c"}`},
		{"counter-denied", wireCore{err: errDenied}, "POST", "/api/v2/monotonic-counter", `{"name":"c","value":42}`},
		{"unknown-path", ok, "GET", "/api/v2/nothing", ""},
		{"wrong-method", ok, "DELETE", "/api/v2/status", ""},
	}
	// A path without a leading slash is an endpoint asked in both versions.
	var out []wireCase
	for _, c := range cases {
		if strings.HasPrefix(c.path, "/") {
			out = append(out, c)
			continue
		}
		v1, v2 := c, c
		v1.name, v1.path = c.name+"-v1", "/"+c.path
		v2.name, v2.path = c.name+"-v2", "/api/v2/"+c.path
		out = append(out, v1, v2)
	}
	return out
}

// TestWireGolden holds every answer of the client API, per endpoint,
// version and outcome, to a golden file: status code, content type and the
// body, indented. Run with -update to rewrite them after a deliberate change
// of the wire.
func TestWireGolden(t *testing.T) {
	dir := filepath.Join("testdata", "wire")
	seen := map[string]bool{}
	for _, tc := range wireCases() {
		t.Run(tc.name, func(t *testing.T) {
			if seen[tc.name] {
				t.Fatalf("two cases named %q", tc.name)
			}
			seen[tc.name] = true
			api := New(tc.core, wireReplica, slog.New(slog.DiscardHandler), nil)
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, rec.Body.Bytes(), "", "  "); err != nil {
				t.Fatalf("answer is not JSON: %v: %q", err, rec.Body.String())
			}
			// An internal error's id is random per answer: the golden holds its shape.
			body := internalID.ReplaceAllString(pretty.String(), "internal error (id <12 hex digits>)")
			got := fmt.Sprintf("%s %s\n%d %s\n%s\n", tc.method, tc.path, rec.Code, rec.Header().Get("Content-Type"), body)
			file := filepath.Join(dir, tc.name+".golden")
			if *update {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test -run TestWireGolden -update to create it)", err)
			}
			if got != string(want) {
				t.Fatalf("the wire changed for %s %s:\n--- want\n%s\n--- got\n%s", tc.method, tc.path, want, got)
			}
		})
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var stale []string
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".golden")
		if !seen[name] {
			stale = append(stale, e.Name())
		}
	}
	sort.Strings(stale)
	for _, s := range stale {
		if *update {
			if err := os.Remove(filepath.Join(dir, s)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("stale golden file %s (no case names it; run with -update to delete it)", s)
	}
}

// TestWireGoldenCoversEveryRoute fails when an endpoint or version is added
// without a golden answer.
func TestWireGoldenCoversEveryRoute(t *testing.T) {
	api := New(wireCore{}, wireReplica, slog.New(slog.DiscardHandler), nil)
	covered := map[string]bool{}
	for _, tc := range wireCases() {
		path, _, _ := strings.Cut(tc.path, "?")
		covered[tc.method+" "+path] = true
	}
	for path, rt := range api.routes {
		for method := range rt.methods {
			if !covered[method+" "+path] {
				t.Errorf("no golden answer for %s %s", method, path)
			}
		}
	}
}
