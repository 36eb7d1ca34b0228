package core

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

func TestRecoveryLayouts(t *testing.T) {
	u := newGovUsers(t)
	keys := []*testsupport.RecoveryKey{testsupport.NewRecoveryKey(t), testsupport.NewRecoveryKey(t), testsupport.NewRecoveryKey(t)}
	stranger := testsupport.NewRecoveryKey(t)
	tests := []struct {
		name      string
		keys      int
		threshold int
		needed    int
		shareLen  int
	}{
		{"one key", 1, 0, 1, 32},
		{"all of three", 3, 0, 3, 32},
		{"all of three by threshold", 3, 3, 3, 32},
		{"two of three", 3, 2, 2, 33},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			owners := map[string]*testsupport.RecoveryKey{}
			for i := 0; i < tc.keys; i++ {
				owners[fmt.Sprintf("owner%d", i)] = keys[i]
			}
			m := govManifest(u, owners)
			section(m, "Config")["RecoveryThreshold"] = tc.threshold
			c, st, encrypted := govCore(t, u, m)
			if len(encrypted) != tc.keys {
				t.Fatalf("%d recovery secrets for %d keys", len(encrypted), tc.keys)
			}
			shares := map[string][]byte{}
			for name, ct := range encrypted {
				shares[name] = owners[name].Decrypt(t, ct)
				if len(shares[name]) != tc.shareLen {
					t.Fatalf("share of %s is %d bytes, want %d", name, len(shares[name]), tc.shareLen)
				}
			}
			root, _ := c.RootCertificate()
			raw, _, _ := c.ManifestInfo()
			files := backendFiles(t, c, uuid1)
			if _, err := c.Recover(context.Background(), shares["owner0"], owners["owner0"].Sign(t, shares["owner0"])); KindOf(err) != KindFailedPrecondition {
				t.Fatalf("recover outside recovery mode: %v", err)
			}
			if _, err := c.RecoveryPublicKey(); KindOf(err) != KindFailedPrecondition {
				t.Fatalf("recovery key outside recovery mode: %v", err)
			}

			st.LoseSealKey()
			c = newSimCore(t, st)
			if s, _ := c.Status(); s != StateRecovery {
				t.Fatalf("state after losing the seal key: %v", s)
			}
			upload := func(name string, secret []byte, key *testsupport.RecoveryKey) (int, error) {
				return c.Recover(context.Background(), secret, key.Sign(t, shares[name]))
			}
			fails := []struct {
				what   string
				secret []byte
				sig    []byte
				kind   Kind
				want   string
			}{
				{"wrong signature", shares["owner0"], stranger.Sign(t, shares["owner0"]), KindUnauthenticated, "signature"},
				{"signature over something else", shares["owner0"], owners["owner0"].Sign(t, []byte("other")), KindUnauthenticated, "signature"},
				{"unknown share", bytes.Repeat([]byte{7}, tc.shareLen), owners["owner0"].Sign(t, bytes.Repeat([]byte{7}, tc.shareLen)), KindInvalidArgument, "does not belong"},
				{"empty", nil, []byte("x"), KindInvalidArgument, "empty"},
				{"encrypted before any ephemeral key", make([]byte, 256), []byte("x"), KindInvalidArgument, "recover/public-key"},
			}
			for _, f := range fails {
				if _, err := c.Recover(context.Background(), f.secret, f.sig); KindOf(err) != f.kind || !strings.Contains(err.Error(), f.want) {
					t.Fatalf("%s: got %v, want kind %v with %q", f.what, err, f.kind, f.want)
				}
			}

			if tc.needed > 1 {
				n, err := upload("owner0", shares["owner0"], owners["owner0"])
				if err != nil || n != tc.needed-1 {
					t.Fatalf("first share: %d %v", n, err)
				}
				if _, err := upload("owner0", shares["owner0"], owners["owner0"]); KindOf(err) != KindInvalidArgument || !strings.Contains(err.Error(), "already") {
					t.Fatalf("duplicate share: %v", err)
				}
				if s, _ := c.Status(); s != StateRecovery {
					t.Fatal("too few shares ended recovery")
				}
				// Collected shares live in memory only: a restart starts over.
				c = newSimCore(t, st)
				n, err = upload("owner0", shares["owner0"], owners["owner0"])
				if err != nil || n != tc.needed-1 {
					t.Fatalf("first share after a restart: %d %v", n, err)
				}
			}

			// The last share travels encrypted with the ephemeral key.
			last := fmt.Sprintf("owner%d", tc.needed-1)
			der, err := c.RecoveryPublicKey()
			if err != nil {
				t.Fatal(err)
			}
			pub, err := x509.ParsePKIXPublicKey(der)
			if err != nil {
				t.Fatal(err)
			}
			if again, _ := c.RecoveryPublicKey(); !bytes.Equal(again, der) {
				t.Fatal("the ephemeral key changed within one recovery")
			}
			ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), shares[last], nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Recover(context.Background(), append(bytes.Clone(ct[:len(ct)-1]), ct[len(ct)-1]^1), owners[last].Sign(t, shares[last])); KindOf(err) != KindInvalidArgument {
				t.Fatalf("damaged encrypted share: %v", err)
			}
			for i := 1; i < tc.needed-1; i++ {
				name := fmt.Sprintf("owner%d", i)
				if _, err := upload(name, shares[name], owners[name]); err != nil {
					t.Fatalf("share %s: %v", name, err)
				}
			}
			n, err := upload(last, ct, owners[last])
			if err != nil || n != 0 {
				t.Fatalf("last share: %d %v", n, err)
			}
			if s, _ := c.Status(); s != StateAcceptingMarbles {
				t.Fatalf("state after recovery: %v", s)
			}
			if r, _ := c.RootCertificate(); !r.Equal(root) {
				t.Fatal("recovery did not restore the root")
			}
			if raw2, _, _ := c.ManifestInfo(); !bytes.Equal(raw2, raw) {
				t.Fatal("recovery did not restore the manifest")
			}
			if got := backendFiles(t, c, uuid1); !bytes.Equal(got["/own.hex"], files["/own.hex"]) || !bytes.Equal(got["/shared.hex"], files["/shared.hex"]) {
				t.Fatal("secrets differ after recovery")
			}
			if _, err := c.RecoveryPublicKey(); KindOf(err) != KindFailedPrecondition {
				t.Fatalf("ephemeral key after recovery: %v", err)
			}
			if _, err := c.Recover(context.Background(), shares[last], owners[last].Sign(t, shares[last])); KindOf(err) != KindFailedPrecondition {
				t.Fatalf("recover after recovery: %v", err)
			}
			// The state is sealed for this machine again.
			if s, _ := newSimCore(t, st).Status(); s != StateAcceptingMarbles {
				t.Fatalf("state after recovering and restarting: %v", s)
			}
		})
	}
}

