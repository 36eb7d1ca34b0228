package coordinator_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// TestBadInputChangesNothing sends malformed, oversized and invalid
// requests to every governance endpoint and checks that each gets a clear
// error and leaves manifest, secrets, pending update and update log as
// they were.
func TestBadInputChangesNothing(t *testing.T) {
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	c := coordtest.Start(t)
	m := govManifest(admin, admin2, nobody, nil)
	sub(m, "Secrets")["userCert"] = map[string]any{"Type": "cert-ecdsa", "Size": 256, "UserDefined": true}
	sub(sub(m, "Roles"), "secrets")["ResourceNames"] = []string{"userKey", "userPlain", "userCert"}
	raw := encode(t, m)
	c.SetManifest(t, raw)
	if r := c.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("0123456789abcdef")), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("secrets: %d %s", r.Code, r.Message)
	}
	next := govManifest(admin, admin2, nobody, nil)
	sub(next, "Config")["FeatureGates"] = []string{}
	nextRaw := encode(t, next)
	decodeUpdate(t, c.Do(t, http.MethodPost, "/api/v2/update", manifestBody(t, nextRaw), admin2.TLS))

	snapshot := func(t *testing.T) []string {
		t.Helper()
		var out []string
		for _, path := range []string{"/api/v2/manifest", "/api/v2/update", "/api/v2/update-manifest"} {
			r := c.Do(t, http.MethodGet, path, nil)
			out = append(out, string(r.Data))
		}
		r := c.Do(t, http.MethodGet, "/api/v2/secrets?s=userKey&s=userPlain", nil, admin.TLS)
		return append(out, string(r.Data))
	}
	before := snapshot(t)

	b64 := base64.StdEncoding.EncodeToString
	ecCert, ecKey := selfSigned(t, elliptic.P256())
	p384Cert, _ := selfSigned(t, elliptic.P384())
	invalidManifest := govManifest(admin, admin2, nobody, nil)
	sub(invalidManifest, "Secrets")["broken"] = map[string]any{"Type": "symmetric-key", "Size": 7}
	tests := []struct {
		name   string
		method string
		path   string
		body   []byte
		code   int
		want   string
	}{
		{"update: empty body", "POST", "/api/v2/update", nil, 400, "empty"},
		{"update: malformed JSON", "POST", "/api/v2/update", []byte(`{"manifest":`), 400, "request body"},
		{"update: not base64", "POST", "/api/v2/update", []byte(`{"manifest":"%%%"}`), 400, "request body"},
		{"update: trailing data", "POST", "/api/v2/update", append(manifestBody(t, nextRaw), []byte(`{}`)...), 400, "after the JSON"},
		{"update: oversized", "POST", "/update", make([]byte, 23<<20), 413, "larger"},
		{"update: not a manifest", "POST", "/update", []byte(`[1,2]`), 400, "invalid manifest"},
		{"update: invalid manifest", "POST", "/api/v2/update", manifestBody(t, encode(t, invalidManifest)), 400, "Size"},
		{"acknowledge: malformed", "POST", "/api/v2/update-manifest", []byte(`{"manifest": 5}`), 400, "request body"},
		{"acknowledge: oversized", "POST", "/update-manifest", make([]byte, 23<<20), 413, "larger"},
		{"acknowledge: other manifest", "POST", "/update-manifest", raw, 400, "differs"},
		{"secrets: empty body", "POST", "/api/v2/secrets", nil, 400, "empty"},
		{"secrets: malformed JSON", "POST", "/api/v2/secrets", []byte(`{"secrets": {"userKey": `), 400, "request body"},
		{"secrets: no secrets", "POST", "/api/v2/secrets", []byte(`{"secrets": {}}`), 400, "no secrets"},
		{"secrets: unknown field", "POST", "/api/v2/secrets", []byte(`{"secrets": {"userKey": {"Key": "AAAAAAAAAAAAAAAAAAAAAA==", "Public": "AA=="}}}`), 400, "Public"},
		{"secrets: key not base64", "POST", "/secrets", []byte(`{"userKey": {"Key": "%%%"}}`), 400, "request body"},
		{"secrets: oversized", "POST", "/api/v2/secrets", make([]byte, 9<<20), 413, "larger"},
		{"secrets: unknown name", "POST", "/api/v2/secrets", []byte(`{"secrets": {"nope": {"Key": "AAAAAAAAAAAAAAAAAAAAAA=="}}}`), 400, `"nope" is not defined`},
		{"secrets: generated secret", "POST", "/secrets", []byte(`{"sharedKey": {"Key": "AAAAAAAAAAAAAAAAAAAAAA=="}}`), 400, "not user-defined"},
		{"secrets: key too short", "POST", "/api/v2/secrets", []byte(`{"secrets": {"userKey": {"Key": "AAAA"}}}`), 400, "24 bits, but the manifest declares 128"},
		{"secrets: key too long", "POST", "/secrets", []byte(`{"userKey": {"Key": "` + b64(make([]byte, 32)) + `"}}`), 400, "256 bits"},
		{"secrets: one bad among good", "POST", "/secrets", []byte(`{"userPlain": {"Key": "bmV3"}, "userKey": {"Key": "AA=="}}`), 400, "userKey"},
		{"secrets: cert not base64 DER", "POST", "/secrets", []byte(`{"userCert": {"Cert": {"DNSNames": ["x"]}}}`), 400, "base64 DER"},
		{"secrets: cert garbage", "POST", "/secrets", []byte(`{"userCert": {"Cert": "` + b64([]byte("junk")) + `"}}`), 400, "parsing Cert"},
		{"secrets: wrong curve", "POST", "/secrets", []byte(`{"userCert": {"Cert": "` + b64(p384Cert) + `"}}`), 400, "P-384"},
		{"secrets: key of another cert", "POST", "/secrets", []byte(`{"userCert": {"Cert": "` + b64(p384Cert) + `", "Private": "` + b64(ecKey) + `"}}`), 400, "userCert"},
		{"secrets: key for a cert", "POST", "/secrets", []byte(`{"userCert": {"Cert": "` + b64(ecCert) + `", "Key": "AA=="}}`), 400, "not Key"},
		{"read: no names", "GET", "/api/v2/secrets", nil, 400, "s=<name>"},
		{"read: empty name", "GET", "/api/v2/secrets?s=userKey&s=", nil, 400, "empty"},
		{"read: unknown name", "GET", "/secrets?s=nope", nil, 400, `"nope" is not defined`},
		{"read: malformed query", "GET", "/api/v2/secrets?s=%zz", nil, 400, "malformed query"},
		{"recover: not in recovery", "POST", "/api/v2/recover", recoverBody(t, make([]byte, 32), []byte("sig")), 400, "not in recovery mode"},
		{"counter: malformed", "POST", "/api/v2/monotonic-counter", []byte(`{"name": 1}`), 400, "request body"},
		{"counter: no value", "POST", "/api/v2/monotonic-counter", []byte(`{"name": "c"}`), 400, "value"},
		{"counter: oversized", "POST", "/api/v2/monotonic-counter", make([]byte, 8<<10), 413, "larger"},
		{"sign-quote: malformed", "POST", "/api/v2/sign-quote", []byte(`{"sgxQuote": "%%%"}`), 400, "request body"},
		{"sign-quote: oversized", "POST", "/api/v2/sign-quote", make([]byte, 300<<10), 413, "larger"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := c.Do(t, tc.method, tc.path, tc.body, admin.TLS)
			if r.Code != tc.code || r.Status != "fail" || !strings.Contains(r.Message, tc.want) {
				t.Fatalf("got %d %s %q, want %d fail with %q", r.Code, r.Status, r.Message, tc.code, tc.want)
			}
			if after := snapshot(t); !slices.Equal(after, before) {
				t.Fatalf("the request changed the state:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
	// A marble's counter request with bad input changes nothing either.
	marble := []tls.Certificate{marbleClientCert(t, c)}
	if r := c.Do(t, http.MethodPost, "/api/v2/monotonic-counter", []byte(`{"name": "", "value": 3}`), marble...); r.Code != 400 || !strings.Contains(r.Message, "empty") {
		t.Fatalf("empty counter name: %d %s", r.Code, r.Message)
	}
	if r := c.Do(t, http.MethodPost, "/api/v2/monotonic-counter", []byte(`{"name": "c", "value": 3}`), marble...); r.Code != 200 || !bytes.Contains(r.Data, []byte(`"value":0`)) {
		t.Fatalf("counter after bad input: %d %s %s", r.Code, r.Message, r.Data)
	}
}

func selfSigned(t *testing.T, curve elliptic.Curve) (certDER, pkcs8 []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "secret"}, NotAfter: time.Now().Add(time.Hour)}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err = x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return certDER, pkcs8
}
