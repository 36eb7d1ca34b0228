package coordinator_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

// These tests rehearse recovery as MarbleRun's users do: they stop a
// Coordinator process in simulation, remove sealed_key from its seal
// folder and start it again, which must enter recovery with the state
// untouched; then the owners recover it through the client API.

// stateFiles returns the sealed state files of dir (not the lock), by name.
func stateFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, name := range []string{"sealed_data", "journal", "sealed_key"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	return files
}

// status returns the status code and message p reports.
func (p *proc) status(t *testing.T) (int, string) {
	t.Helper()
	var s struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if r := p.do(t, http.MethodGet, "/api/v2/status", nil); r.Code != http.StatusOK || json.Unmarshal(r.Data, &s) != nil {
		t.Fatalf("status: %d %s", r.Code, r.Data)
	}
	return s.Code, s.Message
}

// setManifestProc sets raw on p and returns the encrypted recovery secrets.
func setManifestProc(t *testing.T, p *proc, raw []byte) map[string][]byte {
	t.Helper()
	r := p.do(t, http.MethodPost, "/api/v2/manifest", manifestBody(t, raw))
	var out struct {
		RecoverySecrets map[string][]byte
	}
	if r.Code != http.StatusOK || json.Unmarshal(r.Data, &out) != nil {
		t.Fatalf("manifest: %d %s %s", r.Code, r.Message, r.Data)
	}
	return out.RecoverySecrets
}