func TestRecoveryWithoutRecoveryData(t *testing.T) {
	u := newGovUsers(t)
	st := store.NewMemory()
	c := newSimCore(t, st)
	if _, err := c.SetManifest(context.Background(), encodeManifest(t, govManifest(u, nil))); err != nil {
		t.Fatal(err)
	}
	st.LoseSealKey()
	c = newSimCore(t, st)
	_, err := c.Recover(context.Background(), make([]byte, 32), []byte("sig"))
	if KindOf(err) != KindFailedPrecondition || !errors.Is(err, errNoRecoveryData) || !strings.Contains(err.Error(), "set a new manifest") {
		t.Fatalf("recover without recovery keys: %v", err)
	}
	if _, err := c.RecoveryPublicKey(); KindOf(err) != KindFailedPrecondition || !errors.Is(err, errNoRecoveryData) {
		t.Fatalf("recovery key without recovery keys: %v", err)
	}
	// Setting a new manifest in recovery starts over.
	if _, err := c.SetManifest(context.Background(), encodeManifest(t, govManifest(u, nil))); err != nil {
		t.Fatal(err)
	}
	if s, _ := c.Status(); s != StateAcceptingMarbles {
		t.Fatalf("state %v", s)
	}
}

func TestRecoveryDataFormat(t *testing.T) {
	k1, k2 := testsupport.NewRecoveryKey(t), testsupport.NewRecoveryKey(t)
	st := store.NewMemory()
	c := newSimCore(t, st)
	u := newGovUsers(t)
	if _, err := c.SetManifest(context.Background(), encodeManifest(t, govManifest(u, map[string]*testsupport.RecoveryKey{"a": k1, "b": k2}))); err != nil {
		t.Fatal(err)
	}
	blob := st.RecoveryData()
	rd, pubs, err := parseRecoveryData(blob)
	if err != nil || rd.Layout != layoutXOR || rd.Threshold != 2 || !pubs["a"].Equal(&k1.Key.PublicKey) {
		t.Fatalf("recovery data %+v %v", rd, err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*recoveryData)
	}{
		{"version", func(d *recoveryData) { d.Version = 2 }},
		{"layout", func(d *recoveryData) { d.Layout = "magic" }},
		{"threshold", func(d *recoveryData) { d.Threshold = 1 }},
		{"key", func(d *recoveryData) { k := d.Keys["a"]; k.PublicKey = []byte("junk"); d.Keys["a"] = k }},
		{"hash", func(d *recoveryData) { k := d.Keys["a"]; k.ShareHash = k.ShareHash[:5]; d.Keys["a"] = k }},
		{"same share", func(d *recoveryData) { k := d.Keys["a"]; k.ShareHash = d.Keys["b"].ShareHash; d.Keys["a"] = k }},
	} {
		d, _, _ := parseRecoveryData(blob)
		tc.mutate(d)
		if _, _, err := parseRecoveryData(mustJSON(t, d)); err == nil {
			t.Errorf("%s: damaged recovery data accepted", tc.name)
		}
	}
	if _, _, err := parseRecoveryData([]byte("{")); err == nil {
		t.Error("malformed recovery data accepted")
	}
}

