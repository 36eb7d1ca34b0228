package core

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/marble/marbleenv"
)

const (
	uuid1 = "7e1d2f4a-0c5e-4b8b-9a8f-1d2e3f4a5b6c"
	uuid2 = "1f0e2d3c-4b5a-4969-8877-665544332211"
)

func testManifest(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// countingStore records how many commits reach the store.
type countingStore struct {
	store.Store
	mu      sync.Mutex
	commits int
}

func (s *countingStore) Commit(ctx context.Context, changes map[string][]byte) error {
	s.mu.Lock()
	s.commits++
	s.mu.Unlock()
	return s.Store.Commit(ctx, changes)
}

func (s *countingStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commits
}

// unsealableStore fails to load like a store whose key cannot be unsealed.
type unsealableStore struct{ store.Store }

func (unsealableStore) Load(context.Context) (map[string][]byte, error) {
	return nil, errors.Join(store.ErrUnseal, errors.New("sealed key does not match this platform"))
}

func newSimCore(t *testing.T, st store.Store) *Core {
	t.Helper()
	c, err := New(Config{Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: st, DNSNames: []string{"localhost"}, RecoveryKeyBits: 2048})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

type marbleID struct {
	cert *x509.Certificate
	csr  []byte
}

func newMarbleID(t testing.TB, dnsNames ...string) marbleID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "marble"}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: dnsNames}, key)
	if err != nil {
		t.Fatal(err)
	}
	return marbleID{cert: cert, csr: csr}
}

func activate(c *Core, id marbleID, typ, uuid string, quote []byte) (*Parameters, error) {
	return c.Activate(context.Background(), ActivationRequest{PeerCert: id.cert, Quote: quote, CSR: id.csr, MarbleType: typ, UUID: uuid})
}

func TestStateTransitions(t *testing.T) {
	tests := []struct {
		from, to State
		ok       bool
	}{
		{StateUninitialized, StateRecovery, true},
		{StateUninitialized, StateAcceptingManifest, true},
		{StateRecovery, StateAcceptingMarbles, true},
		{StateAcceptingManifest, StateAcceptingMarbles, true},
		{StateAcceptingMarbles, StateAcceptingManifest, false},
		{StateAcceptingMarbles, StateRecovery, false},
		{StateAcceptingManifest, StateRecovery, false},
		{StateAcceptingMarbles, StateAcceptingMarbles, false},
	}
	for _, tc := range tests {
		if got := tc.from.canMoveTo(tc.to); got != tc.ok {
			t.Errorf("%s -> %s: got %v, want %v", tc.from, tc.to, got, tc.ok)
		}
	}
	for s := StateUninitialized; s <= StateAcceptingMarbles; s++ {
		if s.Message() == "" || strings.HasPrefix(s.Message(), "unknown") {
			t.Errorf("state %d has no message", s)
		}
	}
}

