package core

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/store"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

func TestUserDefinedSecrets(t *testing.T) {
	u := newGovUsers(t)
	st := &countingStore{Store: store.NewMemory()}
	c := newSimCore(t, st)
	stranger := testsupport.NewUser(t, "stranger")
	if err := c.WriteSecrets(context.Background(), u.alice.Cert, validUserSecrets(t)); KindOf(err) != KindFailedPrecondition {
		t.Fatalf("secrets before the manifest: %v", err)
	}
	if _, err := c.SetManifest(context.Background(), encodeManifest(t, govManifest(u, nil))); err != nil {
		t.Fatal(err)
	}
	if _, err := activate(c, newMarbleID(t), "userapp", uuid1, nil); err == nil {
		t.Fatal("a marble using unset user-defined secrets activated")
	}

	valid := validUserSecrets(t)
	otherCert, otherKey := selfSignedECDSA(t, elliptic.P256())
	p384Cert, p384Key := selfSignedECDSA(t, elliptic.P384())
	with := func(name string, s UserSecret) map[string]UserSecret {
		out := map[string]UserSecret{}
		for n, v := range valid {
			out[n] = v
		}
		out[name] = s
		return out
	}
	bad := []struct {
		name    string
		user    *x509.Certificate
		secrets map[string]UserSecret
		kind    Kind
		want    string
	}{
		{"no certificate", nil, valid, KindUnauthenticated, "no client certificate"},
		{"unknown certificate", stranger.Cert, valid, KindUnauthenticated, "not the certificate of any manifest user"},
		{"no permission", u.bob.Cert, valid, KindPermissionDenied, `"bob"`},
		{"nothing", u.alice.Cert, map[string]UserSecret{}, KindInvalidArgument, "no secrets"},
		{"unknown name", u.alice.Cert, with("nope", UserSecret{Key: []byte("x")}), KindInvalidArgument, `"nope" is not defined`},
		{"generated secret", u.alice.Cert, with("sharedKey", UserSecret{Key: make([]byte, 16)}), KindInvalidArgument, "not user-defined"},
		{"key too short", u.alice.Cert, with("userKey", UserSecret{Key: []byte("short")}), KindInvalidArgument, "40 bits, but the manifest declares 128"},
		{"key too long", u.alice.Cert, with("userKey", UserSecret{Key: make([]byte, 32)}), KindInvalidArgument, "256 bits"},
		{"key with cert", u.alice.Cert, with("userKey", UserSecret{Key: make([]byte, 16), Cert: otherCert}), KindInvalidArgument, "only Key"},
		{"empty plain", u.alice.Cert, with("userPlain", UserSecret{}), KindInvalidArgument, "Key is empty"},
		{"cert missing", u.alice.Cert, with("userCert", UserSecret{Private: otherKey}), KindInvalidArgument, "Cert is empty"},
		{"cert garbage", u.alice.Cert, with("userCert", UserSecret{Cert: []byte("junk")}), KindInvalidArgument, "parsing Cert"},
		{"wrong curve", u.alice.Cert, with("userCert", UserSecret{Cert: p384Cert, Private: p384Key}), KindInvalidArgument, "P-384"},
		{"foreign key", u.alice.Cert, with("userCert", UserSecret{Cert: otherCert, Private: valid["userCert"].Private}), KindInvalidArgument, "does not belong"},
		{"template needs the private key", u.alice.Cert, with("userCert", UserSecret{Cert: otherCert}), KindInvalidArgument, "templates"},
		{"NUL in a plain secret used in Env", u.alice.Cert, with("userPlain", UserSecret{Key: []byte("a\x00b")}), KindInvalidArgument, "NUL"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			commits := st.count()
			err := c.WriteSecrets(context.Background(), tc.user, tc.secrets)
			if KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v (kind %v), want kind %v with %q", err, KindOf(err), tc.kind, tc.want)
			}
			if st.count() != commits {
				t.Fatal("a refused write reached the store")
			}
			if _, err := c.ReadSecrets(u.alice.Cert, []string{"userKey"}); KindOf(err) != KindNotFound {
				t.Fatalf("a refused write changed the secrets: %v", err)
			}
		})
	}

	if err := c.WriteSecrets(context.Background(), u.alice.Cert, valid); err != nil {
		t.Fatalf("valid secrets: %v", err)
	}
	msgs, entries := logMessages(t, c)
	if got := msgs[1:]; !slices.Equal(got, []string{"Secret set", "Secret set", "Secret set"}) {
		t.Fatalf("log after secrets = %v", msgs)
	}
	for _, e := range entries[1:] {
		if e["user"] != "alice" || e["secret"] == nil || e["type"] == nil {
			t.Fatalf("secret log entry %v", e)
		}
	}

	t.Run("read", func(t *testing.T) {
		got, err := c.ReadSecrets(u.alice.Cert, []string{"userKey", "userCert", "userKey"})
		if err != nil {
			t.Fatal(err)
		}
		if string(got["userKey"].Private) != "0123456789abcdef" || !got["userKey"].UserDefined {
			t.Fatalf("userKey = %+v", got["userKey"])
		}
		if !bytes.Equal(got["userCert"].Cert.Raw, valid["userCert"].Cert) || len(got["userCert"].Public) == 0 {
			t.Fatal("userCert differs")
		}
		if _, err := x509.ParsePKCS8PrivateKey(got["userCert"].Private); err != nil {
			t.Fatalf("the private key is not stored as PKCS#8: %v", err)
		}
		shared, err := c.ReadSecrets(u.bob.Cert, []string{"sharedKey"})
		if err != nil || len(shared["sharedKey"].Private) != 16 {
			t.Fatalf("bob reads sharedKey: %v %v", shared, err)
		}
		for _, tc := range []struct {
			user  *x509.Certificate
			names []string
			kind  Kind
		}{
			{u.bob.Cert, []string{"sharedKey", "userCert"}, KindPermissionDenied},
			{u.dave.Cert, []string{"sharedKey"}, KindPermissionDenied},
			{nil, []string{"sharedKey"}, KindUnauthenticated},
			{stranger.Cert, []string{"sharedKey"}, KindUnauthenticated},
			{u.alice.Cert, []string{"nope"}, KindInvalidArgument},
			{u.alice.Cert, []string{""}, KindInvalidArgument},
			{u.alice.Cert, nil, KindInvalidArgument},
		} {
			if _, err := c.ReadSecrets(tc.user, tc.names); KindOf(err) != tc.kind {
				t.Errorf("read %v: got %v, want kind %v", tc.names, err, tc.kind)
			}
		}
	})

	t.Run("marbles receive the values", func(t *testing.T) {
		p, err := activate(c, newMarbleID(t), "userapp", uuid1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(p.Files["/user.hex"]) != hex.EncodeToString([]byte("0123456789abcdef")) || string(p.Env["PLAIN"]) != "plain value" {
			t.Fatalf("files %q env %q", p.Files["/user.hex"], p.Env["PLAIN"])
		}
		if !strings.Contains(string(p.Files["/userkey.pem"]), "PRIVATE KEY") {
			t.Fatalf("userkey.pem = %q", p.Files["/userkey.pem"])
		}
	})

	t.Run("restart keeps them", func(t *testing.T) {
		c2 := newSimCore(t, st.Store)
		got, err := c2.ReadSecrets(u.alice.Cert, []string{"userPlain"})
		if err != nil || string(got["userPlain"].Private) != "plain value" {
			t.Fatalf("after restart: %v %v", got, err)
		}
		if msgs2, _ := logMessages(t, c2); !slices.Equal(msgs2, msgs) {
			t.Fatalf("log after restart %v, before %v", msgs2, msgs)
		}
	})

	t.Run("overwrite", func(t *testing.T) {
		// A PKCS#8 private key is accepted as well as SEC 1.
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(9)}
		certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WriteSecrets(context.Background(), u.alice.Cert, map[string]UserSecret{
			"userKey":  {Key: []byte("fedcba9876543210")},
			"userCert": {Cert: certDER, Private: pkcs8},
		}); err != nil {
			t.Fatal(err)
		}
		p, err := activate(c, newMarbleID(t), "userapp", uuid1, nil)
		if err != nil || string(p.Files["/user.hex"]) != hex.EncodeToString([]byte("fedcba9876543210")) {
			t.Fatalf("after overwrite: %v %q", err, p.Files["/user.hex"])
		}
	})
}
