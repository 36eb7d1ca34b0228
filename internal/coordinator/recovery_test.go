package coordinator_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

type recoverAnswer struct {
	Remaining int    `json:"remaining"`
	Message   string `json:"message"`
}

func recoverBody(t testing.TB, secret, sig []byte) []byte {
	return encode(t, map[string][]byte{"recoverySecret": secret, "recoverySecretSignature": sig})
}

// ephemeralKey fetches the Coordinator's ephemeral recovery key.
func ephemeralKey(t *testing.T, c *coordtest.Coordinator) *rsa.PublicKey {
	t.Helper()
	r := c.Do(t, http.MethodGet, "/api/v2/recover/public-key", nil)
	var k struct {
		Algorithm string `json:"algorithm"`
		Key       []byte `json:"ephemeralPublicKey"`
	}
	if r.Code != http.StatusOK || json.Unmarshal(r.Data, &k) != nil || k.Algorithm != "RSA" {
		t.Fatalf("recovery public key: %d %s", r.Code, r.Data)
	}
	pub, err := x509.ParsePKIXPublicKey(k.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pub.(*rsa.PublicKey)
}

// TestRecoveryOverHTTP recovers a deployment moved to another machine with
// every recovery key layout.
func TestRecoveryOverHTTP(t *testing.T) {
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	owners := []*testsupport.RecoveryKey{testsupport.NewRecoveryKey(t), testsupport.NewRecoveryKey(t), testsupport.NewRecoveryKey(t)}
	stranger := testsupport.NewRecoveryKey(t)
	tests := []struct {
		name            string
		keys, threshold int
		needed          int
	}{
		{"one key", 1, 0, 1},
		{"three of three", 3, 0, 3},
		{"two of three", 3, 2, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys := map[string]*testsupport.RecoveryKey{}
			for i := 0; i < tc.keys; i++ {
				keys[fmt.Sprintf("owner%d", i)] = owners[i]
			}
			m := govManifest(admin, admin2, nobody, keys)
			sub(m, "Config")["RecoveryThreshold"] = tc.threshold
			dir := t.TempDir()
			start := func(s seal.Sealer) *coordtest.Coordinator {
				return coordtest.Start(t, coordtest.WithSealDir(dir), coordtest.WithSealer(s))
			}
			c := start(coordtest.NewAESSealer(t))
			encrypted := c.SetManifest(t, encode(t, m))
			if r := c.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("0123456789abcdef")), admin.TLS); r.Code != http.StatusOK {
				t.Fatalf("secrets: %d %s", r.Code, r.Message)
			}
			root := c.RootCertificate()
			before := activateApp(t, c, uuidA).GetFiles()
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
			shares := map[string][]byte{}
			for name, ct := range encrypted {
				shares[name] = keys[name].Decrypt(t, ct)
			}

			newMachine := coordtest.NewAESSealer(t)
			c = start(newMachine)
			if got := statusCode(t, c); got != 1 {
				t.Fatalf("status on another machine = %d", got)
			}
			post := func(body []byte) coordtest.Response {
				return c.Do(t, http.MethodPost, "/api/v2/recover", body)
			}
			unknown := make([]byte, len(shares["owner0"]))
			if _, err := rand.Read(unknown); err != nil {
				t.Fatal(err)
			}
			for _, f := range []struct {
				what string
				body []byte
				code int
				want string
			}{
				{"wrong signature", recoverBody(t, shares["owner0"], stranger.Sign(t, shares["owner0"])), 401, "signature"},
				{"unknown share", recoverBody(t, unknown, owners[0].Sign(t, unknown)), 400, "does not belong"},
				{"malformed body", []byte(`{"recoverySecret": "%%%"}`), 400, "request body"},
				{"missing signature", encode(t, map[string][]byte{"recoverySecret": shares["owner0"]}), 400, "required"},
				{"oversized body", make([]byte, 21<<10), 413, "larger"},
			} {
				r := post(f.body)
				if r.Code != f.code || !strings.Contains(r.Message, f.want) {
					t.Fatalf("%s: %d %s", f.what, r.Code, r.Message)
				}
			}
			upload := func(name string, secret []byte) recoverAnswer {
				t.Helper()
				r := post(recoverBody(t, secret, keys[name].Sign(t, shares[name])))
				var a recoverAnswer
				if r.Code != http.StatusOK || json.Unmarshal(r.Data, &a) != nil {
					t.Fatalf("uploading %s: %d %s", name, r.Code, r.Message)
				}
				return a
			}
			if tc.needed > 1 {
				if a := upload("owner0", shares["owner0"]); a.Remaining != tc.needed-1 || !strings.Contains(a.Message, "Remaining secrets") {
					t.Fatalf("first share: %+v", a)
				}
				if r := post(recoverBody(t, shares["owner0"], owners[0].Sign(t, shares["owner0"]))); r.Code != 400 || !strings.Contains(r.Message, "already") {
					t.Fatalf("duplicate share: %d %s", r.Code, r.Message)
				}
				if got := statusCode(t, c); got != 1 {
					t.Fatalf("too few shares left recovery: status %d", got)
				}
				// An encrypted share made for this start is useless after a
				// restart, and the shares collected so far are gone.
				pub := ephemeralKey(t, c)
				stale, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, shares["owner1"], nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Stop(); err != nil {
					t.Fatal(err)
				}
				c = start(newMachine)
				if got := statusCode(t, c); got != 1 {
					t.Fatalf("status after a restart between shares = %d", got)
				}
				if r := post(recoverBody(t, stale, owners[1].Sign(t, shares["owner1"]))); r.Code != 400 || !strings.Contains(r.Message, "recover/public-key") {
					t.Fatalf("share encrypted before the restart: %d %s", r.Code, r.Message)
				}
				if a := upload("owner0", shares["owner0"]); a.Remaining != tc.needed-1 {
					t.Fatalf("first share after the restart: %+v", a)
				}
			}
			for i := 1; i < tc.needed-1; i++ {
				name := fmt.Sprintf("owner%d", i)
				upload(name, shares[name])
			}
			last := fmt.Sprintf("owner%d", tc.needed-1)
			ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, ephemeralKey(t, c), shares[last], nil)
			if err != nil {
				t.Fatal(err)
			}
			if a := upload(last, ct); a.Remaining != 0 || a.Message != "Recovery successful." {
				t.Fatalf("last share: %+v", a)
			}
			if got := statusCode(t, c); got != 3 {
				t.Fatalf("status after recovery = %d", got)
			}
			if !c.RootCertificate().Equal(root) {
				t.Fatal("recovery did not restore the root certificate")
			}
			after := activateApp(t, c, uuidA).GetFiles()
			for _, f := range []string{"/shared.hex", "/own.hex", "/user.hex"} {
				if !bytes.Equal(before[f], after[f]) {
					t.Fatalf("%s differs after recovery", f)
				}
			}
			if r := c.Do(t, http.MethodGet, "/api/v2/recover/public-key", nil); r.Code != http.StatusBadRequest {
				t.Fatalf("recovery key after recovery: %d", r.Code)
			}
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
			// The state is sealed for the new machine now.
			c = start(newMachine)
			if got := statusCode(t, c); got != 3 {
				t.Fatalf("status after restarting on the new machine = %d", got)
			}
			if msgs, _ := updateLog(t, c); len(msgs) != 3 || msgs[0] != "Initial manifest set" {
				t.Fatalf("update log after recovery: %v", msgs)
			}
		})
	}
}

