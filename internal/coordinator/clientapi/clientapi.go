// Package clientapi serves the Coordinator's REST client API: the
// /api/v2 paths and the legacy unprefixed v1 paths, with JSend envelopes.
// Unknown paths and methods get 405, which clients use to fall back from
// v2 to v1.
package clientapi

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/internal/coordinator/apierror"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/health"
	"github.com/marblemesh/marblemesh/internal/manifest"
)

// Core is what the client API needs from the Coordinator. Methods that
// take a certificate authenticate the caller with it: the leaf of the TLS
// client certificate chain, nil if none was presented.
type Core interface {
	Status() (core.State, string)
	Quote(ctx context.Context, nonce []byte) (chainPEM, quote []byte, err error)
	ManifestInfo() (raw, signature []byte, ok bool)
	SetManifest(ctx context.Context, raw []byte) (map[string][]byte, error)
	UpdateLog() ([]string, error)

	UpdateManifest(ctx context.Context, user *x509.Certificate, raw []byte) (*core.UpdateResult, error)
	PendingUpdate() (*core.PendingUpdate, error)
	AcknowledgeUpdate(ctx context.Context, user *x509.Certificate, raw []byte) (*core.UpdateResult, error)
	CancelUpdate(ctx context.Context, user *x509.Certificate) error
	ReadSecrets(user *x509.Certificate, names []string) (map[string]manifest.Secret, error)
	WriteSecrets(ctx context.Context, user *x509.Certificate, secrets map[string]core.UserSecret) error
	Recover(ctx context.Context, secret, signature []byte) (remaining int, err error)
	RecoveryPublicKey() ([]byte, error)
	SignQuote(ctx context.Context, quote []byte) (signature []byte, tcbStatus string, err error)
	SetMonotonicCounter(ctx context.Context, marble *x509.Certificate, name string, value uint64) (previous uint64, err error)
}

// Replica describes the Coordinator that answers: status reports it.
// Replicas describes every replica of a distributed Coordinator (nil
// otherwise), which status reports too. ReadyExcept answers GET /readyz:
// whether the Coordinator is Ready with the named checks of package
// health left out (Replica().Ready when none is), and if not why. Alive
// answers GET /healthz.
type Replica interface {
	Replica() wire.ReplicaStatus
	Replicas(ctx context.Context) []wire.ReplicaStatus
	ReadyExcept(exclude []string) (bool, string)
	Alive() (bool, string)
}

// Limits on request bodies.
const (
	maxManifestBody = core.MaxManifestSize*4/3 + 1024
	maxNonceSize    = 1024
	// maxSecretsBody bounds an upload of user-defined secrets.
	maxSecretsBody = 8 << 20
	// maxRecoverBody is MarbleRun's limit for a recovery secret upload.
	maxRecoverBody = 20 << 10
	// maxQuoteBody bounds a quote to sign; SGX quotes are a few KiB.
	maxQuoteBody = 256 << 10
	// maxCounterBody bounds a monotonic counter request.
	maxCounterBody = 2*core.MaxCounterNameSize + 1024
)

type route struct {
	name    string
	methods map[string]http.HandlerFunc
}

// API is the client API handler.
type API struct {
	core    Core
	replica Replica
	log     *slog.Logger
	routes  map[string]*route
	metrics *httpMetrics
}

// New returns the client API of core c on replica r. reg may be nil.
func New(c Core, r Replica, log *slog.Logger, reg prometheus.Registerer) *API {
	a := &API{core: c, replica: r, log: log, routes: map[string]*route{}}
	if reg != nil {
		a.metrics = newHTTPMetrics(reg)
	}
	a.addBasic()
	a.addGovernance()
	return a
}

