package coordinator_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

const uuidB = "0b5c8f3e-6a1d-4e2f-9b7c-8d9e0f1a2b3c"

type updateAnswer struct {
	Message                string            `json:"message"`
	MissingAcknowledgments int               `json:"missingAcknowledgments"`
	MissingUsers           []string          `json:"missingUsers"`
	RecoverySecrets        map[string][]byte `json:"recoverySecrets"`
}

func decodeUpdate(t *testing.T, r coordtest.Response) updateAnswer {
	t.Helper()
	var a updateAnswer
	if r.Code != http.StatusOK || json.Unmarshal(r.Data, &a) != nil {
		t.Fatalf("update answer %d %s %s", r.Code, r.Message, r.Data)
	}
	return a
}

// TestManifestUpdatesOverHTTP drives package and full updates through the
// client API, checks the update log after every step and what marbles
// activating afterwards receive.
func TestManifestUpdatesOverHTTP(t *testing.T) {
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	third := testsupport.NewUser(t, "third")
	dir := t.TempDir()
	c := coordtest.Start(t, coordtest.WithSealDir(dir))
	m := govManifest(admin, admin2, nobody, nil)
	sub(m, "Users")["third"] = map[string]any{"Certificate": third.CertPEM, "Roles": []string{"update"}}
	c.SetManifest(t, encode(t, m))
	if r := c.Do(t, http.MethodPost, "/api/v2/secrets", userSecretsBody(t, []byte("0123456789abcdef")), admin.TLS); r.Code != http.StatusOK {
		t.Fatalf("secrets: %d %s", r.Code, r.Message)
	}
	wantLog := []string{"Initial manifest set", "Secret set", "Secret set"}
	checkLog := func(t *testing.T) []map[string]any {
		t.Helper()
		msgs, entries := updateLog(t, c)
		if !slices.Equal(msgs, wantLog) {
			t.Fatalf("update log\n got %q\nwant %q", msgs, wantLog)
		}
		return entries
	}
	checkLog(t)
	first := activateApp(t, c, uuidA).GetFiles()
	outer := t

	t.Run("package update", func(t *testing.T) {
		r := c.Do(t, http.MethodPost, "/api/v2/update", manifestBody(t, []byte(`{"Packages": {"app": {"SecurityVersion": 0}}}`)), admin.TLS)
		if r.Code != http.StatusBadRequest || !strings.Contains(r.Message, "lower") {
			t.Fatalf("lowering: %d %s", r.Code, r.Message)
		}
		checkLog(t)
		a := decodeUpdate(t, c.Do(t, http.MethodPost, "/api/v2/update", manifestBody(t, []byte(`{"Packages": {"app": {"SecurityVersion": 4}}}`)), admin.TLS))
		if a.MissingAcknowledgments != 0 || len(a.MissingUsers) != 0 || a.RecoverySecrets != nil {
			t.Fatalf("package update answer %+v", a)
		}
		wantLog = append(wantLog, "SecurityVersion increased")
		e := checkLog(t)
		if last := e[len(e)-1]; last["package"] != "app" || last["new version"] != float64(4) || last["user"] != "admin" {
			t.Fatalf("log entry %v", last)
		}
		r = c.Do(t, http.MethodPost, "/update", []byte(`{"Packages": {"app": {"SecurityVersion": 3}}}`), admin2.TLS)
		if r.Code != http.StatusBadRequest {
			t.Fatalf("lowering below the raised version over v1: %d %s", r.Code, r.Message)
		}
		after := activateApp(t, c, uuidA).GetFiles()
		if bytes.Equal(first["/inter.pem"], after["/inter.pem"]) || bytes.Equal(first["/sharedcert.pem"], after["/sharedcert.pem"]) {
			t.Fatal("no new intermediate or shared certificate after the package update")
		}
		if !bytes.Equal(first["/shared.hex"], after["/shared.hex"]) || !bytes.Equal(first["/own.hex"], after["/own.hex"]) {
			t.Fatal("symmetric keys changed with a package update")
		}
		first = after
	})

	// Full updates carry the raised security version over.
	withRaisedSVN := func(m map[string]any) map[string]any {
		sub(sub(m, "Packages"), "app")["SecurityVersion"] = 4
		return m
	}
	next := withRaisedSVN(govManifest(admin, admin2, nobody, nil))
	sub(next, "Users")["third"] = map[string]any{"Certificate": third.CertPEM, "Roles": []string{"update"}}
	sub(sub(sub(next, "Marbles"), "app"), "Parameters")["Argv"] = []string{"app", "--v2"}
	nextRaw := encode(t, next)
	fp := fingerprintOf(nextRaw)

	t.Run("multi-party update", func(t *testing.T) {
		a := decodeUpdate(t, c.Do(t, http.MethodPost, "/api/v2/update", manifestBody(t, nextRaw), admin.TLS))
		if a.MissingAcknowledgments != 1 || !slices.Equal(a.MissingUsers, []string{"admin2", "third"}) {
			t.Fatalf("initiating: %+v", a)
		}
		wantLog = append(wantLog, "Complete Manifest update initiated by user")
		e := checkLog(t)
		if last := e[len(e)-1]; last["user"] != "admin" || last["manifestFingerprint"] != fp || last["missingAcknowledgments"] != float64(1) {
			t.Fatalf("log entry %v", last)
		}

		r := c.Do(t, http.MethodGet, "/api/v2/update-manifest", nil)
		var p struct {
			Manifest     []byte   `json:"manifest"`
			Message      string   `json:"message"`
			MissingUsers []string `json:"missingUsers"`
		}
		if r.Code != http.StatusOK || json.Unmarshal(r.Data, &p) != nil || !bytes.Equal(p.Manifest, nextRaw) || p.Message == "" || len(p.MissingUsers) != 2 {
			t.Fatalf("pending update: %d %s", r.Code, r.Data)
		}

		competing := govManifest(admin, admin2, nobody, nil)
		r = c.Do(t, http.MethodPost, "/api/v2/update", manifestBody(t, encode(t, competing)), admin2.TLS)
		if r.Code != http.StatusBadRequest || !strings.Contains(r.Message, "already pending") {
			t.Fatalf("competing update: %d %s", r.Code, r.Message)
		}
		r = c.Do(t, http.MethodPost, "/api/v2/update-manifest", manifestBody(t, encode(t, competing)), admin2.TLS)
		if r.Code != http.StatusBadRequest || !strings.Contains(r.Message, "differs") {
			t.Fatalf("acknowledging other bytes: %d %s", r.Code, r.Message)
		}
		r = c.Do(t, http.MethodPost, "/api/v2/update-manifest", manifestBody(t, nextRaw), admin.TLS)
		if r.Code != http.StatusBadRequest || !strings.Contains(r.Message, "already acknowledged") {
			t.Fatalf("acknowledging twice: %d %s", r.Code, r.Message)
		}
		checkLog(t)

		// The pending update survives a restart.
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		c = coordtest.Start(outer, coordtest.WithSealDir(dir))
		a = decodeUpdate(t, c.Do(t, http.MethodPost, "/api/v2/update-manifest", manifestBody(t, nextRaw), third.TLS))
		if a.MissingAcknowledgments != 0 || !strings.Contains(a.Message, "applied") {
			t.Fatalf("last acknowledgement: %+v", a)
		}
		wantLog = append(wantLog, "Complete Manifest update acknowledged by user", "Complete Manifest updated")
		e = checkLog(t)
		if last := e[len(e)-1]; last["manifestFingerprint"] != fp {
			t.Fatalf("log entry %v", last)
		}
		if r := c.Do(t, http.MethodGet, "/api/v2/update-manifest", nil); r.Code != http.StatusNotFound {
			t.Fatalf("pending after apply: %d", r.Code)
		}
		r = c.Do(t, http.MethodGet, "/api/v2/manifest", nil)
		var man struct {
			Fingerprint string `json:"manifestFingerprint"`
		}
		if json.Unmarshal(r.Data, &man) != nil || man.Fingerprint != fp {
			t.Fatalf("manifest after update: %s", r.Data)
		}
		p2 := activateApp(t, c, uuidA)
		after := p2.GetFiles()
		if !slices.Equal(p2.GetArgv(), []string{"app", "--v2"}) {
			t.Fatalf("argv = %v", p2.GetArgv())
		}
		if bytes.Equal(first["/inter.pem"], after["/inter.pem"]) || bytes.Equal(first["/sharedcert.pem"], after["/sharedcert.pem"]) {
			t.Fatal("no new intermediate or shared certificate after the update")
		}
		for _, f := range []string{"/shared.hex", "/own.hex", "/user.hex"} {
			if !bytes.Equal(first[f], after[f]) {
				t.Fatalf("%s changed without RotateRootSecret", f)
			}
		}
		first = after
	})

	t.Run("cancel", func(t *testing.T) {
		decodeUpdate(t, c.Do(t, http.MethodPost, "/update", nextRaw, admin2.TLS))
		wantLog = append(wantLog, "Complete Manifest update initiated by user")
		checkLog(t)
		if r := c.Do(t, http.MethodPost, "/api/v2/update-cancel", nil, nobody.TLS); r.Code != http.StatusForbidden {
			t.Fatalf("cancel without role: %d", r.Code)
		}
		r := c.Do(t, http.MethodPost, "/update-cancel", nil, third.TLS)
		var msg string
		if r.Code != http.StatusOK || json.Unmarshal(r.Data, &msg) != nil || msg != "Update successfully cancelled" {
			t.Fatalf("v1 cancel: %d %s", r.Code, r.Data)
		}
		wantLog = append(wantLog, "Complete Manifest update cancelled by user")
		e := checkLog(t)
		if e[len(e)-1]["user"] != "third" {
			t.Fatalf("log entry %v", e[len(e)-1])
		}
		if r := c.Do(t, http.MethodPost, "/api/v2/update-cancel", nil, third.TLS); r.Code != http.StatusNotFound {
			t.Fatalf("cancel with nothing pending: %d", r.Code)
		}
		if r := c.Do(t, http.MethodPost, "/api/v2/update-manifest", manifestBody(t, nextRaw), admin.TLS); r.Code != http.StatusNotFound {
			t.Fatalf("acknowledge with nothing pending: %d", r.Code)
		}
	})

	t.Run("rotate root secret", func(t *testing.T) {
		rot := withRaisedSVN(govManifest(admin, admin2, nobody, nil))
		sub(rot, "Users")["third"] = map[string]any{"Certificate": third.CertPEM, "Roles": []string{"update"}}
		sub(rot, "Config")["RotateRootSecret"] = true
		rotRaw := encode(t, rot)
		decodeUpdate(t, c.Do(t, http.MethodPost, "/api/v2/update", manifestBody(t, rotRaw), third.TLS))
		r := c.Do(t, http.MethodPost, "/update-manifest", rotRaw, admin.TLS)
		var msg string
		if r.Code != http.StatusOK || json.Unmarshal(r.Data, &msg) != nil || !strings.Contains(msg, "applied") {
			t.Fatalf("v1 acknowledgement: %d %s", r.Code, r.Data)
		}
		wantLog = append(wantLog, "Complete Manifest update initiated by user", "Complete Manifest update acknowledged by user", "Complete Manifest updated")
		checkLog(t)
		rotated := activateApp(t, c, uuidA).GetFiles()
		if bytes.Equal(rotated["/own.hex"], first["/own.hex"]) || bytes.Equal(rotated["/shared.hex"], first["/shared.hex"]) {
			t.Fatal("symmetric keys kept with RotateRootSecret")
		}
		if !bytes.Equal(rotated["/prevown.hex"], first["/own.hex"]) {
			t.Fatal(".Previous.Secrets.ownKey is not the key before the rotation")
		}
		if !bytes.Equal(rotated["/user.hex"], first["/user.hex"]) {
			t.Fatal("a user-defined secret changed with the rotation")
		}
		other := activateApp(t, c, uuidB).GetFiles()
		if bytes.Equal(other["/own.hex"], rotated["/own.hex"]) || !bytes.Equal(other["/shared.hex"], rotated["/shared.hex"]) {
			t.Fatal("per-marble and shared keys are mixed up")
		}
	})

	t.Run("new recovery keys", func(t *testing.T) {
		owner := testsupport.NewRecoveryKey(t)
		keyed := withRaisedSVN(govManifest(admin, admin2, nobody, map[string]*testsupport.RecoveryKey{"owner": owner}))
		sub(keyed, "Users")["third"] = map[string]any{"Certificate": third.CertPEM, "Roles": []string{"update"}}
		keyedRaw := encode(t, keyed)
		if a := decodeUpdate(t, c.Do(t, http.MethodPost, "/api/v2/update", manifestBody(t, keyedRaw), admin.TLS)); a.RecoverySecrets != nil {
			t.Fatal("recovery secrets before the update applies")
		}
		a := decodeUpdate(t, c.Do(t, http.MethodPost, "/api/v2/update-manifest", manifestBody(t, keyedRaw), third.TLS))
		if len(a.RecoverySecrets) != 1 || len(owner.Decrypt(t, a.RecoverySecrets["owner"])) != 32 {
			t.Fatalf("the acknowledgement that applies new recovery keys returns %+v", a)
		}
		wantLog = append(wantLog, "Complete Manifest update initiated by user", "Complete Manifest update acknowledged by user", "Complete Manifest updated")
		checkLog(t)
	})
}

