package coordinator_test

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/http"
	"testing"

	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// Callers of the authorization matrix.
const (
	callerNone    = iota // no client certificate
	callerUnknown        // a certificate of nobody the manifest knows
	callerMarble         // an activated marble's certificate
	callerNoRole         // a manifest user without the endpoint's role
	callerRole           // a manifest user with the role (a marble for marble endpoints)
	callerCount
)

func callerName(caller int) string {
	return [callerCount]string{"no cert", "unknown cert", "marble cert", "user without role", "user with role"}[caller]
}

// matrixRow is one endpoint with the status code each caller gets.
type matrixRow struct {
	method, path string
	body         func(t *testing.T) []byte
	// prepare establishes what the row needs (a pending update, say);
	// it runs before every call.
	prepare func(t *testing.T)
	want    [callerCount]int
}

func all(code int) [callerCount]int { return [callerCount]int{code, code, code, code, code} }

// userAuth is the usual answer of a user endpoint: only manifest users
// authenticate, and only those with the role are allowed.
func userAuth(ok int) [callerCount]int { return [callerCount]int{401, 401, 401, 403, ok} }

func staticBody(b []byte) func(t *testing.T) []byte { return func(*testing.T) []byte { return b } }

// runMatrix calls every row as every caller over real TLS.
func runMatrix(t *testing.T, c *coordtest.Coordinator, rows []matrixRow, certs func(t *testing.T, caller int) []tls.Certificate) {
	t.Helper()
	for _, row := range rows {
		for caller := 0; caller < callerCount; caller++ {
			t.Run(fmt.Sprintf("%s %s as %s", row.method, row.path, callerName(caller)), func(t *testing.T) {
				if row.prepare != nil {
					row.prepare(t)
				}
				var body []byte
				if row.body != nil {
					body = row.body(t)
				}
				r := c.Do(t, row.method, row.path, body, certs(t, caller)...)
				if r.Code != row.want[caller] {
					t.Fatalf("got %d (%s), want %d", r.Code, r.Message, row.want[caller])
				}
				if r.Code >= 400 && r.Message == "" {
					t.Fatalf("%d without a message", r.Code)
				}
			})
		}
	}
}

