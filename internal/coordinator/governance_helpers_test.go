package coordinator_test

import (
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/rpc"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// govManifest is a manifest with two updaters (admin and admin2, both
// allowed everything, UpdateThreshold 2), a user without governance roles
// (nobody), user-defined secrets, the feature gates and the given recovery
// keys. Tests vary the returned document before encoding it.
func govManifest(admin, admin2, nobody *testsupport.User, recoveryKeys map[string]*testsupport.RecoveryKey) map[string]any {
	keys := map[string]any{}
	for name, k := range recoveryKeys {
		keys[name] = k.PublicPEM
	}
	return map[string]any{
		"Packages": map[string]any{
			"app": map[string]any{"SignerID": strings.Repeat("ab", 32), "ProductID": 7, "SecurityVersion": 1},
		},
		"Marbles": map[string]any{
			"app": map[string]any{
				"Package": "app",
				"Parameters": map[string]any{
					"Files": map[string]any{
						"/shared.hex":     "{{ hex .Secrets.sharedKey }}",
						"/own.hex":        "{{ hex .Secrets.ownKey }}",
						"/prevown.hex":    "{{ hex .Previous.Secrets.ownKey }}",
						"/sharedcert.pem": "{{ pem .Secrets.sharedCert.Cert }}",
						"/inter.pem":      "{{ pem .MarbleRun.CoordinatorIntermediate.Cert }}",
						"/user.hex":       "{{ hex .Secrets.userKey }}",
					},
				},
			},
		},
		"Secrets": map[string]any{
			"sharedKey":  map[string]any{"Type": "symmetric-key", "Size": 128, "Shared": true},
			"ownKey":     map[string]any{"Type": "symmetric-key", "Size": 256},
			"sharedCert": map[string]any{"Type": "cert-ecdsa", "Size": 256, "Shared": true},
			"userKey":    map[string]any{"Type": "symmetric-key", "Size": 128, "UserDefined": true},
			"userPlain":  map[string]any{"Type": "plain", "UserDefined": true},
		},
		"Users": map[string]any{
			admin.Name:  map[string]any{"Certificate": admin.CertPEM, "Roles": []string{"update", "secrets", "readShared", "svn"}},
			admin2.Name: map[string]any{"Certificate": admin2.CertPEM, "Roles": []string{"update", "secrets", "readShared", "svn"}},
			nobody.Name: map[string]any{"Certificate": nobody.CertPEM, "Roles": []string{"none"}},
		},
		"Roles": map[string]any{
			"update":     map[string]any{"ResourceType": "Manifest", "Actions": []string{"UpdateManifest"}},
			"secrets":    map[string]any{"ResourceType": "Secrets", "ResourceNames": []string{"userKey", "userPlain"}, "Actions": []string{"ReadSecret", "WriteSecret"}},
			"readShared": map[string]any{"ResourceType": "Secrets", "ResourceNames": []string{"sharedKey"}, "Actions": []string{"readsecret"}},
			"svn":        map[string]any{"ResourceType": "Packages", "ResourceNames": []string{"app"}, "Actions": []string{"UpdateSecurityVersion"}},
			"none":       map[string]any{"ResourceType": "Secrets", "ResourceNames": []string{"sharedKey"}, "Actions": []string{}},
		},
		"RecoveryKeys": keys,
		"Config": map[string]any{
			"UpdateThreshold": 2,
			"FeatureGates":    []string{"MonotonicCounter", "SignQuoteEndpoint"},
		},
	}
}

func sub(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }

func encode(t testing.TB, v any) []byte {
	t.Helper()
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// manifestBody is the v2 body carrying a manifest.
func manifestBody(t testing.TB, raw []byte) []byte {
	return encode(t, map[string]string{"manifest": base64.StdEncoding.EncodeToString(raw)})
}

// activateApp activates an app marble and returns its parameters.
func activateApp(t *testing.T, c *coordtest.Coordinator, uuid string) *rpc.Parameters {
	t.Helper()
	id, err := coordtest.NewMarbleIdentity(elliptic.P256(), "app")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := coordtest.Dial(c.MeshAddr(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := coordtest.Activate(ctx, conn, id, "app", uuid)
	if err != nil {
		t.Fatalf("activating app: %v", err)
	}
	return p
}

// marbleClientCert activates an app marble and returns its certificate.
func marbleClientCert(t *testing.T, c *coordtest.Coordinator) tls.Certificate {
	t.Helper()
	cert, err := coordtest.MarbleTLS(activateApp(t, c, uuidA))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// updateLog returns the update messages of the update log.
func updateLog(t *testing.T, c *coordtest.Coordinator) ([]string, []map[string]any) {
	t.Helper()
	r := c.Do(t, http.MethodGet, "/api/v2/update", nil)
	var l struct {
		UpdateLog []string `json:"updateLog"`
	}
	if r.Code != http.StatusOK || json.Unmarshal(r.Data, &l) != nil {
		t.Fatalf("update log: %d %s", r.Code, r.Message)
	}
	msgs := make([]string, len(l.UpdateLog))
	entries := make([]map[string]any, len(l.UpdateLog))
	for i, line := range l.UpdateLog {
		if err := json.Unmarshal([]byte(line), &entries[i]); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		msgs[i], _ = entries[i]["update"].(string)
	}
	return msgs, entries
}

// userSecretsBody is a v2 secrets upload.
func userSecretsBody(t testing.TB, key []byte) []byte {
	return encode(t, map[string]any{"secrets": map[string]any{
		"userKey":   map[string]any{"Key": key},
		"userPlain": map[string]any{"Key": []byte("plain")},
	}})
}