// TestRecoveryOfDamagedState shows owners a clear answer when their secret
// is right but the sealed state itself is damaged.
func TestRecoveryOfDamagedState(t *testing.T) {
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	owner := testsupport.NewRecoveryKey(t)
	dir := t.TempDir()
	c := coordtest.Start(t, coordtest.WithSealDir(dir))
	raw := encode(t, govManifest(admin, admin2, nobody, map[string]*testsupport.RecoveryKey{"owner": owner}))
	share := owner.Decrypt(t, c.SetManifest(t, raw)["owner"])
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	snapshot := filepath.Join(dir, "sealed_data")
	data, err := os.ReadFile(snapshot)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-3] ^= 1
	if err := os.WriteFile(snapshot, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c = coordtest.Start(t, coordtest.WithSealDir(dir))
	if got := statusCode(t, c); got != 1 {
		t.Fatalf("status with a damaged state = %d", got)
	}
	r := c.Do(t, http.MethodPost, "/api/v2/recover", recoverBody(t, share, owner.Sign(t, share)))
	if r.Code != http.StatusInternalServerError || !strings.Contains(r.Message, "damaged") || strings.Contains(r.Message, dir) {
		t.Fatalf("recovering a damaged state: %d %s", r.Code, r.Message)
	}
	c.SetManifest(t, raw)
	if got := statusCode(t, c); got != 3 {
		t.Fatalf("status after a new manifest = %d", got)
	}
}
