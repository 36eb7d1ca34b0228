package core

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/internal/manifest"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

// backendFiles activates a backend marble and returns its files.
func backendFiles(t *testing.T, c *Core, uuid string) map[string][]byte {
	t.Helper()
	p, err := activate(c, newMarbleID(t), "backend", uuid, nil)
	if err != nil {
		t.Fatalf("activating backend: %v", err)
	}
	return p.Files
}

func svnOf(c *Core, pkg string) uint {
	return *c.view.Load().dep.manifest.Packages[pkg].SecurityVersion
}

func TestPackageUpdate(t *testing.T) {
	u := newGovUsers(t)
	m := govManifest(u, nil)
	c, st, _ := govCore(t, u, m)
	raw, sig, _ := c.ManifestInfo()
	root, _ := c.RootCertificate()
	before := backendFiles(t, c, uuid1)
	marbleRootBefore, _ := c.MarbleRoot()

	pkgUpdate := func(svn int, pkgs ...string) []byte {
		p := map[string]any{}
		for _, n := range pkgs {
			p[n] = map[string]any{"SecurityVersion": svn}
		}
		return encodeManifest(t, map[string]any{"Packages": p})
	}
	bad := []struct {
		name string
		user *testsupport.User
		raw  []byte
		kind Kind
		want string
	}{
		{"lower", u.alice, pkgUpdate(1, "backend"), KindInvalidArgument, "lower than the current 2"},
		{"unknown package", u.alice, pkgUpdate(5, "nope"), KindInvalidArgument, `"nope" is not defined`},
		{"no role", u.bob, pkgUpdate(5, "backend"), KindPermissionDenied, `"bob"`},
		{"no role for one package", u.alice, pkgUpdate(5, "backend", "frontend"), KindPermissionDenied, `"frontend"`},
		{"other fields", u.alice, []byte(`{"Packages": {"backend": {"SecurityVersion": 5, "Debug": true}}}`), KindInvalidArgument, "only set SecurityVersion"},
		{"no version", u.alice, []byte(`{"Packages": {"backend": {}}}`), KindInvalidArgument, "not set"},
		{"not JSON", u.alice, []byte(`{"Packages":`), KindInvalidArgument, "invalid manifest"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.UpdateManifest(context.Background(), tc.user.Cert, tc.raw)
			if KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (kind %v), want %v with %q", err, KindOf(err), tc.kind, tc.want)
			}
			if svnOf(c, "backend") != 2 {
				t.Fatal("a refused update changed the security version")
			}
		})
	}

	res, err := c.UpdateManifest(context.Background(), u.alice.Cert, pkgUpdate(5, "backend"))
	if err != nil || !res.Applied || res.MissingAcknowledgments != 0 {
		t.Fatalf("raising the security version: %+v %v", res, err)
	}
	if svnOf(c, "backend") != 5 {
		t.Fatalf("security version = %d", svnOf(c, "backend"))
	}
	raw2, sig2, _ := c.ManifestInfo()
	if !bytes.Equal(raw, raw2) || !bytes.Equal(sig, sig2) {
		t.Fatal("a package update changed the manifest the owners set")
	}
	if r, _ := c.RootCertificate(); !r.Equal(root) {
		t.Fatal("a package update changed the root")
	}
	marbleRootAfter, _ := c.MarbleRoot()
	if marbleRootAfter.Equal(marbleRootBefore) {
		t.Fatal("a package update kept the marble root")
	}
	after := backendFiles(t, c, uuid1)
	if bytes.Equal(before["/inter.pem"], after["/inter.pem"]) {
		t.Fatal("marbles activating after a package update get the old intermediate")
	}
	if !bytes.Equal(before["/marbleroot.pem"], certPEM(marbleRootBefore)) || !bytes.Equal(after["/marbleroot.pem"], certPEM(marbleRootAfter)) {
		t.Fatal(".MarbleRun.RootCA does not follow the marble root across a package update")
	}
	if bytes.Equal(before["/sharedcert.pem"], after["/sharedcert.pem"]) {
		t.Fatal("the shared certificate was not reissued under the new marble root")
	}
	for _, f := range []string{"/shared.hex", "/own.hex"} {
		if !bytes.Equal(before[f], after[f]) {
			t.Fatalf("%s changed with a package update", f)
		}
	}
	msgs, entries := logMessages(t, c)
	last := entries[len(entries)-1]
	if msgs[len(msgs)-1] != "SecurityVersion increased" || last["user"] != "alice" || last["package"] != "backend" || last["new version"] != float64(5) {
		t.Fatalf("log = %v", entries)
	}
	if _, err := c.UpdateManifest(context.Background(), u.alice.Cert, pkgUpdate(5, "backend")); err != nil {
		t.Fatalf("repeating the same version: %v", err)
	}
	if _, err := c.UpdateManifest(context.Background(), u.alice.Cert, pkgUpdate(4, "backend")); KindOf(err) != KindInvalidArgument {
		t.Fatalf("lowering below the updated version: %v", err)
	}

	if got := loweredVersions(c.view.Load().dep.manifest, parseTestManifest(t, m)); !slices.Equal(got, []string{"backend: 5 to 2"}) {
		t.Fatalf("lowered versions of the manifest as set: %v", got)
	}

	c2 := newSimCore(t, st)
	if svnOf(c2, "backend") != 5 {
		t.Fatal("the raised security version was lost across a restart")
	}
	current, _ := c.MarbleRoot()
	if mr, _ := c2.MarbleRoot(); !mr.Equal(current) {
		t.Fatal("the marble root changed across a restart")
	}
}