// TestSecretsOverHTTP checks the secret endpoints' wire format.
func TestSecretsOverHTTP(t *testing.T) {
	admin, admin2, nobody := testsupport.NewUser(t, "admin"), testsupport.NewUser(t, "admin2"), testsupport.NewUser(t, "nobody")
	c := coordtest.Start(t)
	c.SetManifest(t, encode(t, govManifest(admin, admin2, nobody, nil)))
	if r := c.Do(t, http.MethodPost, "/secrets", []byte(`{"userKey": {"key": "MDEyMzQ1Njc4OWFiY2RlZg=="}, "userPlain": {"KEY": "cGxhaW4="}}`), admin.TLS); r.Code != http.StatusOK || string(r.Data) != "null" {
		t.Fatalf("v1 upload with field names in other cases: %d %s %s", r.Code, r.Message, r.Data)
	}
	r := c.Do(t, http.MethodGet, "/api/v2/secrets?s=userkey", nil, admin.TLS)
	if r.Code != http.StatusBadRequest || !strings.Contains(r.Message, "not defined") {
		t.Fatalf("secret names are case-sensitive: %d %s", r.Code, r.Message)
	}
	r = c.Do(t, http.MethodGet, "/api/v2/secrets?s=userKey&s=sharedKey", nil, admin2.TLS)
	var v2 struct {
		Secrets map[string]struct {
			Type        string
			Size        int
			UserDefined bool
			Private     []byte
			Public      []byte
		} `json:"secrets"`
	}
	if r.Code != http.StatusOK || json.Unmarshal(r.Data, &v2) != nil {
		t.Fatalf("v2 read: %d %s", r.Code, r.Data)
	}
	if s := v2.Secrets["userKey"]; s.Type != "symmetric-key" || s.Size != 128 || !s.UserDefined || string(s.Private) != "0123456789abcdef" {
		t.Fatalf("userKey = %+v", s)
	}
	if s := v2.Secrets["sharedKey"]; len(s.Private) != 16 || s.UserDefined {
		t.Fatalf("sharedKey = %+v", s)
	}
	r = c.Do(t, http.MethodGet, "/secrets?s=userPlain", nil, admin.TLS)
	var v1 map[string]struct{ Private []byte }
	if r.Code != http.StatusOK || json.Unmarshal(r.Data, &v1) != nil || string(v1["userPlain"].Private) != "plain" {
		t.Fatalf("v1 read: %d %s", r.Code, r.Data)
	}
}

func fingerprintOf(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}
