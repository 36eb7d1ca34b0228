package core

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"sync"
	"testing"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/marble/marbleenv"
)

// marbleCert activates a marble and returns the certificate it received.
func marbleCert(t testing.TB, c *Core, typ, uuid string) *x509.Certificate {
	t.Helper()
	p, err := activate(c, newMarbleID(t), typ, uuid, nil)
	if err != nil {
		t.Fatalf("activating %s: %v", typ, err)
	}
	pair, err := tls.X509KeyPair(p.Env[marbleenv.CertificateChain], p.Env[marbleenv.PrivateKey])
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestMonotonicCounter(t *testing.T) {
	u := newGovUsers(t)
	c, st, _ := govCore(t, u, govManifest(u, nil))
	m1 := marbleCert(t, c, "backend", uuid1)
	m2 := marbleCert(t, c, "backend", uuid2)

	steps := []struct {
		name     string
		cert     *x509.Certificate
		counter  string
		value    uint64
		previous uint64
		kind     Kind
	}{
		{"no certificate", nil, "c", 1, 0, KindUnauthenticated},
		{"user certificate", u.alice.Cert, "c", 1, 0, KindUnauthenticated},
		{"empty name", m1, "", 1, 0, KindInvalidArgument},
		{"first", m1, "c", 5, 0, -1},
		{"lower keeps", m1, "c", 3, 5, -1},
		{"equal keeps", m1, "c", 5, 5, -1},
		{"higher", m1, "c", 7, 5, -1},
		{"other name", m1, "d", 1, 0, -1},
		{"other marble", m2, "c", 2, 0, -1},
	}
	for _, s := range steps {
		prev, err := c.SetMonotonicCounter(context.Background(), s.cert, s.counter, s.value)
		if s.kind >= 0 {
			if KindOf(err) != s.kind {
				t.Fatalf("%s: got %v, want kind %v", s.name, err, s.kind)
			}
			continue
		}
		if err != nil || prev != s.previous {
			t.Fatalf("%s: got %d %v, want %d", s.name, prev, err, s.previous)
		}
	}
	c = newSimCore(t, st)
	if prev, err := c.SetMonotonicCounter(context.Background(), m1, "c", 8); err != nil || prev != 7 {
		t.Fatalf("after restart: %d %v", prev, err)
	}
	// After an update the marble must activate again: its certificate no
	// longer chains to the marble root.
	if _, err := c.UpdateManifest(context.Background(), u.alice.Cert, []byte(`{"Packages": {"backend": {"SecurityVersion": 3}}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMonotonicCounter(context.Background(), m1, "c", 9); KindOf(err) != KindUnauthenticated {
		t.Fatalf("certificate of the old marble root: %v", err)
	}
	fresh := marbleCert(t, c, "backend", uuid1)
	if prev, err := c.SetMonotonicCounter(context.Background(), fresh, "c", 9); err != nil || prev != 8 {
		t.Fatalf("after reactivation: %d %v", prev, err)
	}

	t.Run("feature gate", func(t *testing.T) {
		m := govManifest(u, nil)
		section(m, "Config")["FeatureGates"] = []string{}
		c, _, _ := govCore(t, u, m)
		if _, err := c.SetMonotonicCounter(context.Background(), marbleCert(t, c, "backend", uuid1), "c", 1); KindOf(err) != KindPermissionDenied {
			t.Fatalf("without the feature gate: %v", err)
		}
		if _, err := newSimCore(t, store.NewMemory()).SetMonotonicCounter(context.Background(), nil, "c", 1); KindOf(err) != KindPermissionDenied {
			t.Fatalf("without a manifest: %v", err)
		}
	})
}

func TestSignQuote(t *testing.T) {
	u := newGovUsers(t)
	m := govManifest(u, nil)
	section(m, "Config")["FeatureGates"] = []string{"signquoteendpoint"}

	t.Run("simulation has no verifier", func(t *testing.T) {
		c, _, _ := govCore(t, u, m)
		if _, _, err := c.SignQuote(context.Background(), []byte("quote")); KindOf(err) != KindUnimplemented {
			t.Fatalf("got %v", err)
		}
	})

	c, err := New(Config{Issuer: fakeIssuer{}, Verifier: fakeVerifier{}, Store: store.NewMemory(), DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.SignQuote(context.Background(), []byte("{}")); KindOf(err) != KindPermissionDenied {
		t.Fatalf("before a manifest: %v", err)
	}
	if _, err := c.SetManifest(context.Background(), encodeManifest(t, m)); err != nil {
		t.Fatal(err)
	}
	quote, _ := json.Marshal(attestation.Claims{TCBStatus: "SWHardeningNeeded"})
	sig, tcb, err := c.SignQuote(context.Background(), quote)
	if err != nil || tcb != "SWHardeningNeeded" {
		t.Fatalf("signing: %q %v", tcb, err)
	}
	root, _ := c.RootCertificate()
	digest := sha256.Sum256([]byte(base64.StdEncoding.EncodeToString(quote) + tcb))
	if !ecdsa.VerifyASN1(root.PublicKey.(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("the verdict signature does not verify with the root key")
	}
	if _, _, err := c.SignQuote(context.Background(), []byte("not a quote")); KindOf(err) != KindInvalidArgument {
		t.Fatalf("invalid quote: %v", err)
	}
	if _, _, err := c.SignQuote(context.Background(), nil); KindOf(err) != KindInvalidArgument {
		t.Fatalf("empty quote: %v", err)
	}

	gateOff := govManifest(u, nil)
	c2, err := New(Config{Issuer: fakeIssuer{}, Verifier: fakeVerifier{}, Store: store.NewMemory(), DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.SetManifest(context.Background(), encodeManifest(t, gateOff)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c2.SignQuote(context.Background(), quote); KindOf(err) != KindPermissionDenied {
		t.Fatalf("without the feature gate: %v", err)
	}
}

func TestDefaultRecoveryKeySize(t *testing.T) {
	c, err := New(Config{Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: store.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.RecoveryKeyBits != 4096 {
		t.Fatalf("ephemeral recovery key size %d, want MarbleRun's 4096", c.cfg.RecoveryKeyBits)
	}
}

// TestConcurrentGovernance runs governance calls next to activations; run
// with -race.
func TestConcurrentGovernance(t *testing.T) {
	u := newGovUsers(t)
	m := govManifest(u, nil)
	section(m, "Config")["UpdateThreshold"] = 1
	c, _, _ := govCore(t, u, m)
	mc := marbleCert(t, c, "backend", uuid1)
	next := govManifest(u, nil)
	section(next, "Config")["UpdateThreshold"] = 1
	section(next, "Config")["RotateRootSecret"] = true
	nextRaw := encodeManifest(t, next)
	ids := make([]marbleID, 8)
	for i := range ids {
		ids[i] = newMarbleID(t)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	wg.Go(func() {
		for i := range ids {
			if _, err := activate(c, ids[i], "backend", uuid2, nil); err != nil {
				errs <- err
			}
		}
	})
	wg.Go(func() {
		for i := 0; i < 8; i++ {
			if err := c.WriteSecrets(context.Background(), u.alice.Cert, map[string]UserSecret{"userPlain": {Key: []byte{byte('a' + i)}}}); err != nil {
				errs <- err
			}
			if _, err := c.ReadSecrets(u.bob.Cert, []string{"sharedKey"}); err != nil {
				errs <- err
			}
		}
	})
	wg.Go(func() {
		for i := uint64(1); i <= 8; i++ {
			if _, err := c.SetMonotonicCounter(context.Background(), mc, "n", i); err != nil && KindOf(err) != KindUnauthenticated {
				errs <- err
			}
		}
	})
	wg.Go(func() {
		if _, err := c.UpdateManifest(context.Background(), u.alice.Cert, nextRaw); err != nil {
			errs <- err
		}
		for i := 0; i < 8; i++ {
			if _, err := c.UpdateLog(); err != nil {
				errs <- err
			}
			_, _ = c.PendingUpdate()
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if raw, _, _ := c.ManifestInfo(); !bytes.Equal(raw, nextRaw) {
		t.Fatal("the update was not applied")
	}
}
