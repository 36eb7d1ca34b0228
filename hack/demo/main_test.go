package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func newCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func pemOf(certs ...*x509.Certificate) string {
	var b strings.Builder
	for _, c := range certs {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return b.String()
}

func TestParseChain(t *testing.T) {
	root, rootKey := newCert(t, "root", nil, nil)
	inter, _ := newCert(t, "intermediate", root, rootKey)
	other, _ := newCert(t, "other root", nil, nil)

	gotRoot, gotInter, err := parseChain(pemOf(inter, root))
	if err != nil {
		t.Fatal(err)
	}
	if !gotRoot.Equal(root) || !gotInter.Equal(inter) {
		t.Fatal("wrong certificates picked")
	}
	for name, input := range map[string]string{
		"root only":               pemOf(root),
		"reversed":                pemOf(root, inter),
		"foreign intermediate":    pemOf(inter, other),
		"nothing":                 "",
		"three certificates":      pemOf(inter, root, other),
		"garbage in a cert block": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")})) + pemOf(root),
	} {
		if _, _, err := parseChain(input); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFingerprint(t *testing.T) {
	root, _ := newCert(t, "root", nil, nil)
	fp := fingerprint(root)
	if len(fp) != 32*3-1 || strings.Count(fp, ":") != 31 || strings.ToUpper(fp) != fp {
		t.Fatalf("fingerprint %q is not colon-separated upper-case SHA-256", fp)
	}
}

func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	w := &prefixWriter{con: &console{w: &out}, prefix: "srv"}
	for _, part := range []string{"first li", "ne\r\nsecond\nthi", "rd"} {
		if _, err := w.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	want := "  srv   | first line\n  srv   | second\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

func TestClientAPICall(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v2/status":
			_, _ = w.Write([]byte(`{"status":"success","data":{"code":3,"message":"running"}}`))
		case "/api/v2/manifest":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"status":"fail","data":null,"message":"manifest invalid: no packages"}`))
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
			_, _ = w.Write([]byte(`not json`))
		}
	}))
	defer srv.Close()
	api := &clientAPI{base: srv.URL, http: srv.Client()}

	st, err := api.status(t.Context())
	if err != nil || st.Code != 3 || st.Message != "running" {
		t.Fatalf("status = %+v, %v", st, err)
	}
	err = api.setManifest(t.Context(), []byte("{}"))
	if err == nil || !strings.Contains(err.Error(), "manifest invalid: no packages") {
		t.Fatalf("set manifest err = %v, want the Coordinator's message", err)
	}
	if _, err := api.quote(t.Context()); err == nil || !strings.Contains(err.Error(), "not JSend") {
		t.Fatalf("quote err = %v", err)
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 3 || ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Fatalf("ports = %v", ports)
	}
}

func TestBaseEnv(t *testing.T) {
	t.Setenv("EDG_STARTUP_MANIFEST", "/elsewhere")
	t.Setenv("OE_SIMULATION", "0")
	t.Setenv("DEMO_TEST_KEEP", "yes")
	env := strings.Join(baseEnv(), "\n")
	if strings.Contains(env, "EDG_STARTUP_MANIFEST") || strings.Contains(env, "OE_SIMULATION") {
		t.Fatal("mesh settings inherited")
	}
	if !strings.Contains(env, "DEMO_TEST_KEEP=yes") {
		t.Fatal("other variables dropped")
	}
}
