package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/test/coordtest"
)

// fakeVerifier accepts evidence that is the JSON of attestation.Claims,
// as fakeEvidence produces it.
type fakeVerifier struct{}

func (fakeVerifier) Verify(_ context.Context, evidence []byte) (*attestation.Claims, error) {
	var c attestation.Claims
	if err := json.Unmarshal(evidence, &c); err != nil {
		return nil, errors.New("not a fake quote")
	}
	return &c, nil
}

// fakeEvidence returns evidence claiming c with report data rd.
func fakeEvidence(c attestation.Claims, rd [attestation.ReportDataSize]byte) []byte {
	c.ReportData = rd
	out, _ := json.Marshal(c)
	return out
}

// goodClaims is the identity the tests' era configs expect.
func goodClaims() attestation.Claims {
	return attestation.Claims{
		UniqueID:        bytesOf(0x11),
		SignerID:        bytesOf(0x22),
		ProductID:       3,
		SecurityVersion: 5,
		TCBStatus:       "UpToDate",
	}
}

func bytesOf(b byte) []byte {
	out := make([]byte, 32)
	for i := range out {
		out[i] = b
	}
	return out
}

// issuer makes the evidence a quote answer carries, given the root and the
// nonce of the request.
type issuer func(root *x509.Certificate, nonce []byte) []byte

// honest binds root and nonce as a Coordinator does.
func honest(c attestation.Claims) issuer {
	return func(root *x509.Certificate, nonce []byte) []byte {
		return fakeEvidence(c, attestation.BindHash(root.Raw, nonce))
	}
}

// nonceIgnoring binds only the root, as a replayed quote would.
func nonceIgnoring(c attestation.Claims) issuer {
	return func(root *x509.Certificate, _ []byte) []byte {
		return fakeEvidence(c, attestation.BindHash(root.Raw))
	}
}

// newAttestingProxy serves a real Coordinator's client API under its own
// root key, replacing the empty simulation quote with evidence from iss.
func newAttestingProxy(t *testing.T, c *coordtest.Coordinator, iss issuer) *httptest.Server {
	t.Helper()
	root, key := c.Core().RootCertificate()
	upstream, _ := url.Parse("https://" + c.ClientAddr())
	rp := httputil.NewSingleHostReverseProxy(upstream)
	rp.Transport = c.Client().Transport
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/quote" && r.URL.Path != "/quote" {
			rp.ServeHTTP(w, r)
			return
		}
		resp, err := c.Client().Get(c.URL(r.URL.RequestURI()))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		var env struct {
			Status string                     `json:"status"`
			Data   map[string]json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || resp.StatusCode != http.StatusOK {
			http.Error(w, "upstream quote failed", http.StatusBadGateway)
			return
		}
		var nonce []byte
		if n := r.URL.Query().Get("nonce"); n != "" {
			nonce, _ = base64.RawURLEncoding.DecodeString(n)
		}
		field := "quote"
		if r.URL.Path == "/quote" {
			field = "Quote"
		}
		ev, _ := json.Marshal(iss(root, nonce))
		env.Data[field] = ev
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(env)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{root.Raw}, PrivateKey: key, Leaf: root}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// fakeCoordinator speaks the Coordinator's REST API from canned state.
// With legacy set it answers 405 on every /api/v2 path, like a Coordinator
// from before v2.
type fakeCoordinator struct {
	t      *testing.T
	ca     *testCA
	legacy bool
	srv    *httptest.Server
	issue  issuer

	mu       sync.Mutex
	requests []string
	bodies   map[string][]byte
	manifest []byte
	pending  []byte
	secrets  map[string]json.RawMessage
	recovery *rsa.PrivateKey
	// uploads counts recovery secrets; two recover the fake.
	uploads int
	// replicas, if set, makes v2 status describe a distributed
	// Coordinator.
	replicas []wire.ReplicaStatus
}

func newFakeCoordinator(t *testing.T, legacy bool) *fakeCoordinator {
	t.Helper()
	f := &fakeCoordinator{
		t: t, ca: newTestCA(t), legacy: legacy, bodies: map[string][]byte{},
		secrets: map[string]json.RawMessage{
			"apiKey": json.RawMessage(`{"Type":"symmetric-key","Size":128,"UserDefined":true,"Private":"AAECAwQFBgcICQoLDA0ODw==","Public":"AAECAwQFBgcICQoLDA0ODw=="}`),
		},
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{f.ca.root.Raw}, PrivateKey: f.ca.rootKey, Leaf: f.ca.root}},
		ClientAuth:   tls.RequestClientCert,
	}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCoordinator) addr() string { return strings.TrimPrefix(f.srv.URL, "https://") }

// requested returns the requests served so far, as "METHOD /path".
func (f *fakeCoordinator) requested() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func (f *fakeCoordinator) body(method, path string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[method+" "+path]
}

func reply(w http.ResponseWriter, code int, status string, data any, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	body := map[string]any{"status": status}
	if status != "error" {
		body["data"] = data
	}
	if msg != "" {
		body["message"] = msg
	}
	_ = json.NewEncoder(w).Encode(body)
}