// lostRecoveryDataStore has lost its recovery data (say, the files were
// edited behind the Coordinator's back).
type lostRecoveryDataStore struct{ *store.Memory }

func (lostRecoveryDataStore) RecoveryData() []byte { return nil }

func TestMissingRecoveryDataIsReported(t *testing.T) {
	u := newGovUsers(t)
	mem := store.NewMemory()
	c := newSimCore(t, mem)
	raw := encodeManifest(t, govManifest(u, map[string]*testsupport.RecoveryKey{"k": testsupport.NewRecoveryKey(t)}))
	if _, err := c.SetManifest(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	c2, err := New(Config{Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: lostRecoveryDataStore{mem}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := c2.Status(); s != StateAcceptingMarbles {
		t.Fatalf("state after restart %v", s)
	}
	if !strings.Contains(logs.String(), "recovery data does not match") {
		t.Fatalf("a restart does not report the missing recovery data:\n%s", logs.String())
	}
}

// killedStore passes the first writes to a Memory store and fails every
// write after them without applying it, as the store of a Coordinator
// killed at that point is left. A negative budget writes everything.
type killedStore struct {
	*store.Memory
	budget int
}

var errKilled = errors.New("the Coordinator was killed")

func (s *killedStore) write() error {
	if s.budget == 0 {
		return errKilled
	}
	if s.budget > 0 {
		s.budget--
	}
	return nil
}

func (s *killedStore) Commit(ctx context.Context, ch map[string][]byte) error {
	if err := s.write(); err != nil {
		return err
	}
	return s.Memory.Commit(ctx, ch)
}

func (s *killedStore) Reset(ctx context.Context, st map[string][]byte) ([]byte, error) {
	if err := s.write(); err != nil {
		return nil, err
	}
	return s.Memory.Reset(ctx, st)
}

func (s *killedStore) ResetWith(ctx context.Context, st map[string][]byte, opts store.ResetOptions) ([]byte, error) {
	if err := s.write(); err != nil {
		return nil, err
	}
	return s.Memory.ResetWith(ctx, st, opts)
}

func (s *killedStore) SetRecoveryData(ctx context.Context, b []byte) error {
	if err := s.write(); err != nil {
		return err
	}
	return s.Memory.SetRecoveryData(ctx, b)
}

func (s *killedStore) SetSealMode(ctx context.Context, m seal.Mode) error {
	if err := s.write(); err != nil {
		return err
	}
	return s.Memory.SetSealMode(ctx, m)
}

// requireRecoverable restarts a Coordinator on mem and fails unless the
// stored recovery data belongs to the stored manifest's recovery keys: a
// manifest must never be stored without the recovery data of its data key.
func requireRecoverable(t *testing.T, mem *store.Memory, what string) {
	t.Helper()
	c := newSimCore(t, mem)
	v := c.view.Load()
	if v.dep.manifest == nil || len(v.dep.manifest.RecoveryKeys) == 0 {
		return
	}
	rd, pubs, err := parseRecoveryData(mem.RecoveryData())
	if err == nil {
		err = recoveryDataMatches(rd, pubs, v.dep.manifest)
	}
	if err != nil {
		t.Fatalf("%s: the stored manifest has no recovery data of its own: %v", what, err)
	}
}

// TestManifestAndRecoveryDataStoredTogether kills the Coordinator after
// every store write of a manifest set, and of an update that changes the
// recovery keys, and checks that a restart never finds a manifest without
// its recovery data.
func TestManifestAndRecoveryDataStoredTogether(t *testing.T) {
	u := newGovUsers(t)
	k1, k2 := testsupport.NewRecoveryKey(t), testsupport.NewRecoveryKey(t)
	first := encodeManifest(t, govManifest(u, map[string]*testsupport.RecoveryKey{"k1": k1}))
	second := encodeManifest(t, govManifest(u, map[string]*testsupport.RecoveryKey{"k1": k1, "k2": k2}))

	for budget := 0; ; budget++ {
		mem := store.NewMemory()
		st := &killedStore{Memory: mem, budget: -1}
		c := newSimCore(t, st)
		st.budget = budget
		_, err := c.SetManifest(context.Background(), first)
		requireRecoverable(t, mem, fmt.Sprintf("manifest set killed after %d writes", budget))
		if err == nil {
			t.Logf("a manifest set takes %d store writes", budget)
			break
		}
		if !errors.Is(err, errKilled) {
			t.Fatal(err)
		}
	}
	for budget := 0; ; budget++ {
		mem := store.NewMemory()
		st := &killedStore{Memory: mem, budget: -1}
		c := newSimCore(t, st)
		if _, err := c.SetManifest(context.Background(), first); err != nil {
			t.Fatal(err)
		}
		if _, err := c.UpdateManifest(context.Background(), u.alice.Cert, second); err != nil {
			t.Fatal(err)
		}
		st.budget = budget
		res, err := c.AcknowledgeUpdate(context.Background(), u.bob.Cert, second)
		requireRecoverable(t, mem, fmt.Sprintf("recovery key change killed after %d writes", budget))
		if err == nil {
			if !res.Applied || len(res.RecoverySecrets) != 2 {
				t.Fatalf("update result %+v", res)
			}
			t.Logf("a recovery key change takes %d store writes", budget)
			break
		}
		if !errors.Is(err, errKilled) {
			t.Fatal(err)
		}
	}
}

// TestRecoverySharesFromPeers: secrets a peer replica hands over are
// verified like uploads, kept without unlocking unless asked to complete,
// and returned with their signatures; a peer may have a secret decrypted
// that was encrypted with this core's ephemeral key, and only one of the
// stored recovery keys.
func TestRecoverySharesFromPeers(t *testing.T) {
	u := newGovUsers(t)
	owners := map[string]*testsupport.RecoveryKey{"o1": testsupport.NewRecoveryKey(t), "o2": testsupport.NewRecoveryKey(t), "o3": testsupport.NewRecoveryKey(t)}
	stranger := testsupport.NewRecoveryKey(t)
	m := govManifest(u, owners)
	section(m, "Config")["RecoveryThreshold"] = 2
	c, st, encrypted := govCore(t, u, m)
	shares := map[string][]byte{}
	for name, ct := range encrypted {
		shares[name] = owners[name].Decrypt(t, ct)
	}
	if got := c.RecoveryShares(); got != nil {
		t.Fatalf("shares outside recovery: %v", got)
	}
	if _, err := c.DecryptRecoverySecret(make([]byte, 512)); KindOf(err) != KindFailedPrecondition {
		t.Fatalf("decrypting outside recovery: %v", err)
	}
	if n, err := c.AddRecoveryShares(t.Context(), []RecoveryShare{{Secret: shares["o1"], Signature: owners["o1"].Sign(t, shares["o1"])}}, true); n != 0 || err != nil {
		t.Fatalf("shares outside recovery: %d %v", n, err)
	}

	st.LoseSealKey()
	c = newSimCore(t, st)
	good := func(name string) RecoveryShare {
		return RecoveryShare{Secret: shares[name], Signature: owners[name].Sign(t, shares[name])}
	}
	bad := []RecoveryShare{
		{Secret: shares["o1"], Signature: stranger.Sign(t, shares["o1"])},
		{Secret: []byte("short"), Signature: owners["o1"].Sign(t, []byte("short"))},
		{Secret: bytes.Repeat([]byte{7}, 33), Signature: owners["o1"].Sign(t, bytes.Repeat([]byte{7}, 33))},
	}
	if n, err := c.AddRecoveryShares(t.Context(), bad, true); n != 2 || err != nil {
		t.Fatalf("refused shares: %d missing, %v", n, err)
	}
	if n, err := c.AddRecoveryShares(t.Context(), []RecoveryShare{good("o1"), good("o1")}, false); n != 1 || err != nil {
		t.Fatalf("one share: %d missing, %v", n, err)
	}
	held := c.RecoveryShares()
	if len(held) != 1 || !bytes.Equal(held[0].Secret, shares["o1"]) || !bytes.Equal(held[0].Signature, good("o1").Signature) {
		t.Fatalf("held shares: %+v", held)
	}
	// Enough secrets, but a peer passing them on does not unlock.
	if n, err := c.AddRecoveryShares(t.Context(), []RecoveryShare{good("o3")}, false); n != 0 || err != nil {
		t.Fatalf("second share: %d missing, %v", n, err)
	}
	if s, _ := c.Status(); s != StateRecovery {
		t.Fatalf("state after shares without complete: %v", s)
	}

	// Decryption for a peer.
	der, err := c.RecoveryPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(secret []byte) []byte {
		ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), secret, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ct
	}
	if got, err := c.DecryptRecoverySecret(enc(shares["o2"])); err != nil || !bytes.Equal(got, shares["o2"]) {
		t.Fatalf("decrypting o2's secret: %v", err)
	}
	if _, err := c.DecryptRecoverySecret(enc(bytes.Repeat([]byte{9}, 33))); KindOf(err) != KindInvalidArgument || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("decrypting a secret of no recovery key: %v", err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &other.PublicKey, shares["o2"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DecryptRecoverySecret(foreign); !errors.Is(err, ErrForeignRecoveryKey) {
		t.Fatalf("decrypting another key's ciphertext: %v", err)
	}
	if _, err := c.Recover(t.Context(), foreign, owners["o2"].Sign(t, shares["o2"])); !errors.Is(err, ErrForeignRecoveryKey) {
		t.Fatalf("uploading another key's ciphertext: %v", err)
	}
	// Only an upload that could be genuine is offered to peers: a
	// ciphertext of the ephemeral key's size with a signature of a
	// recovery key's size.
	for what, up := range map[string][2][]byte{
		"a ciphertext of another size": {make([]byte, len(foreign)+1), owners["o2"].Sign(t, shares["o2"])},
		"a signature of no key's size": {foreign, []byte("short")},
	} {
		_, err := c.Recover(t.Context(), up[0], up[1])
		if KindOf(err) != KindInvalidArgument || errors.Is(err, ErrForeignRecoveryKey) {
			t.Fatalf("uploading %s: %v, want InvalidArgument that peers are not asked about", what, err)
		}
	}

	// Completing unlocks with the shares held.
	if n, err := c.AddRecoveryShares(t.Context(), nil, true); n != 0 || err != nil {
		t.Fatalf("completing: %d %v", n, err)
	}
	if s, _ := c.Status(); s != StateAcceptingMarbles {
		t.Fatalf("state after completing: %v", s)
	}
	if got := c.RecoveryShares(); got != nil {
		t.Fatalf("shares after recovery: %v", got)
	}
}