func TestAuthorizationMatrix(t *testing.T) {
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	stranger := testsupport.NewUser(t, "stranger")
	c := coordtest.Start(t)
	m := govManifest(admin, admin2, nobody, nil)
	raw := encode(t, m)
	c.SetManifest(t, raw)
	if r := c.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, make([]byte, 16)), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("setting user secrets: %d %s", r.Code, r.Message)
	}
	next := govManifest(admin, admin2, nobody, nil)
	sub(next, "Config")["FeatureGates"] = []string{"MonotonicCounter", "signquoteendpoint"}
	nextRaw := encode(t, next)

	certs := func(t *testing.T, caller int) []tls.Certificate {
		switch caller {
		case callerUnknown:
			return []tls.Certificate{stranger.TLS}
		case callerMarble:
			return []tls.Certificate{marbleClientCert(t, c)}
		case callerNoRole:
			return []tls.Certificate{nobody.TLS}
		case callerRole:
			return []tls.Certificate{admin.TLS}
		}
		return nil
	}
	pending := func(t *testing.T) bool {
		return c.Do(t, http.MethodGet, "/api/v2/update-manifest", nil).Code == http.StatusOK
	}
	ensurePending := func(t *testing.T) {
		if !pending(t) {
			if r := c.Do(t, http.MethodPost, "/api/v2/update", manifestBody(t, nextRaw), admin2.TLS); r.Code != http.StatusOK {
				t.Fatalf("starting an update: %d %s", r.Code, r.Message)
			}
		}
	}
	ensureNoPending := func(t *testing.T) {
		if pending(t) {
			if r := c.Do(t, http.MethodPost, "/api/v2/update-cancel", nil, admin2.TLS); r.Code != http.StatusOK {
				t.Fatalf("cancelling an update: %d %s", r.Code, r.Message)
			}
		}
	}
	// freshPending is a pending update that only admin2 has acknowledged.
	freshPending := func(t *testing.T) {
		ensureNoPending(t)
		ensurePending(t)
	}
	pkgUpdate := []byte(`{"Packages": {"app": {"SecurityVersion": 1}}}`)
	share := make([]byte, 32)
	if _, err := rand.Read(share); err != nil {
		t.Fatal(err)
	}
	recoverBody := encode(t, map[string]any{"recoverySecret": share, "recoverySecretSignature": []byte("sig")})
	secretsBody := func(t *testing.T) []byte { return userSecretsBody(t, make([]byte, 16)) }
	v1SecretsBody := encode(t, map[string]any{"userKey": map[string]any{"Key": make([]byte, 16)}})
	quoteBody := encode(t, map[string]any{"sgxQuote": base64.StdEncoding.EncodeToString([]byte("quote"))})

	rows := []matrixRow{
		{method: "GET", path: "/api/v2/status", want: all(200)},
		{method: "GET", path: "/status", want: all(200)},
		{method: "GET", path: "/api/v2/quote", want: all(200)},
		{method: "GET", path: "/quote", want: all(200)},
		{method: "GET", path: "/api/v2/manifest", want: all(200)},
		{method: "GET", path: "/manifest", want: all(200)},
		{method: "POST", path: "/api/v2/manifest", body: staticBody(manifestBody(t, raw)), want: all(400)},
		{method: "POST", path: "/manifest", body: staticBody(raw), want: all(400)},
		{method: "GET", path: "/api/v2/update", want: all(200)},
		{method: "GET", path: "/update", want: all(200)},
		{method: "POST", path: "/api/v2/update", body: staticBody(manifestBody(t, pkgUpdate)), want: userAuth(200)},
		{method: "POST", path: "/update", body: staticBody(pkgUpdate), want: userAuth(200)},
		{method: "POST", path: "/api/v2/update", body: staticBody(manifestBody(t, nextRaw)), prepare: ensureNoPending, want: userAuth(200)},
		{method: "POST", path: "/update", body: staticBody(nextRaw), prepare: ensureNoPending, want: userAuth(200)},
		{method: "GET", path: "/api/v2/update-manifest", prepare: ensurePending, want: all(200)},
		{method: "GET", path: "/update-manifest", prepare: ensurePending, want: all(200)},
		{method: "POST", path: "/api/v2/update-manifest", body: staticBody(manifestBody(t, nextRaw)), prepare: freshPending, want: userAuth(200)},
		{method: "POST", path: "/update-manifest", body: staticBody(nextRaw), prepare: freshPending, want: userAuth(200)},
		{method: "POST", path: "/api/v2/update-cancel", prepare: ensurePending, want: userAuth(200)},
		{method: "POST", path: "/update-cancel", prepare: ensurePending, want: userAuth(200)},
		{method: "GET", path: "/api/v2/secrets?s=userKey&s=sharedKey", want: userAuth(200)},
		{method: "GET", path: "/secrets?s=userKey", want: userAuth(200)},
		{method: "POST", path: "/api/v2/secrets", body: secretsBody, want: userAuth(200)},
		{method: "POST", path: "/secrets", body: staticBody(v1SecretsBody), want: userAuth(200)},
		{method: "POST", path: "/api/v2/recover", body: staticBody(recoverBody), want: all(400)},
		{method: "POST", path: "/recover", body: staticBody(recoverBody), want: all(410)},
		{method: "GET", path: "/api/v2/recover/public-key", want: all(400)},
		{method: "GET", path: "/recover/public-key", want: all(405)},
		{method: "POST", path: "/api/v2/sign-quote", body: staticBody(quoteBody), want: all(501)},
		{method: "POST", path: "/sign-quote", body: staticBody(quoteBody), want: all(405)},
		// The counter endpoint is for marbles only, users are not marbles.
		{method: "POST", path: "/api/v2/monotonic-counter", body: staticBody([]byte(`{"name":"c","value":1}`)), want: [callerCount]int{401, 401, 200, 401, 401}},
		{method: "POST", path: "/monotonic-counter", body: staticBody([]byte(`{"name":"c","value":1}`)), want: all(405)},
	}
	runMatrix(t, c, rows, certs)

	t.Run("without feature gates", func(t *testing.T) {
		c := coordtest.Start(t)
		m := govManifest(admin, admin2, nobody, nil)
		sub(m, "Config")["FeatureGates"] = []string{}
		c.SetManifest(t, encode(t, m))
		if r := c.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, make([]byte, 16)), admin.TLS); r.Code != http.StatusOK {
			t.Fatalf("setting user secrets: %d %s", r.Code, r.Message)
		}
		runMatrix(t, c, []matrixRow{
			{method: "POST", path: "/api/v2/sign-quote", body: staticBody(quoteBody), want: all(403)},
			{method: "POST", path: "/api/v2/monotonic-counter", body: staticBody([]byte(`{"name":"c","value":1}`)), want: all(403)},
		}, func(t *testing.T, caller int) []tls.Certificate {
			switch caller {
			case callerMarble:
				return []tls.Certificate{marbleClientCert(t, c)}
			case callerUnknown:
				return []tls.Certificate{stranger.TLS}
			case callerNoRole:
				return []tls.Certificate{nobody.TLS}
			case callerRole:
				return []tls.Certificate{admin.TLS}
			}
			return nil
		})
	})
}

