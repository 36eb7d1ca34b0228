package cli

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/test/coordtest"
)

// user is a manifest user's key pair on disk.
type user struct {
	cert, key string
	certPEM   string
}

// newUser writes a self-signed certificate and its key to the env.
func (e *env) newUser(name string) user {
	e.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		e.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{name},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		e.t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		e.t.Fatal(err)
	}
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return user{
		cert:    e.write(name+".crt", []byte(certPEM)),
		key:     e.write(name+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})),
		certPEM: certPEM,
	}
}

// recoveryKey is a recovery key owner's RSA key on disk.
type recoveryKey struct {
	key    *rsa.PrivateKey
	file   string
	pubPEM string
}

func (e *env) newRecoveryKey(name string) recoveryKey {
	e.t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		e.t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	return recoveryKey{
		key:    key,
		file:   e.write(name+"-recovery.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})),
		pubPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
	}
}

// governanceManifest has users alice (secrets, updates), bob (updates)
// and reader (reads sharedKey), and recovery keys for alice and bob.
func governanceManifest(alice, bob, reader user, recAlice, recBob recoveryKey, extraSecret bool) []byte {
	secrets := map[string]any{
		"sharedKey": map[string]any{"Type": "symmetric-key", "Size": 128, "Shared": true},
		"apiKey":    map[string]any{"Type": "plain", "UserDefined": true},
		"webCert":   map[string]any{"Type": "cert-ecdsa", "UserDefined": true},
	}
	if extraSecret {
		secrets["newKey"] = map[string]any{"Type": "symmetric-key", "Size": 256, "Shared": true}
	}
	m := map[string]any{
		"Packages": map[string]any{"backend": map[string]any{
			"SignerID": strings.Repeat("ab", 32), "ProductID": 43, "SecurityVersion": 3,
		}},
		"Marbles": map[string]any{"backend": map[string]any{
			"Package":    "backend",
			"Parameters": map[string]any{"Env": map[string]any{"KEY": "{{ hex .Secrets.sharedKey }}"}},
		}},
		"Secrets": secrets,
		"Users": map[string]any{
			"alice":  map[string]any{"Certificate": alice.certPEM, "Roles": []string{"secrets", "reader", "updater", "packages"}},
			"bob":    map[string]any{"Certificate": bob.certPEM, "Roles": []string{"updater"}},
			"reader": map[string]any{"Certificate": reader.certPEM, "Roles": []string{"reader"}},
		},
		"Roles": map[string]any{
			"secrets":  map[string]any{"ResourceType": "Secrets", "ResourceNames": []string{"apiKey", "webCert"}, "Actions": []string{"ReadSecret", "WriteSecret"}},
			"updater":  map[string]any{"ResourceType": "Manifest", "Actions": []string{"UpdateManifest"}},
			"packages": map[string]any{"ResourceType": "Packages", "ResourceNames": []string{"backend"}, "Actions": []string{"UpdateSecurityVersion"}},
			"reader":   map[string]any{"ResourceType": "Secrets", "ResourceNames": []string{"sharedKey"}, "Actions": []string{"ReadSecret"}},
		},
		"RecoveryKeys": map[string]any{"alice": recAlice.pubPEM, "bob": recBob.pubPEM},
	}
	out, _ := json.MarshalIndent(m, "", "  ")
	return out
}

// TestGovernance drives secret, manifest update and recovery commands
// against a real Coordinator.
func TestGovernance(t *testing.T) {
	t.Parallel()
	sealDir := t.TempDir()
	c := startCoordinator(t, coordtest.WithSealDir(sealDir))
	addr := c.ClientAddr()
	e := newEnv(t)
	alice, bob, reader, stranger := e.newUser("alice"), e.newUser("bob"), e.newUser("reader"), e.newUser("stranger")
	recAlice, recBob := e.newRecoveryKey("alice"), e.newRecoveryKey("bob")
	manifestFile := e.write("manifest.json", governanceManifest(alice, bob, reader, recAlice, recBob, false))
	asAlice := []string{"-c", alice.cert, "-k", alice.key}

	recoveryFile := e.path("recovery.json")
	r := e.ok("manifest", "set", manifestFile, addr, "-i", "-r", recoveryFile)
	if !strings.Contains(r.stdout, "Recovery data saved to "+recoveryFile) {
		t.Errorf("manifest set -r: %q", r.stdout)
	}
	if st, err := os.Stat(recoveryFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("recovery data file: %v %v", st, err)
	}
	var rec recoveryData
	if err := json.Unmarshal(e.read(recoveryFile), &rec); err != nil || len(rec.RecoverySecrets) != 2 {
		t.Fatalf("recovery data: %+v %v", rec, err)
	}

	t.Run("secrets", func(t *testing.T) {
		e := e.sub(t)
		e.write("secrets.json", []byte(`{"apiKey": {"Key": "`+base64.StdEncoding.EncodeToString([]byte("hunter2-api-key"))+`"}}`))
		r := e.ok(append([]string{"secret", "set", e.path("secrets.json"), addr, "-i"}, asAlice...)...)
		if r.stdout != "Secret(s) successfully set: apiKey\n" {
			t.Errorf("secret set: %q", r.stdout)
		}
		web := e.newUser("web.example")
		e.write("web.pem", []byte(web.certPEM+string(e.read(web.key))))
		e.ok(append([]string{"secret", "set", e.path("web.pem"), addr, "-i", "--from-pem", "webCert"}, asAlice...)...)
		// A certificate with someone else's key is refused before upload.
		e.write("mismatch.pem", []byte(web.certPEM+string(e.read(bob.key))))
		e.fail([]string{"does not belong to the certificate"}, append([]string{"secret", "set", e.path("mismatch.pem"), addr, "-i", "--from-pem", "webCert"}, asAlice...)...)
		e.fail([]string{"unknown field \"Public\""}, append([]string{"secret", "set", e.write("typo.json", []byte(`{"apiKey": {"Public": "AAAA"}}`)), addr, "-i"}, asAlice...)...)
		e.fail([]string{"reading the secret file"}, append([]string{"secret", "set", e.path("none.json"), addr, "-i"}, asAlice...)...)

		out := e.path("secrets-out.json")
		r = e.ok(append([]string{"secret", "get", "apiKey", "webCert", "sharedKey", addr, "-i", "-o", out}, asAlice...)...)
		for _, leak := range []string{"hunter2", base64.StdEncoding.EncodeToString([]byte("hunter2-api-key"))} {
			if strings.Contains(r.stdout+r.stderr, leak) {
				t.Fatalf("secret get printed the secret value: %s", r.stdout)
			}
		}
		for _, want := range []string{"apiKey:\n  Type:          plain", "Value:         15 bytes, written to " + out, "webCert:\n  Type:          cert-ecdsa", `subject "CN=web.example"`, "Public key:", "sharedKey:\n  Type:          symmetric-key\n  Size:          128 bits"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("secret get output lacks %q:\n%s", want, r.stdout)
			}
		}
		if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("secrets file: %v %v", st, err)
		}
		var got map[string]api.Secret
		if err := json.Unmarshal(e.read(out), &got); err != nil || string(got["apiKey"].Private) != "hunter2-api-key" ||
			!bytes.Equal(got["webCert"].Cert, pemBytes(t, web.certPEM)) || len(got["sharedKey"].Private) != 16 {
			t.Fatalf("secrets file content: %v %v", got, err)
		}
		var pub map[string]map[string]any
		if err := json.Unmarshal([]byte(e.ok(append([]string{"secret", "get", "apiKey", addr, "-i", "--format", "json"}, asAlice...)...).stdout), &pub); err != nil ||
			pub["apiKey"]["type"] != "plain" || pub["apiKey"]["public"] != nil {
			t.Fatalf("secret get --format json: %v %v", pub, err)
		}
		r = e.ok(append([]string{"secret", "get", "sharedKey", addr, "-i"}, asAlice...)...)
		if !strings.Contains(r.stdout, "not shown; save it with --output FILE") {
			t.Errorf("secret get without -o: %q", r.stdout)
		}

		e.fail([]string{"HTTP 403", "lacks the permission"}, "secret", "get", "apiKey", addr, "-i", "-c", reader.cert, "-k", reader.key)
		e.ok("secret", "get", "sharedKey", addr, "-i", "-c", reader.cert, "-k", reader.key)
		e.fail([]string{"HTTP 401", "pass the certificate and key of a user in the manifest"}, "secret", "get", "sharedKey", addr, "-i", "-c", stranger.cert, "-k", stranger.key)
		e.fail([]string{"pass --cert and --key"}, "secret", "get", "sharedKey", addr, "-i")
		e.fail([]string{"if any flags in the group [cert key] are set they must all be set"}, "secret", "get", "sharedKey", addr, "-i", "-c", alice.cert)
		e.fail([]string{"do not form a key pair", "--key is the private key of the certificate"}, "secret", "get", "sharedKey", addr, "-i", "-c", alice.cert, "-k", bob.key)
		e.fail([]string{"reading the user certificate (--cert)"}, "secret", "get", "sharedKey", addr, "-i", "-c", e.path("none.crt"), "-k", bob.key)
		e.fail([]string{"takes at least 2 arguments"}, append([]string{"secret", "get", addr}, asAlice...)...)
	})

	t.Run("updates", func(t *testing.T) {
		e := e.sub(t)
		interBefore := pinnedIntermediate(t, e)
		// A package update is applied at once.
		pkgUpdate := e.write("pkg-update.yaml", []byte("Packages:\n  backend:\n    SecurityVersion: 4\n"))
		r := e.ok(append([]string{"manifest", "update", "apply", pkgUpdate, addr}, asAlice...)...)
		if !strings.Contains(r.stdout, "The update was applied.") {
			t.Errorf("package update: %q", r.stdout)
		}
		if !strings.Contains(e.ok("manifest", "log", addr).stdout, `"update":"SecurityVersion increased"`) {
			t.Error("the update log lacks the package update")
		}
		var shown struct {
			Packages map[string]struct{ SecurityVersion int }
		}
		if err := json.Unmarshal([]byte(e.ok("manifest", "get", addr, "-i", "--display-update").stdout), &shown); err != nil ||
			shown.Packages["backend"].SecurityVersion != 4 {
			t.Errorf("manifest get --display-update: %+v %v", shown, err)
		}
		// The update rotated the intermediate; verifying commands refresh it.
		e.ok("certificate", "intermediate", addr, "-i", "-o", e.path("inter.crt"))
		if interAfter := pinnedIntermediate(t, e); interAfter.Equal(interBefore) || !strings.Contains(string(e.read(e.path("inter.crt"))), strings.TrimSpace(certPEM(interAfter))) {
			t.Error("the pinned intermediate was not refreshed after the update")
		}

		// A full update needs alice and bob.
		full := e.write("full-update.json", governanceManifest(alice, bob, reader, recAlice, recBob, true))
		r = e.ok(append([]string{"manifest", "update", "apply", full, addr}, asAlice...)...)
		e.golden("update_apply_pending", r.stdout)
		if got := e.ok("manifest", "update", "get", addr).stdout; got != string(e.read(full)) {
			t.Errorf("update get printed %q", got)
		}
		r = e.ok("manifest", "update", "get", addr, "--missing")
		if !strings.Contains(r.stdout, "Users who may still acknowledge: bob") {
			t.Errorf("update get --missing: %q", r.stdout)
		}
		var missing struct {
			Pending      bool     `json:"pending"`
			MissingUsers []string `json:"missingUsers"`
		}
		if err := json.Unmarshal([]byte(e.ok("manifest", "update", "get", addr, "--missing", "--format", "json").stdout), &missing); err != nil ||
			!missing.Pending || strings.Join(missing.MissingUsers, ",") != "bob" {
			t.Errorf("update get --missing --format json: %+v %v", missing, err)
		}
		e.fail([]string{"pass --cert and --key"}, "manifest", "update", "acknowledge", full, addr)
		var ack struct {
			Applied bool `json:"applied"`
		}
		if err := json.Unmarshal([]byte(e.ok("manifest", "update", "acknowledge", full, addr, "-c", bob.cert, "-k", bob.key, "--format", "json").stdout), &ack); err != nil || !ack.Applied {
			t.Fatalf("acknowledge: %+v %v", ack, err)
		}
		if r := e.fail([]string{"no manifest update is pending"}, "manifest", "update", "get", addr); r.code != 1 {
			t.Errorf("update get after apply: exit %d", r.code)
		}
		if !strings.Contains(e.ok("manifest", "get", addr, "-i").stdout, "newKey") {
			t.Error("the full update was not applied")
		}
		// The full update lowered backend's SecurityVersion from 4 (raised by
		// the package update) to 3: the log records it, and --display-update
		// shows what is enforced, not the earlier raise.
		shownSVN := func() int {
			t.Helper()
			shown.Packages = nil
			if err := json.Unmarshal([]byte(e.ok("manifest", "get", addr, "-i", "--display-update").stdout), &shown); err != nil {
				t.Fatal(err)
			}
			return shown.Packages["backend"].SecurityVersion
		}
		if got := shownSVN(); got != 3 {
			t.Errorf("manifest get --display-update after the lowering full update: SecurityVersion %d, want 3", got)
		}
		if log := e.ok("manifest", "log", addr).stdout; !strings.Contains(log, `"update":"SecurityVersion lowered"`) || !strings.Contains(log, `"old version":4`) {
			t.Errorf("the update log lacks the lowering:\n%s", log)
		}
		pkgUpdate5 := e.write("pkg-update-5.yaml", []byte("Packages:\n  backend:\n    SecurityVersion: 5\n"))
		e.ok(append([]string{"manifest", "update", "apply", pkgUpdate5, addr}, asAlice...)...)
		if got := shownSVN(); got != 5 {
			t.Errorf("manifest get --display-update after raising again: SecurityVersion %d, want 5", got)
		}

		// Cancel.
		again := e.write("again.json", governanceManifest(alice, bob, reader, recAlice, recBob, false))
		e.ok(append([]string{"manifest", "update", "apply", again, addr}, asAlice...)...)
		if got := e.ok("manifest", "update", "cancel", addr, "-c", bob.cert, "-k", bob.key).stdout; got != "Update successfully cancelled\n" {
			t.Errorf("cancel: %q", got)
		}
		e.fail([]string{"no manifest update is pending", "manifest update apply"}, "manifest", "update", "cancel", addr, "-c", bob.cert, "-k", bob.key)
		e.fail([]string{"HTTP 401"}, "manifest", "update", "apply", again, addr, "-c", stranger.cert, "-k", stranger.key)
		e.fail([]string{"HTTP 403"}, "manifest", "update", "apply", pkgUpdate, addr, "-c", bob.cert, "-k", bob.key)
	})

	t.Run("recovery", func(t *testing.T) {
		e := e.sub(t)
		// Make the sealed data key unreadable: the Coordinator restarts in
		// recovery mode with its state intact.
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		breakSealedKey(t, sealDir)
		c2 := startCoordinator(t, coordtest.WithSealDir(sealDir))
		addr2 := c2.ClientAddr()

		// The recovering Coordinator serves a temporary root: the pin refuses it.
		e.fail([]string{"does not chain to the trusted root", "recovery mode"}, "status", addr2)
		// --insecure skips the pin, leaves it as it is, and status explains
		// the temporary root.
		pinBefore := e.pinnedRoot()
		r0 := e.ok("status", addr2, "-i")
		if !strings.HasPrefix(r0.stdout, "1: ") {
			t.Fatalf("status -i in recovery: %q", r0.stdout)
		}
		for _, want := range []string{"--insecure: the Coordinator presents root SHA-256", "leaving the pin unchanged", "temporary root certificate", "marblerun recover"} {
			if !strings.Contains(r0.stderr, want) {
				t.Errorf("status -i in recovery: stderr lacks %q:\n%s", want, r0.stderr)
			}
		}
		if !e.pinnedRoot().Equal(pinBefore) {
			t.Error("status -i replaced the pinned root")
		}
		if got := e.ok("status", addr2, "--coordinator-cert", e.path("recovering.pem"), "-i").stdout; !strings.HasPrefix(got, "1: ") {
			t.Fatalf("status in recovery: %q", got)
		}

		// Alice uploads her encrypted secret as binary.
		encA := e.write("alice.enc", rec.RecoverySecrets["alice"])
		e.fail([]string{"decrypting the recovery secret", "right key"}, "recover", encA, addr2, "-i", "-k", recBob.file)
		r := e.ok("recover", encA, addr2, "-i", "-k", recAlice.file)
		if r.stdout != "Secret successfully uploaded: 1 more secret(s) needed to recover the Coordinator.\n" {
			t.Errorf("recover alice: %q", r.stdout)
		}
		if !strings.Contains(r.stderr, "WARNING: --insecure") {
			t.Errorf("recover -i did not warn: %q", r.stderr)
		}

		// Bob prepares his upload offline, from the base64 text of his secret.
		encBobText := e.write("bob.b64", []byte(base64.StdEncoding.EncodeToString(rec.RecoverySecrets["bob"])+"\n"))
		pubFile := e.path("coordinator.pub")
		e.ok("recover-with-signature", "public-key", addr2, "-i", "-o", pubFile)
		e.ok("recover-with-signature", "encrypt-secret", encBobText, "-k", recBob.file, "--coordinator-pub-key", pubFile, "-o", e.path("bob.enc"))
		e.ok("recover-with-signature", "sign-secret", encBobText, "-k", recBob.file, "-o", e.path("bob.sig"))
		e.fail([]string{`required flag(s) "signature" not set`}, "recover-with-signature", e.path("bob.enc"), addr2, "-i")
		e.fail([]string{`required flag(s) "coordinator-pub-key", "output" not set`}, "recover-with-signature", "encrypt-secret", encBobText, "-k", recBob.file)
		// A signature by the wrong key is refused by the Coordinator.
		e.ok("recover-with-signature", "sign-secret", encBobText, "-k", recBob.file, "-o", e.path("bad.sig"))
		badSig := e.read(e.path("bad.sig"))
		badSig[0] ^= 1
		e.write("bad.sig", badSig)
		e.fail([]string{"HTTP 401", "does not verify"}, "recover-with-signature", e.path("bob.enc"), addr2, "-i", "-s", e.path("bad.sig"))
		e.fail([]string{"already been uploaded"}, "recover", encA, addr2, "-i", "-k", recAlice.file)

		// Bob's share completes the key: the Coordinator resumes with its
		// state and serves the pinned root again.
		e.ok("recover-with-signature", e.path("bob.enc"), addr2, "-i", "-s", e.path("bob.sig"))
		if got := e.ok("status", addr2).stdout; !strings.HasPrefix(got, "3: ") {
			t.Errorf("status after recovery with the pinned root: %q", got)
		}
	})
}

func pemBytes(t *testing.T, s string) []byte {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatal("no PEM")
	}
	return b.Bytes
}

func pinnedIntermediate(t *testing.T, e *env) *x509.Certificate {
	t.Helper()
	_, inter, err := api.ParseCertificateChain(e.read(e.certFile()))
	if err != nil || inter == nil {
		t.Fatalf("pinned intermediate: %v", err)
	}
	return inter
}

// breakSealedKey removes the sealed data key, as a move to another machine
// would make it unreadable: the Coordinator restarts in recovery.
func breakSealedKey(t *testing.T, dir string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, "sealed_key")); err != nil {
		t.Fatal(err)
	}
}