func TestBootSetManifestRestart(t *testing.T) {
	st := store.NewMemory()
	c := newSimCore(t, st)
	if s, _ := c.Status(); s != StateAcceptingManifest {
		t.Fatalf("fresh state = %v", s)
	}
	root1, _ := c.RootCertificate()
	if _, err := c.UpdateLog(); KindOf(err) != KindFailedPrecondition {
		t.Fatalf("UpdateLog before manifest: %v", err)
	}

	// A restart before the manifest keeps the root.
	c = newSimCore(t, st)
	if root, _ := c.RootCertificate(); !root.Equal(root1) {
		t.Fatal("root changed across restart in state 2")
	}

	raw := testManifest(t)
	if _, err := c.SetManifest(context.Background(), raw); err != nil {
		t.Fatalf("SetManifest: %v", err)
	}
	if s, msg := c.Status(); s != StateAcceptingMarbles || !strings.Contains(msg, "accept marbles") {
		t.Fatalf("after manifest: %v %q", s, msg)
	}
	if _, msg := c.Status(); !strings.Contains(msg, "SIMULATION MODE") {
		t.Fatalf("a simulation Coordinator's status does not say so: %q", msg)
	}
	gotRaw, sig, ok := c.ManifestInfo()
	if !ok || string(gotRaw) != string(raw) {
		t.Fatal("ManifestInfo does not return the manifest")
	}
	digest := sha256.Sum256(raw)
	if !ecdsa.VerifyASN1(root1.PublicKey.(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("manifest signature does not verify with the root key")
	}
	log, err := c.UpdateLog()
	if err != nil || len(log) != 1 || !strings.Contains(log[0], "Initial manifest set") || !strings.Contains(log[0], hex.EncodeToString(digest[:])) {
		t.Fatalf("update log = %v, %v", log, err)
	}

	t.Run("second manifest refused", func(t *testing.T) {
		_, err := c.SetManifest(context.Background(), raw)
		if KindOf(err) != KindFailedPrecondition {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("restart keeps everything", func(t *testing.T) {
		c2 := newSimCore(t, st)
		if s, _ := c2.Status(); s != StateAcceptingMarbles {
			t.Fatalf("state after restart = %v", s)
		}
		if root, _ := c2.RootCertificate(); !root.Equal(root1) {
			t.Fatal("root changed across restart")
		}
		raw2, sig2, _ := c2.ManifestInfo()
		if string(raw2) != string(raw) || string(sig2) != string(sig) {
			t.Fatal("manifest or signature changed across restart")
		}
		// Per-marble secrets derive from the stored root secret: same UUID, same key.
		p1, err := activate(c, newMarbleID(t), "backend", uuid1, nil)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := activate(c2, newMarbleID(t), "backend", uuid1, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"/etc/backend/own.hex", "/etc/backend/key.hex"} {
			if string(p1.Files[f]) != string(p2.Files[f]) {
				t.Errorf("%s differs across restart", f)
			}
		}
	})
}

func TestSetManifestBadInput(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		want string
	}{
		{"empty", "", "empty"},
		{"not json", "{", "invalid manifest"},
		{"no packages", `{"Marbles": {"a": {"Package": "p"}}}`, "invalid manifest"},
		{"unknown secret type", `{"Packages": {"p": {"UniqueID": "6b2822ac2585040d4b9397675d54977a71ef292ab5b3c0a6acceca26074ae585"}}, "Marbles": {"a": {"Package": "p"}}, "Secrets": {"s": {"Type": "magic"}}}`, "invalid manifest"},
		{"template references missing secret", `{"Packages": {"p": {"UniqueID": "6b2822ac2585040d4b9397675d54977a71ef292ab5b3c0a6acceca26074ae585"}}, "Marbles": {"a": {"Package": "p", "Parameters": {"Env": {"X": "{{ hex .Secrets.nope }}"}}}}}`, "invalid manifest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &countingStore{Store: store.NewMemory()}
			c := newSimCore(t, st)
			_, err := c.SetManifest(context.Background(), []byte(tc.raw))
			if KindOf(err) != KindInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want invalid argument containing %q", err, tc.want)
			}
			if s, _ := c.Status(); s != StateAcceptingManifest {
				t.Fatalf("state changed to %v", s)
			}
			if st.count() != 0 {
				t.Fatal("a rejected manifest reached the store")
			}
		})
	}
	t.Run("oversized", func(t *testing.T) {
		c := newSimCore(t, store.NewMemory())
		_, err := c.SetManifest(context.Background(), make([]byte, MaxManifestSize+1))
		if KindOf(err) != KindInvalidArgument {
			t.Fatalf("got %v", err)
		}
	})
}

func TestRecoveryStateOnUnsealFailure(t *testing.T) {
	c := newSimCore(t, unsealableStore{store.NewMemory()})
	s, msg := c.Status()
	if s != StateRecovery || !strings.Contains(msg, "recovery mode") {
		t.Fatalf("state %v %q", s, msg)
	}
	if _, _, err := c.Quote(context.Background(), nil); err != nil {
		t.Fatalf("quote must be served in recovery: %v", err)
	}
	if _, err := activate(c, newMarbleID(t), "backend", uuid1, nil); KindOf(err) != KindFailedPrecondition {
		t.Fatalf("activation in recovery: %v", err)
	}
}

func TestActivation(t *testing.T) {
	st := &countingStore{Store: store.NewMemory()}
	c := newSimCore(t, st)
	if _, err := activate(c, newMarbleID(t), "backend", uuid1, nil); KindOf(err) != KindFailedPrecondition {
		t.Fatalf("activation before manifest: %v", err)
	}
	if _, err := c.SetManifest(context.Background(), testManifest(t)); err != nil {
		t.Fatal(err)
	}
	marbleRoot, _ := c.MarbleRoot()
	rootCert, _ := c.RootCertificate()

	t.Run("rejections", func(t *testing.T) {
		id := newMarbleID(t)
		tests := []struct {
			name string
			req  ActivationRequest
			kind Kind
			want string
		}{
			{"unknown type", ActivationRequest{PeerCert: id.cert, CSR: id.csr, MarbleType: "nope", UUID: uuid1}, KindPermissionDenied, "unknown marble type"},
			{"bad uuid", ActivationRequest{PeerCert: id.cert, CSR: id.csr, MarbleType: "backend", UUID: "not-a-uuid"}, KindInvalidArgument, "invalid UUID"},
			{"bad csr", ActivationRequest{PeerCert: id.cert, CSR: []byte("junk"), MarbleType: "backend", UUID: uuid1}, KindInvalidArgument, "certificate signing request"},
			{"no peer cert", ActivationRequest{CSR: id.csr, MarbleType: "backend", UUID: uuid1}, KindUnauthenticated, "certificate"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.Activate(context.Background(), tc.req)
				if KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v (kind %v), want kind %v with %q", err, KindOf(err), tc.kind, tc.want)
				}
			})
		}
	})

	t.Run("parameters", func(t *testing.T) {
		commits := st.count()
		p, err := activate(c, newMarbleID(t, "backend.example"), "backend", uuid1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.count() != commits {
			t.Fatal("an activation without MaxActivations wrote to the store")
		}
		if strings.Join(p.Argv, " ") != "backend --serve" {
			t.Fatalf("argv = %v", p.Argv)
		}
		if got := string(p.Files["/etc/backend/literal"]); got != "{{ not a template }}" {
			t.Fatalf("NoTemplates file = %q", got)
		}
		if len(p.Files["/etc/backend/key.hex"]) != 32 || string(p.Files["/etc/backend/key.hex"]) != string(p.Env["SHARED_KEY"]) {
			t.Fatalf("shared key file %q env %q", p.Files["/etc/backend/key.hex"], p.Env["SHARED_KEY"])
		}
		if len(p.Files["/etc/backend/own.hex"]) != 64 {
			t.Fatalf("own key = %q", p.Files["/etc/backend/own.hex"])
		}
		if string(p.Env[marbleenv.RootCA]) != string(p.Env["ROOT_CA"]) || string(p.Env[marbleenv.CoordinatorRootCA]) != string(certPEM(rootCert)) {
			t.Fatal("CA variables wrong")
		}
		chain := p.Env[marbleenv.CertificateChain]
		block, rest := pem.Decode(chain)
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if leaf.Subject.CommonName != uuid1 || leaf.DNSNames[0] != "backend.example" {
			t.Fatalf("leaf CN %q DNS %v", leaf.Subject.CommonName, leaf.DNSNames)
		}
		if string(p.Files["/etc/backend/cert.pem"]) != string(pem.EncodeToMemory(block)) {
			t.Fatal("templated marble cert differs from the chain's leaf")
		}
		if inter, _ := pem.Decode(rest); inter == nil {
			t.Fatal("chain lacks the intermediate")
		}
		pool := x509.NewCertPool()
		pool.AddCert(marbleRoot)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
			t.Fatalf("leaf does not chain to marble root: %v", err)
		}
		if _, err := tls.X509KeyPair(chain, p.Env[marbleenv.PrivateKey]); err != nil {
			t.Fatalf("key does not match certificate: %v", err)
		}
		if _, ok := p.Env[marbleenv.TransparentTLS]; ok {
			t.Fatal("backend has no TLS tags but got a TTLS config")
		}
	})

	t.Run("per-marble secrets are bound to the UUID", func(t *testing.T) {
		a1, _ := activate(c, newMarbleID(t), "backend", uuid1, nil)
		a2, _ := activate(c, newMarbleID(t), "backend", uuid1, nil)
		b, _ := activate(c, newMarbleID(t), "backend", uuid2, nil)
		if string(a1.Files["/etc/backend/own.hex"]) != string(a2.Files["/etc/backend/own.hex"]) {
			t.Fatal("same UUID got different keys")
		}
		if string(a1.Files["/etc/backend/own.hex"]) == string(b.Files["/etc/backend/own.hex"]) {
			t.Fatal("different UUIDs got the same key")
		}
		if string(a1.Files["/etc/backend/key.hex"]) != string(b.Files["/etc/backend/key.hex"]) {
			t.Fatal("shared key differs between marbles")
		}
	})

	t.Run("max activations", func(t *testing.T) {
		commits := st.count()
		for i := 0; i < 2; i++ {
			p, err := activate(c, newMarbleID(t), "frontend", uuid1, nil)
			if err != nil {
				t.Fatalf("activation %d: %v", i+1, err)
			}
			if !strings.Contains(string(p.Env[marbleenv.TransparentTLS]), "8443") {
				t.Fatalf("TTLS config = %s", p.Env[marbleenv.TransparentTLS])
			}
		}
		if st.count() != commits+2 {
			t.Fatalf("%d commits for 2 limited activations", st.count()-commits)
		}
		_, err := activate(c, newMarbleID(t), "frontend", uuid2, nil)
		if KindOf(err) != KindResourceExhausted {
			t.Fatalf("third activation: %v", err)
		}
		// The count survives a restart.
		c2 := newSimCore(t, st.Store)
		if _, err := activate(c2, newMarbleID(t), "frontend", uuid2, nil); KindOf(err) != KindResourceExhausted {
			t.Fatalf("after restart: %v", err)
		}
	})

	t.Run("events", func(t *testing.T) {
		ev := c.Events()
		if len(ev) == 0 || ev[len(ev)-1].Activation.MarbleType != "frontend" {
			t.Fatalf("events = %+v", ev)
		}
	})
}

func TestEventLogBounded(t *testing.T) {
	l := newEventLog(3)
	for i := 0; i < 5; i++ {
		l.add(Event{Activation: ActivationEvent{UUID: string(rune('a' + i))}})
	}
	got := l.list()
	if len(got) != 3 || got[0].Activation.UUID != "c" || got[2].Activation.UUID != "e" {
		t.Fatalf("ring = %+v", got)
	}
}