// ephemeralKeyProc fetches p's ephemeral recovery key.
func ephemeralKeyProc(t *testing.T, p *proc) *rsa.PublicKey {
	t.Helper()
	r := p.do(t, http.MethodGet, "/api/v2/recover/public-key", nil)
	var k struct {
		Key []byte `json:"ephemeralPublicKey"`
	}
	if r.Code != http.StatusOK || json.Unmarshal(r.Data, &k) != nil {
		t.Fatalf("recovery public key: %d %s", r.Code, r.Data)
	}
	pub, err := x509.ParsePKIXPublicKey(k.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pub.(*rsa.PublicKey)
}

// removeSealedKeyAndRestart stops p, removes sealed_key and starts the
// Coordinator again, which must enter recovery without touching the other
// files.
func removeSealedKeyAndRestart(t *testing.T, p *proc, bin, dir string) *proc {
	t.Helper()
	p.kill(t)
	// (An older Coordinator kept the key inside sealed_data and wrote no
	// sealed_key; the status check below is what tells.)
	if err := os.Remove(filepath.Join(dir, "sealed_key")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("removing sealed_key: %v", err)
	}
	before := stateFiles(t, dir)
	p = startProc(t, bin, dir)
	if code, msg := p.status(t); code != 1 {
		t.Fatalf("status %d (%s) after removing sealed_key, want 1 (recovery)", code, msg)
	}
	if after := stateFiles(t, dir); !maps.EqualFunc(before, after, bytes.Equal) {
		t.Fatalf("entering recovery changed the state files: %v -> %v", slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
	}
	return p
}

// recoverProc uploads the shares of names, the last one encrypted with the
// ephemeral key, and checks the answers.
func recoverProc(t *testing.T, p *proc, keys map[string]*testsupport.RecoveryKey, shares map[string][]byte, names ...string) {
	t.Helper()
	for i, name := range names {
		secret := shares[name]
		if i == len(names)-1 {
			ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, ephemeralKeyProc(t, p), secret, nil)
			if err != nil {
				t.Fatal(err)
			}
			secret = ct
		}
		r := p.do(t, http.MethodPost, "/api/v2/recover", recoverBody(t, secret, keys[name].Sign(t, shares[name])))
		var a recoverAnswer
		if r.Code != http.StatusOK || json.Unmarshal(r.Data, &a) != nil || a.Remaining != len(names)-1-i {
			t.Fatalf("uploading the secret of %s: %d %s %s", name, r.Code, r.Message, r.Data)
		}
	}
	if code, msg := p.status(t); code != 3 {
		t.Fatalf("status %d (%s) after recovery", code, msg)
	}
}

func decryptAll(t *testing.T, keys map[string]*testsupport.RecoveryKey, encrypted map[string][]byte) map[string][]byte {
	t.Helper()
	shares := map[string][]byte{}
	for name, ct := range encrypted {
		shares[name] = keys[name].Decrypt(t, ct)
	}
	return shares
}

func sameFiles(t *testing.T, what string, got, want map[string][]byte) {
	t.Helper()
	for _, f := range []string{"/shared.hex", "/own.hex", "/user.hex"} {
		if len(want[f]) == 0 || !bytes.Equal(got[f], want[f]) {
			t.Fatalf("%s: %s differs", what, f)
		}
	}
}

func TestRecoveryRehearsalWithProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the Coordinator binary")
	}
	bin := filepath.Join(testsupport.GoBuild(t, "github.com/marblemesh/marblemesh/cmd/coordinator"), "coordinator")
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	owners := map[string]*testsupport.RecoveryKey{"k0": testsupport.NewRecoveryKey(t), "k1": testsupport.NewRecoveryKey(t), "k2": testsupport.NewRecoveryKey(t)}
	pick := func(names ...string) map[string]*testsupport.RecoveryKey {
		out := map[string]*testsupport.RecoveryKey{}
		for _, n := range names {
			out[n] = owners[n]
		}
		return out
	}
	// deploy starts a Coordinator on a new seal folder with manifest m and
	// a user-defined secret, and returns what a marble receives.
	deploy := func(t *testing.T, m map[string]any) (p *proc, dir string, shares map[string][]byte, files map[string][]byte) {
		t.Helper()
		dir = t.TempDir()
		p = startProc(t, bin, dir)
		encrypted := setManifestProc(t, p, encode(t, m))
		if r := p.do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("0123456789abcdef")), admin.TLS); r.Code != http.StatusOK {
			t.Fatalf("secrets: %d %s", r.Code, r.Message)
		}
		return p, dir, decryptAll(t, owners, encrypted), activateProc(t, p)
	}

	for _, tc := range []struct {
		name      string
		keys      []string
		threshold int
		upload    []string
	}{
		{"single key", []string{"k0"}, 0, []string{"k0"}},
		{"three of three", []string{"k0", "k1", "k2"}, 0, []string{"k2", "k0", "k1"}},
		{"two of three", []string{"k0", "k1", "k2"}, 2, []string{"k2", "k0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := govManifest(admin, admin2, nobody, pick(tc.keys...))
			sub(m, "Config")["RecoveryThreshold"] = tc.threshold
			p, dir, shares, files := deploy(t, m)
			base := p.observe(t)
			p = removeSealedKeyAndRestart(t, p, bin, dir)
			recoverProc(t, p, owners, shares, tc.upload...)
			o := p.observe(t)
			if o.root != base.root || o.fingerprint != base.fingerprint || !slices.Equal(o.log, base.log) {
				t.Fatal("the recovered state differs from the one before")
			}
			sameFiles(t, "after recovery", activateProc(t, p), files)
			// Recovery sealed the key again: a restart resumes.
			p.kill(t)
			if _, err := os.Stat(filepath.Join(dir, "sealed_key")); err != nil {
				t.Fatalf("no sealed_key after recovery: %v", err)
			}
			p = startProc(t, bin, dir)
			if code, _ := p.status(t); code != 3 {
				t.Fatalf("status %d after restarting a recovered Coordinator", code)
			}
		})
	}

	t.Run("after a recovery key change", func(t *testing.T) {
		p, dir, oldShares, files := deploy(t, govManifest(admin, admin2, nobody, pick("k0")))
		next := encode(t, govManifest(admin, admin2, nobody, pick("k1", "k2")))
		if r := p.do(t, http.MethodPost, "/api/v2/update", manifestBody(t, next), admin.TLS); r.Code != http.StatusOK {
			t.Fatalf("update: %d %s", r.Code, r.Message)
		}
		a := decodeUpdate(t, p.do(t, http.MethodPost, "/api/v2/update-manifest", manifestBody(t, next), admin2.TLS))
		if len(a.RecoverySecrets) != 2 {
			t.Fatalf("the update returned %d recovery secrets, want 2", len(a.RecoverySecrets))
		}
		shares := decryptAll(t, owners, a.RecoverySecrets)
		p = removeSealedKeyAndRestart(t, p, bin, dir)
		// The secret of the replaced key opens nothing any more.
		if r := p.do(t, http.MethodPost, "/api/v2/recover", recoverBody(t, oldShares["k0"], owners["k0"].Sign(t, oldShares["k0"]))); r.Code != http.StatusBadRequest {
			t.Fatalf("the old recovery secret: %d %s", r.Code, r.Message)
		}
		recoverProc(t, p, owners, shares, "k1", "k2")
		if o := p.observe(t); o.fingerprint != fingerprintOf(next) {
			t.Fatalf("recovered manifest %s, want the updated one", o.fingerprint)
		}
		sameFiles(t, "after recovery", activateProc(t, p), files)
	})

	t.Run("reset by a new manifest", func(t *testing.T) {
		p, dir, _, files := deploy(t, govManifest(admin, admin2, nobody, pick("k0")))
		base := p.observe(t)
		p = removeSealedKeyAndRestart(t, p, bin, dir)
		other := govManifest(admin, admin2, nobody, pick("k1"))
		sub(sub(sub(other, "Marbles"), "app"), "Parameters")["Argv"] = []string{"app", "new"}
		raw := encode(t, other)
		if len(setManifestProc(t, p, raw)) != 1 {
			t.Fatal("the new manifest returned no recovery secret")
		}
		o := p.observe(t)
		if o.status != 3 || o.fingerprint != fingerprintOf(raw) || o.root == base.root {
			t.Fatalf("after a new manifest: status %d, fingerprint %s, root same %v", o.status, o.fingerprint, o.root == base.root)
		}
		if r := p.do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("fedcba9876543210")), admin.TLS); r.Code != http.StatusOK {
			t.Fatalf("secrets: %d %s", r.Code, r.Message)
		}
		if got := activateProc(t, p); bytes.Equal(got["/own.hex"], files["/own.hex"]) {
			t.Fatal("the new manifest kept the old secrets")
		}
		// The old state was moved aside, not deleted.
		entries, _ := filepath.Glob(filepath.Join(dir, "discarded-*", "sealed_data"))
		if len(entries) != 1 {
			t.Fatalf("discarded states: %v", entries)
		}
		p.kill(t)
		p = startProc(t, bin, dir)
		if code, _ := p.status(t); code != 3 {
			t.Fatalf("status %d after restarting with the new manifest", code)
		}
	})

	t.Run("seal mode Disabled", func(t *testing.T) {
		m := govManifest(admin, admin2, nobody, pick("k0"))
		sub(m, "Config")["SealMode"] = "Disabled"
		p, dir, shares, files := deploy(t, m)
		if code, msg := p.status(t); code != 3 || !strings.Contains(msg, "Seal mode: Disabled.") {
			t.Fatalf("status %d %q", code, msg)
		}
		for round := range 2 {
			if _, err := os.Stat(filepath.Join(dir, "sealed_key")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("round %d: sealed_key exists in seal mode Disabled: %v", round, err)
			}
			p.kill(t)
			before := stateFiles(t, dir)
			p = startProc(t, bin, dir)
			if code, msg := p.status(t); code != 1 || !strings.Contains(msg, "Seal mode: Disabled.") {
				t.Fatalf("round %d: status %d (%s) after a restart in seal mode Disabled, want 1", round, code, msg)
			}
			if after := stateFiles(t, dir); !maps.EqualFunc(before, after, bytes.Equal) {
				t.Fatalf("round %d: entering recovery changed the state files", round)
			}
			recoverProc(t, p, owners, shares, "k0")
			sameFiles(t, fmt.Sprintf("round %d", round), activateProc(t, p), files)
		}
		// A manifest with Disabled and no recovery keys is refused.
		other := govManifest(admin, admin2, nobody, nil)
		sub(other, "Config")["SealMode"] = "Disabled"
		fresh := startProc(t, bin, t.TempDir())
		if r := fresh.do(t, http.MethodPost, "/api/v2/manifest", manifestBody(t, encode(t, other))); r.Code != http.StatusBadRequest || !strings.Contains(r.Message, "RecoveryKeys") {
			t.Fatalf("Disabled without recovery keys: %d %s", r.Code, r.Message)
		}
	})
}