// handle registers the v2 and v1 handlers of an endpoint; a nil v1
// handler leaves the v1 path unrouted (405).
func (a *API) handle(path, method string, v2, v1 http.HandlerFunc) {
	for _, p := range []struct {
		full string
		h    http.HandlerFunc
	}{{"/api/v2/" + path, v2}, {"/" + path, v1}} {
		if p.h == nil {
			continue
		}
		r, ok := a.routes[p.full]
		if !ok {
			r = &route{name: p.full, methods: map[string]http.HandlerFunc{}}
			a.routes[p.full] = r
		}
		h := p.h
		if a.metrics != nil {
			h = a.metrics.instrument(p.full, h)
		}
		r.methods[method] = h
	}
}

// Probe endpoints. Each answers GET with 200 or 503 and a one-line plain
// text body that says why not.
const (
	// ReadyPath is the readiness endpoint: 200 when the Coordinator is
	// Ready. The query parameter exclude (repeatable, or a comma-separated
	// list) leaves out the named checks of package health, e.g.
	// ?exclude=recovery; an unknown name is refused with 400.
	ReadyPath = "/readyz"
	// HealthPath is the liveness endpoint: 200 while the Coordinator is
	// alive (health.Alive).
	HealthPath = "/healthz"
)

// ExcludeParam is the query parameter of ReadyPath that leaves out checks.
const ExcludeParam = "exclude"

// ServeHTTP dispatches by exact path and method.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	if r.Method == http.MethodGet {
		switch path {
		case ReadyPath:
			a.ready(w, r)
			return
		case HealthPath:
			ok, reason := a.replica.Alive()
			writeProbe(w, ok, "alive", reason)
			return
		}
	}
	rt, ok := a.routes[path]
	if !ok {
		a.unknown(w, r)
		return
	}
	h, ok := rt.methods[r.Method]
	if !ok {
		a.unknown(w, r)
		return
	}
	h(w, r)
}

func (a *API) unknown(w http.ResponseWriter, r *http.Request) {
	h := func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "no endpoint "+r.Method+" "+r.URL.Path)
	}
	if a.metrics != nil {
		h = a.metrics.instrument("unknown", h)
	}
	h(w, r)
}

// ready answers ReadyPath. It is not instrumented: probes would drown
// the request metrics.
func (a *API) ready(w http.ResponseWriter, r *http.Request) {
	var exclude []string
	for _, v := range r.URL.Query()[ExcludeParam] {
		for name := range strings.SplitSeq(v, ",") {
			if !slices.Contains(health.Checks(), name) {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.Header().Set("X-Content-Type-Options", "nosniff")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = fmt.Fprintf(w, "unknown readiness check %q; the checks are %s\n", name, strings.Join(health.Checks(), ", "))
				return
			}
			exclude = append(exclude, name)
		}
	}
	ok, reason := a.replica.ReadyExcept(exclude)
	writeProbe(w, ok, "ready", reason)
}

// writeProbe answers a probe: 200 and word, or 503 and "not <word>: why".
func writeProbe(w http.ResponseWriter, ok bool, word, reason string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	if ok {
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, word+"\n")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, "not "+word+": "+reason+"\n") //nolint:gosec // G705: plain text with nosniff, never rendered as HTML
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func writeSuccess(w http.ResponseWriter, data any) {
	writeJSON(w, http.StatusOK, wire.Success[any]{Status: wire.StatusSuccess, Data: data})
}

// writeFail answers a client error (400, 401, 413) in the JSend "fail" form.
func writeFail(w http.ResponseWriter, code int, message string) {
	writeJSON(w, code, wire.Fail{Status: wire.StatusFail, Data: nil, Message: message})
}

// writeError answers 403, 404, 405 and server errors in the JSend "error" form.
func writeError(w http.ResponseWriter, code int, message string) {
	writeJSON(w, code, wire.Error{Status: wire.StatusError, Message: message})
}

// writeCoreError answers an error of the core by the policy of
// apierror: internal errors are logged and answered without details.
func (a *API) writeCoreError(w http.ResponseWriter, r *http.Request, err error) {
	d := apierror.Decide(r.Context(), a.log, "client API request failed", err, "api", "client", "method", r.Method, "path", r.URL.Path)
	if d.Fail {
		writeFail(w, d.HTTP, d.Message)
		return
	}
	writeError(w, d.HTTP, d.Message)
}