func (f *fakeCoordinator) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	f.bodies[r.Method+" "+r.URL.Path] = body
	path, v2 := strings.CutPrefix(r.URL.Path, "/api/v2/")
	if !v2 {
		path = strings.TrimPrefix(path, "/")
	}
	if v2 && f.legacy {
		reply(w, http.StatusMethodNotAllowed, "error", nil, "no endpoint")
		return
	}
	user := r.TLS != nil && len(r.TLS.PeerCertificates) > 0
	ok := func(data any) { reply(w, http.StatusOK, "success", data, "") }
	pick := func(v2Data, v1Data any) {
		if v2 {
			ok(v2Data)
		} else {
			ok(v1Data)
		}
	}
	needUser := func() bool {
		if !user {
			reply(w, http.StatusUnauthorized, "fail", nil, "no client certificate")
		}
		return user
	}
	manifestFromBody := func() []byte {
		if !v2 {
			return body
		}
		var d struct {
			Manifest []byte `json:"manifest"`
		}
		_ = json.Unmarshal(body, &d)
		return d.Manifest
	}
	switch r.Method + " " + path {
	case "GET quote":
		var nonce []byte
		if n := r.URL.Query().Get("nonce"); n != "" {
			nonce, _ = base64.RawURLEncoding.DecodeString(n)
		}
		var quote []byte
		if f.issue != nil {
			quote = f.issue(f.ca.root, nonce)
		}
		pick(map[string]any{"cert": f.ca.chainPEM(), "quote": quote}, map[string]any{"Cert": f.ca.chainPEM(), "Quote": quote})
	case "GET status":
		v2Status := map[string]any{"code": 3, "message": "fake is running"}
		if f.replicas != nil {
			v2Status["replica"], v2Status["replicas"] = f.replicas[0], f.replicas
		}
		pick(v2Status, map[string]any{"StatusCode": 3, "StatusMessage": "fake is running"})
	case "POST manifest":
		f.manifest = manifestFromBody()
		pick(map[string]any{"RecoverySecrets": map[string][]byte{"owner": []byte("encrypted")}}, map[string]any{"RecoverySecrets": map[string][]byte{"owner": []byte("encrypted")}})
	case "GET manifest":
		sum := sha256.Sum256(f.manifest)
		sig, _ := ecdsa.SignASN1(rand.Reader, f.ca.rootKey, sum[:])
		pick(map[string]any{"manifestSignatureRootECDSA": sig, "manifestFingerprint": hex.EncodeToString(sum[:]), "manifest": f.manifest},
			map[string]any{"ManifestSignatureRootECDSA": sig, "ManifestSignature": hex.EncodeToString(sum[:]), "Manifest": f.manifest})
	case "GET update":
		entries := []string{`{"time":"2026-01-02T03:04:05Z","update":"Initial manifest set"}`, `{"time":"2026-01-02T03:04:06Z","update":"SecurityVersion increased","package":"backend","new version":4}`}
		pick(map[string]any{"updateLog": entries}, strings.Join(entries, "\n")+"\n")
	case "POST update":
		if !needUser() {
			return
		}
		f.pending = manifestFromBody()
		pick(map[string]any{"missingAcknowledgments": 1, "missingUsers": []string{"bob"}}, nil)
	case "GET update-manifest":
		if f.pending == nil {
			reply(w, http.StatusNotFound, "error", nil, "no pending update")
			return
		}
		ok(map[string]any{"manifest": f.pending, "message": "1 acknowledgement still required", "missingUsers": []string{"bob"}})
	case "POST update-manifest":
		if !needUser() {
			return
		}
		if f.pending == nil {
			reply(w, http.StatusNotFound, "error", nil, "no pending update")
			return
		}
		f.pending = nil
		pick(map[string]any{"message": "All users have acknowledged the update manifest. Update successfully applied", "missingUsers": []string{}, "missingAcknowledgments": 0},
			"All users have acknowledged the update manifest. Update successfully applied")
	case "POST update-cancel":
		if !needUser() {
			return
		}
		f.pending = nil
		pick(map[string]any{"message": "Update successfully cancelled"}, "Update successfully cancelled")
	case "GET secrets":
		if !needUser() {
			return
		}
		out := map[string]json.RawMessage{}
		for _, n := range r.URL.Query()["s"] {
			s, found := f.secrets[n]
			if !found {
				reply(w, http.StatusForbidden, "error", nil, "user may not read secret "+n)
				return
			}
			out[n] = s
		}
		pick(map[string]any{"secrets": out}, out)
	case "POST secrets":
		if !needUser() {
			return
		}
		ok(nil)
	case "POST recover":
		if !v2 {
			reply(w, http.StatusGone, "error", nil, "use /api/v2/recover")
			return
		}
		f.uploads++
		if f.uploads < 2 {
			ok(map[string]any{"remaining": 1, "message": "Secret was processed successfully. Upload the next secret. Remaining secrets: 1"})
			return
		}
		ok(map[string]any{"remaining": 0, "message": "Recovery successful."})
	case "GET recover/public-key":
		if !v2 {
			reply(w, http.StatusMethodNotAllowed, "error", nil, "no endpoint")
			return
		}
		if f.recovery == nil {
			f.recovery, _ = rsa.GenerateKey(rand.Reader, 2048)
		}
		der, _ := x509.MarshalPKIXPublicKey(&f.recovery.PublicKey)
		ok(map[string]any{"algorithm": "RSA", "ephemeralPublicKey": der})
	default:
		reply(w, http.StatusMethodNotAllowed, "error", nil, "no endpoint "+r.Method+" "+r.URL.Path)
	}
}