func TestFullUpdateMultiParty(t *testing.T) {
	u := newGovUsers(t)
	m := govManifest(u, nil)
	c, st, _ := govCore(t, u, m)
	before := backendFiles(t, c, uuid1)
	marbleRootBefore, _ := c.MarbleRoot()
	root, _ := c.RootCertificate()

	// The update adds a marble argument and replaces the definition of
	// userPlain; everything else stays.
	next := govManifest(u, nil)
	section(section(next, "Marbles"), "backend")["Parameters"].(map[string]any)["Argv"] = []string{"backend", "--v2"}
	section(next, "Secrets")["userPlain"] = map[string]any{"Type": "plain", "UserDefined": true, "Shared": true}
	newRaw := encodeManifest(t, next)

	if _, err := c.PendingUpdate(); KindOf(err) != KindNotFound {
		t.Fatalf("pending update before any: %v", err)
	}
	if _, err := c.UpdateManifest(context.Background(), u.dave.Cert, newRaw); KindOf(err) != KindPermissionDenied {
		t.Fatalf("update by a user without UpdateManifest: %v", err)
	}
	invalid := govManifest(u, nil)
	delete(invalid, "Packages")
	invalid["Marbles"] = map[string]any{"x": map[string]any{"Package": "nope"}}
	if _, err := c.UpdateManifest(context.Background(), u.alice.Cert, encodeManifest(t, invalid)); KindOf(err) != KindInvalidArgument {
		t.Fatalf("invalid update: %v", err)
	}

	res, err := c.UpdateManifest(context.Background(), u.alice.Cert, newRaw)
	if err != nil || res.Applied || res.MissingAcknowledgments != 1 || !slices.Equal(res.MissingUsers, []string{"bob", "carol"}) {
		t.Fatalf("initiating: %+v %v", res, err)
	}
	p, err := c.PendingUpdate()
	if err != nil || !bytes.Equal(p.Manifest, newRaw) || p.Initiator != "alice" || p.MissingAcknowledgments != 1 {
		t.Fatalf("pending: %+v %v", p, err)
	}
	if mr, _ := c.MarbleRoot(); !mr.Equal(marbleRootBefore) {
		t.Fatal("an unacknowledged update took effect")
	}

	competing := govManifest(u, nil)
	section(competing, "Config")["UpdateThreshold"] = 3
	if _, err := c.UpdateManifest(context.Background(), u.bob.Cert, encodeManifest(t, competing)); KindOf(err) != KindFailedPrecondition || !strings.Contains(err.Error(), "already pending") {
		t.Fatalf("competing update: %v", err)
	}
	if _, err := c.UpdateManifest(context.Background(), u.alice.Cert, encodeManifest(t, map[string]any{"Packages": map[string]any{"backend": map[string]any{"SecurityVersion": 9}}})); KindOf(err) != KindFailedPrecondition {
		t.Fatalf("package update while a full update is pending: %v", err)
	}
	ackErrs := []struct {
		name string
		user *testsupport.User
		raw  []byte
		kind Kind
	}{
		{"different bytes", u.bob, append(bytes.Clone(newRaw), ' '), KindInvalidArgument},
		{"initiator again", u.alice, newRaw, KindInvalidArgument},
		{"no role", u.dave, newRaw, KindPermissionDenied},
		{"no certificate", nil, newRaw, KindUnauthenticated},
	}
	for _, tc := range ackErrs {
		var err error
		if tc.user == nil {
			_, err = c.AcknowledgeUpdate(context.Background(), nil, tc.raw)
		} else {
			_, err = c.AcknowledgeUpdate(context.Background(), tc.user.Cert, tc.raw)
		}
		if KindOf(err) != tc.kind {
			t.Errorf("acknowledge %s: got %v, want kind %v", tc.name, err, tc.kind)
		}
	}
	msgs, _ := logMessages(t, c)
	if msgs[len(msgs)-1] != "Complete Manifest update initiated by user" {
		t.Fatalf("log after initiating: %v", msgs)
	}

	// The pending update survives a restart.
	c = newSimCore(t, st)
	if p, err := c.PendingUpdate(); err != nil || !slices.Equal(p.MissingUsers, []string{"bob", "carol"}) {
		t.Fatalf("pending after restart: %+v %v", p, err)
	}

	res, err = c.AcknowledgeUpdate(context.Background(), u.carol.Cert, newRaw)
	if err != nil || !res.Applied || res.MissingAcknowledgments != 0 || res.RecoverySecrets != nil {
		t.Fatalf("last acknowledgement: %+v %v", res, err)
	}
	if _, err := c.PendingUpdate(); KindOf(err) != KindNotFound {
		t.Fatalf("pending after apply: %v", err)
	}
	raw, sig, _ := c.ManifestInfo()
	if !bytes.Equal(raw, newRaw) {
		t.Fatal("the applied update is not the manifest")
	}
	digest := fingerprint(newRaw)
	if r, _ := c.RootCertificate(); !r.Equal(root) || len(sig) == 0 {
		t.Fatal("root changed or manifest unsigned")
	}
	msgs, entries := logMessages(t, c)
	if got := msgs[len(msgs)-2:]; !slices.Equal(got, []string{"Complete Manifest update acknowledged by user", "Complete Manifest updated"}) {
		t.Fatalf("log after applying: %v", msgs)
	}
	if e := entries[len(entries)-1]; e["manifestFingerprint"] != digest {
		t.Fatalf("applied entry %v", e)
	}
	if e := entries[len(entries)-2]; e["user"] != "carol" || e["missingAcknowledgments"] != float64(0) {
		t.Fatalf("acknowledgement entry %v", e)
	}

	after := backendFiles(t, c, uuid1)
	if bytes.Equal(before["/inter.pem"], after["/inter.pem"]) || bytes.Equal(before["/sharedcert.pem"], after["/sharedcert.pem"]) {
		t.Fatal("the intermediate or the shared certificate was not renewed")
	}
	for _, f := range []string{"/shared.hex", "/own.hex", "/prevown.hex"} {
		if !bytes.Equal(before[f], after[f]) {
			t.Fatalf("%s changed without RotateRootSecret", f)
		}
	}
	got, err := c.ReadSecrets(u.alice.Cert, []string{"userKey"})
	if err != nil || string(got["userKey"].Private) != "0123456789abcdef" {
		t.Fatalf("unchanged user-defined secret lost: %v %v", got, err)
	}
	if _, err := c.ReadSecrets(u.alice.Cert, []string{"userPlain"}); KindOf(err) != KindNotFound {
		t.Fatalf("a user-defined secret whose definition changed kept its value: %v", err)
	}
	if p, err := activate(c, newMarbleID(t), "backend", uuid1, nil); err != nil || !slices.Equal(p.Argv, []string{"backend", "--v2"}) {
		t.Fatalf("argv after update: %v", err)
	}

	t.Run("rotate root secret", func(t *testing.T) {
		rot := govManifest(u, nil)
		section(rot, "Config")["RotateRootSecret"] = true
		rotRaw := encodeManifest(t, rot)
		if _, err := c.UpdateManifest(context.Background(), u.bob.Cert, rotRaw); err != nil {
			t.Fatal(err)
		}
		if _, err := c.AcknowledgeUpdate(context.Background(), u.alice.Cert, rotRaw); err != nil {
			t.Fatal(err)
		}
		rotated := backendFiles(t, c, uuid1)
		for _, f := range []string{"/shared.hex", "/own.hex"} {
			if bytes.Equal(after[f], rotated[f]) {
				t.Fatalf("%s kept with RotateRootSecret", f)
			}
		}
		if !bytes.Equal(rotated["/prevown.hex"], after["/own.hex"]) || !bytes.Equal(rotated["/prevshared.hex"], after["/shared.hex"]) {
			t.Fatal(".Previous does not give the values of before the rotation")
		}
		again := backendFiles(t, newSimCore(t, st), uuid1)
		for _, f := range []string{"/own.hex", "/prevown.hex", "/shared.hex", "/prevshared.hex"} {
			if !bytes.Equal(rotated[f], again[f]) {
				t.Fatalf("%s changed across a restart", f)
			}
		}
	})

	t.Run("cancel", func(t *testing.T) {
		res, err := c.UpdateManifest(context.Background(), u.carol.Cert, newRaw)
		if err != nil || res.Applied {
			t.Fatalf("initiating: %+v %v", res, err)
		}
		if err := c.CancelUpdate(context.Background(), u.dave.Cert); KindOf(err) != KindPermissionDenied {
			t.Fatalf("cancel without role: %v", err)
		}
		if err := c.CancelUpdate(context.Background(), nil); KindOf(err) != KindUnauthenticated {
			t.Fatalf("cancel without certificate: %v", err)
		}
		if err := c.CancelUpdate(context.Background(), u.bob.Cert); err != nil {
			t.Fatal(err)
		}
		if err := c.CancelUpdate(context.Background(), u.bob.Cert); KindOf(err) != KindNotFound {
			t.Fatalf("second cancel: %v", err)
		}
		if _, err := c.AcknowledgeUpdate(context.Background(), u.alice.Cert, newRaw); KindOf(err) != KindNotFound {
			t.Fatalf("acknowledging a cancelled update: %v", err)
		}
		msgs, entries := logMessages(t, c)
		if msgs[len(msgs)-1] != "Complete Manifest update cancelled by user" || entries[len(entries)-1]["user"] != "bob" {
			t.Fatalf("log after cancel: %v", entries[len(entries)-1])
		}
		if _, err := newSimCore(t, st).PendingUpdate(); KindOf(err) != KindNotFound {
			t.Fatalf("cancelled update pending after restart: %v", err)
		}
	})
}