// TestAuthorizationMatrixInRecovery checks every endpoint while the
// Coordinator cannot unseal its state: no manifest, so no users and no
// marbles exist, and only the recovery endpoints and the public ones work.
func TestAuthorizationMatrixInRecovery(t *testing.T) {
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	stranger := testsupport.NewUser(t, "stranger")
	owner := testsupport.NewRecoveryKey(t)
	dir := t.TempDir()
	c := coordtest.Start(t, coordtest.WithSealDir(dir), coordtest.WithSealer(coordtest.NewAESSealer(t)))
	raw := encode(t, govManifest(admin, admin2, nobody, map[string]*testsupport.RecoveryKey{"owner": owner}))
	c.SetManifest(t, raw)
	if r := c.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, make([]byte, 16)), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("setting user secrets: %d %s", r.Code, r.Message)
	}
	oldMarble := marbleClientCert(t, c)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	c = coordtest.Start(t, coordtest.WithSealDir(dir), coordtest.WithSealer(coordtest.NewAESSealer(t)))
	if got := statusCode(t, c); got != 1 {
		t.Fatalf("status on another machine = %d, want 1", got)
	}
	share := make([]byte, 32)
	if _, err := rand.Read(share); err != nil {
		t.Fatal(err)
	}
	recoverBody := staticBody(encode(t, map[string]any{"recoverySecret": share, "recoverySecretSignature": owner.Sign(t, share)}))
	counterBody := staticBody([]byte(`{"name":"c","value":1}`))
	rows := []matrixRow{
		{method: "GET", path: "/api/v2/status", want: all(200)},
		{method: "GET", path: "/api/v2/quote", want: all(200)},
		{method: "GET", path: "/api/v2/manifest", want: all(400)},
		{method: "GET", path: "/manifest", want: all(200)},
		{method: "GET", path: "/api/v2/update", want: all(400)},
		{method: "GET", path: "/update", want: all(400)},
		{method: "POST", path: "/api/v2/update", body: staticBody(manifestBody(t, raw)), want: all(400)},
		{method: "POST", path: "/update", body: staticBody(raw), want: all(400)},
		{method: "GET", path: "/api/v2/update-manifest", want: all(404)},
		{method: "GET", path: "/update-manifest", want: all(404)},
		{method: "POST", path: "/api/v2/update-manifest", body: staticBody(manifestBody(t, raw)), want: all(404)},
		{method: "POST", path: "/update-manifest", body: staticBody(raw), want: all(404)},
		{method: "POST", path: "/api/v2/update-cancel", want: all(404)},
		{method: "POST", path: "/update-cancel", want: all(404)},
		{method: "GET", path: "/api/v2/secrets?s=userKey", want: all(400)},
		{method: "GET", path: "/secrets?s=userKey", want: all(400)},
		{method: "POST", path: "/api/v2/secrets", body: func(t *testing.T) []byte { return userSecretsBody(t, make([]byte, 16)) }, want: all(400)},
		{method: "POST", path: "/api/v2/recover", body: recoverBody, want: all(400)},
		{method: "POST", path: "/recover", body: recoverBody, want: all(410)},
		{method: "GET", path: "/api/v2/recover/public-key", want: all(200)},
		{method: "POST", path: "/api/v2/sign-quote", body: staticBody([]byte(`{"sgxQuote":"cXVvdGU="}`)), want: all(403)},
		{method: "POST", path: "/api/v2/monotonic-counter", body: counterBody, want: all(403)},
	}
	runMatrix(t, c, rows, func(t *testing.T, caller int) []tls.Certificate {
		switch caller {
		case callerUnknown:
			return []tls.Certificate{stranger.TLS}
		case callerMarble:
			return []tls.Certificate{oldMarble}
		case callerNoRole:
			return []tls.Certificate{nobody.TLS}
		case callerRole:
			return []tls.Certificate{admin.TLS}
		}
		return nil
	})
}
