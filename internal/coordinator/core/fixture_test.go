package core

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/internal/coordinator/store"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

// govUsers are alice (every role), bob and carol (may update the
// manifest, bob may read), and dave (no governance role).
type govUsers struct {
	alice, bob, carol, dave *testsupport.User
}

func newGovUsers(t testing.TB) govUsers {
	return govUsers{testsupport.NewUser(t, "alice"), testsupport.NewUser(t, "bob"), testsupport.NewUser(t, "carol"), testsupport.NewUser(t, "dave")}
}

// govManifest is the governance test manifest as a JSON document, to be
// varied by tests before encoding.
func govManifest(u govUsers, recoveryKeys map[string]*testsupport.RecoveryKey) map[string]any {
	keys := map[string]any{}
	for name, k := range recoveryKeys {
		keys[name] = k.PublicPEM
	}
	return map[string]any{
		"Packages": map[string]any{
			"backend":  map[string]any{"SignerID": strings.Repeat("ab", 32), "ProductID": 1, "SecurityVersion": 2},
			"frontend": map[string]any{"UniqueID": strings.Repeat("cd", 32)},
		},
		"Marbles": map[string]any{
			"backend": map[string]any{
				"Package": "backend",
				"Parameters": map[string]any{
					"Files": map[string]any{
						"/shared.hex":     "{{ hex .Secrets.sharedKey }}",
						"/own.hex":        "{{ hex .Secrets.ownKey }}",
						"/prevshared.hex": "{{ hex .Previous.Secrets.sharedKey }}",
						"/prevown.hex":    "{{ hex .Previous.Secrets.ownKey }}",
						"/sharedcert.pem": "{{ pem .Secrets.sharedCert.Cert }}",
						"/inter.pem":      "{{ pem .MarbleRun.CoordinatorIntermediate.Cert }}",
						"/marbleroot.pem": "{{ pem .MarbleRun.RootCA.Cert }}",
					},
				},
			},
			"userapp": map[string]any{
				"Package": "frontend",
				"Parameters": map[string]any{
					"Files": map[string]any{
						"/user.hex":     "{{ hex .Secrets.userKey }}",
						"/usercert.pem": "{{ pem .Secrets.userCert.Cert }}",
						"/userkey.pem":  "{{ pem .Secrets.userCert.Private }}",
					},
					"Env": map[string]any{"PLAIN": "{{ string .Secrets.userPlain }}"},
				},
			},
		},
		"Secrets": map[string]any{
			"sharedKey":  map[string]any{"Type": "symmetric-key", "Size": 128, "Shared": true},
			"ownKey":     map[string]any{"Type": "symmetric-key", "Size": 256},
			"sharedCert": map[string]any{"Type": "cert-ecdsa", "Size": 256, "Shared": true},
			"userKey":    map[string]any{"Type": "symmetric-key", "Size": 128, "UserDefined": true},
			"userCert":   map[string]any{"Type": "cert-ecdsa", "Size": 256, "UserDefined": true},
			"userPlain":  map[string]any{"Type": "plain", "UserDefined": true},
		},
		"Users": map[string]any{
			"alice": map[string]any{"Certificate": u.alice.CertPEM, "Roles": []string{"updater", "secretWriter", "svn"}},
			"bob":   map[string]any{"Certificate": u.bob.CertPEM, "Roles": []string{"updater", "secretReader"}},
			"carol": map[string]any{"Certificate": u.carol.CertPEM, "Roles": []string{"updater"}},
			"dave":  map[string]any{"Certificate": u.dave.CertPEM, "Roles": []string{"nothing"}},
		},
		"Roles": map[string]any{
			"updater":      map[string]any{"ResourceType": "Manifest", "Actions": []string{"UpdateManifest"}},
			"secretWriter": map[string]any{"ResourceType": "Secrets", "ResourceNames": []string{"userKey", "userCert", "userPlain"}, "Actions": []string{"writesecret", "ReadSecret"}},
			"secretReader": map[string]any{"ResourceType": "Secrets", "ResourceNames": []string{"sharedKey", "userKey"}, "Actions": []string{"READSECRET"}},
			"svn":          map[string]any{"ResourceType": "Packages", "ResourceNames": []string{"backend"}, "Actions": []string{"updatesecurityversion"}},
			"nothing":      map[string]any{"ResourceType": "Secrets", "ResourceNames": []string{"sharedKey"}, "Actions": []string{}},
		},
		"RecoveryKeys": keys,
		"Config":       map[string]any{"UpdateThreshold": 2, "FeatureGates": []string{"MonotonicCounter"}},
	}
}

// section returns m[key] as a JSON object, for tests that vary it.
func section(m map[string]any, key string) map[string]any {
	return m[key].(map[string]any)
}

func encodeManifest(t testing.TB, m map[string]any) []byte {
	t.Helper()
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func fingerprint(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// govCore is a simulation core on a memory store with the governance
// manifest set and the user-defined secrets uploaded.
func govCore(t *testing.T, u govUsers, m map[string]any) (*Core, *store.Memory, map[string][]byte) {
	t.Helper()
	st := store.NewMemory()
	c := newSimCore(t, st)
	secrets, err := c.SetManifest(context.Background(), encodeManifest(t, m))
	if err != nil {
		t.Fatalf("SetManifest: %v", err)
	}
	if err := c.WriteSecrets(context.Background(), u.alice.Cert, validUserSecrets(t)); err != nil {
		t.Fatalf("WriteSecrets: %v", err)
	}
	return c, st, secrets
}

// validUserSecrets are values for the three user-defined secrets.
func validUserSecrets(t testing.TB) map[string]UserSecret {
	t.Helper()
	certDER, keyDER := selfSignedECDSA(t, elliptic.P256())
	return map[string]UserSecret{
		"userKey":   {Key: []byte("0123456789abcdef")},
		"userCert":  {Cert: certDER, Private: keyDER},
		"userPlain": {Key: []byte("plain value")},
	}
}

// selfSignedECDSA returns a certificate and its SEC 1 private key.
func selfSignedECDSA(t testing.TB, curve elliptic.Curve) (certDER, keyDER []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "user secret"}, NotAfter: time.Now().Add(time.Hour)}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err = x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return certDER, keyDER
}

// logMessages returns the "update" field of every update log entry and
// the entries decoded.
func logMessages(t testing.TB, c *Core) ([]string, []map[string]any) {
	t.Helper()
	lines, err := c.UpdateLog()
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]string, len(lines))
	entries := make([]map[string]any, len(lines))
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &entries[i]); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		msgs[i], _ = entries[i]["update"].(string)
		if _, err := time.Parse(time.RFC3339Nano, entries[i]["time"].(string)); err != nil {
			t.Fatalf("log line %q has no valid time: %v", l, err)
		}
	}
	return msgs, entries
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