func TestUpdateThresholdAll(t *testing.T) {
	u := newGovUsers(t)
	m := govManifest(u, nil)
	section(m, "Config")["UpdateThreshold"] = 0
	c, _, _ := govCore(t, u, m)
	next := govManifest(u, nil)
	section(next, "Config")["UpdateThreshold"] = 1
	raw := encodeManifest(t, next)
	steps := []struct {
		user    *testsupport.User
		missing int
	}{{u.bob, 2}, {u.alice, 1}, {u.carol, 0}}
	for i, s := range steps {
		var res *UpdateResult
		var err error
		if i == 0 {
			res, err = c.UpdateManifest(context.Background(), s.user.Cert, raw)
		} else {
			res, err = c.AcknowledgeUpdate(context.Background(), s.user.Cert, raw)
		}
		if err != nil || res.MissingAcknowledgments != s.missing || res.Applied != (s.missing == 0) {
			t.Fatalf("step %d (%s): %+v %v", i, s.user.Name, res, err)
		}
	}
	// With threshold 1 the next update applies at once.
	last := govManifest(u, nil)
	section(last, "Config")["UpdateThreshold"] = 1
	section(last, "Config")["FeatureGates"] = []string{}
	res, err := c.UpdateManifest(context.Background(), u.carol.Cert, encodeManifest(t, last))
	if err != nil || !res.Applied {
		t.Fatalf("threshold 1: %+v %v", res, err)
	}
	msgs, _ := logMessages(t, c)
	if got := msgs[len(msgs)-2:]; !slices.Equal(got, []string{"Complete Manifest update initiated by user", "Complete Manifest updated"}) {
		t.Fatalf("log = %v", msgs)
	}
}

