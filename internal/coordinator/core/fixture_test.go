package core

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/internal/coordinator/store"
)

// testUser is a manifest user.
type testUser struct {
	name    string
	cert    *x509.Certificate
	certPEM string
}

func newTestUser(t testing.TB, name string) *testUser {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testUser{name: name, cert: cert, certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// testRecoveryKey is a recovery key owner.
type testRecoveryKey struct {
	key *rsa.PrivateKey
	pem string
}

func newTestRecoveryKey(t testing.TB) *testRecoveryKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &testRecoveryKey{key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}
}

func (k *testRecoveryKey) decrypt(t testing.TB, ct []byte) []byte {
	t.Helper()
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, k.key, ct, nil)
	if err != nil {
		t.Fatalf("decrypting recovery secret: %v", err)
	}
	return pt
}

func (k *testRecoveryKey) sign(t testing.TB, secret []byte) []byte {
	t.Helper()
	d := sha256.Sum256(secret)
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.key, crypto.SHA256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// govUsers are alice (every role), bob and carol (may update the
// manifest, bob may read), and dave (no governance role).
type govUsers struct {
	alice, bob, carol, dave *testUser
}

func newGovUsers(t testing.TB) govUsers {
	return govUsers{newTestUser(t, "alice"), newTestUser(t, "bob"), newTestUser(t, "carol"), newTestUser(t, "dave")}
}

// govManifest is the governance test manifest as a JSON document, to be
// varied by tests before encoding.
func govManifest(u govUsers, recoveryKeys map[string]*testRecoveryKey) map[string]any {
	keys := map[string]any{}
	for name, k := range recoveryKeys {
		keys[name] = k.pem
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
			"alice": map[string]any{"Certificate": u.alice.certPEM, "Roles": []string{"updater", "secretWriter", "svn"}},
			"bob":   map[string]any{"Certificate": u.bob.certPEM, "Roles": []string{"updater", "secretReader"}},
			"carol": map[string]any{"Certificate": u.carol.certPEM, "Roles": []string{"updater"}},
			"dave":  map[string]any{"Certificate": u.dave.certPEM, "Roles": []string{"nothing"}},
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
	secrets, err := c.SetManifest(encodeManifest(t, m))
	if err != nil {
		t.Fatalf("SetManifest: %v", err)
	}
	if err := c.WriteSecrets(u.alice.cert, validUserSecrets(t)); err != nil {
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