func TestUpdateChangesRecoveryKeys(t *testing.T) {
	u := newGovUsers(t)
	k1, k2 := testsupport.NewRecoveryKey(t), testsupport.NewRecoveryKey(t)
	m := govManifest(u, map[string]*testsupport.RecoveryKey{"one": k1})
	section(m, "Config")["UpdateThreshold"] = 1
	c, st, secrets := govCore(t, u, m)
	oldShare := k1.Decrypt(t, secrets["one"])
	activations := backendFiles(t, c, uuid1)

	// An update that keeps the keys returns no new secrets.
	same := govManifest(u, map[string]*testsupport.RecoveryKey{"one": k1})
	section(same, "Config")["UpdateThreshold"] = 1
	section(same, "Config")["FeatureGates"] = []string{}
	res, err := c.UpdateManifest(context.Background(), u.alice.Cert, encodeManifest(t, same))
	if err != nil || !res.Applied || res.RecoverySecrets != nil {
		t.Fatalf("update keeping the recovery keys: %+v %v", res, err)
	}

	next := govManifest(u, map[string]*testsupport.RecoveryKey{"one": k1, "two": k2})
	section(next, "Config")["UpdateThreshold"] = 1
	res, err = c.UpdateManifest(context.Background(), u.alice.Cert, encodeManifest(t, next))
	if err != nil || !res.Applied || len(res.RecoverySecrets) != 2 {
		t.Fatalf("update with a new recovery key: %+v %v", res, err)
	}
	s1, s2 := k1.Decrypt(t, res.RecoverySecrets["one"]), k2.Decrypt(t, res.RecoverySecrets["two"])
	msgsBefore, _ := logMessages(t, c)

	st.LoseSealKey()
	c = newSimCore(t, st)
	if s, _ := c.Status(); s != StateRecovery {
		t.Fatalf("state %v", s)
	}
	if _, err := c.Recover(context.Background(), oldShare, k1.Sign(t, oldShare)); KindOf(err) != KindInvalidArgument || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("a share of the old data key: %v", err)
	}
	if n, err := c.Recover(context.Background(), s1, k1.Sign(t, s1)); err != nil || n != 1 {
		t.Fatalf("first new share: %d %v", n, err)
	}
	if n, err := c.Recover(context.Background(), s2, k2.Sign(t, s2)); err != nil || n != 0 {
		t.Fatalf("second new share: %d %v", n, err)
	}
	if msgs, _ := logMessages(t, c); !slices.Equal(msgs, msgsBefore) {
		t.Fatalf("log after recovery %v, before %v", msgs, msgsBefore)
	}
	if got := backendFiles(t, c, uuid1); !bytes.Equal(got["/shared.hex"], activations["/shared.hex"]) || !bytes.Equal(got["/own.hex"], activations["/own.hex"]) {
		t.Fatal("symmetric secrets changed across the update and recovery")
	}
	var rd recoveryData
	if err := json.Unmarshal(st.RecoveryData(), &rd); err != nil || rd.Layout != layoutXOR || len(rd.Keys) != 2 {
		t.Fatalf("recovery data %+v %v", rd, err)
	}
	if blob := st.RecoveryData(); bytes.Contains(blob, s1) || bytes.Contains(blob, []byte(base64.StdEncoding.EncodeToString(s1))) {
		t.Fatal("the recovery data contains a share")
	}
}

// parseTestManifest parses a test manifest document.
func parseTestManifest(t *testing.T, m map[string]any) *manifest.Manifest {
	t.Helper()
	parsed, err := manifest.Parse(encodeManifest(t, m))
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}
