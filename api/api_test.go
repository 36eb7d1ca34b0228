package api

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
)

type ca struct {
	root, inter *x509.Certificate
	key, ikey   *ecdsa.PrivateKey
}

func newCA(t *testing.T) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	ikey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	it := *tmpl
	it.SerialNumber, it.Subject = big.NewInt(2), pkix.Name{CommonName: "intermediate"}
	ider, err := x509.CreateCertificate(rand.Reader, &it, root, &ikey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(ider)
	return &ca{root: root, inter: inter, key: key, ikey: ikey}
}

func pemOf(certs ...*x509.Certificate) string {
	var b strings.Builder
	for _, c := range certs {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return b.String()
}

// serve starts a TLS server presenting the CA's root with handler h.
func (c *ca) serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{c.root.Raw}, PrivateKey: c.key}},
		ClientAuth:   tls.RequestClientCert,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "https://")
}

func jsendOK(w http.ResponseWriter, data any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": data})
}

func TestBaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"localhost:4433":          "https://localhost:4433",
		"https://10.0.0.1:4433/":  "https://10.0.0.1:4433",
		"[::1]:4433":              "https://[::1]:4433",
		" coordinator.mesh:443  ": "https://coordinator.mesh:443",
	} {
		if got, err := baseURL(in); err != nil || got != want {
			t.Errorf("baseURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"localhost", "http://localhost:4433", ":4433", "localhost:http", "localhost:0", "localhost:70000", ""} {
		if _, err := baseURL(in); !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("baseURL(%q) error = %v, want ErrInvalidAddress", in, err)
		}
	}
}

func TestParseCertificateChain(t *testing.T) {
	c := newCA(t)
	for name, chain := range map[string]string{
		"intermediate first": pemOf(c.inter, c.root),
		"root first":         pemOf(c.root, c.inter),
	} {
		root, inter, err := ParseCertificateChain([]byte(chain))
		if err != nil || !root.Equal(c.root) || !inter.Equal(c.inter) {
			t.Errorf("%s: got %v, %v, %v", name, root, inter, err)
		}
	}
	root, inter, err := ParseCertificateChain([]byte(pemOf(c.root)))
	if err != nil || !root.Equal(c.root) || inter != nil {
		t.Errorf("root only: %v %v %v", root, inter, err)
	}
	other := newCA(t)
	for name, chain := range map[string]string{
		"empty":              "",
		"no root":            pemOf(c.inter),
		"two roots":          pemOf(c.root, other.root),
		"foreign intermedia": pemOf(c.root, other.inter),
		"garbage":            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	} {
		if _, _, err := ParseCertificateChain([]byte(chain)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func uintp(v uint) *uint    { return &v }
func u16p(v uint16) *uint16 { return &v }
func hexOf(b byte) string   { return hex.EncodeToString(bytesOf(b)) }
func bytesOf(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
func claims() attestation.Claims {
	return attestation.Claims{UniqueID: bytesOf(1), SignerID: bytesOf(2), ProductID: 3, SecurityVersion: 5, TCBStatus: "UpToDate"}
}

func TestVerifyOptionsValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		o    VerifyOptions
		want string
	}{
		"unique id":          {VerifyOptions{UniqueID: hexOf(1)}, ""},
		"signer complete":    {VerifyOptions{SignerID: hexOf(2), ProductID: u16p(3), SecurityVersion: uintp(0)}, ""},
		"nothing":            {VerifyOptions{}, "missing: SignerID, ProductID, SecurityVersion"},
		"signer without svn": {VerifyOptions{SignerID: hexOf(2), ProductID: u16p(3)}, "missing: SecurityVersion"},
		"short unique id":    {VerifyOptions{UniqueID: "abcd"}, `UniqueID: expected 64 hex digits, found "abcd"`},
		"bad signer":         {VerifyOptions{UniqueID: hexOf(1), SignerID: strings.Repeat("x", 64)}, "SignerID: expected 64 hex digits"},
		"unknown tcb":        {VerifyOptions{UniqueID: hexOf(1), AcceptedTCBStatuses: []string{"UpToDat"}}, "unknown TCB status"},
	} {
		err := tc.o.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", name, err, tc.want)
		}
	}
}

func TestParseVerifyOptions(t *testing.T) {
	o, err := ParseVerifyOptions([]byte(`{"signerid": "` + hexOf(2) + `", "ProductID": 3, "SecurityVersion": 1, "Debug": true}`))
	if err != nil || o.SignerID != hexOf(2) || *o.ProductID != 3 || *o.SecurityVersion != 1 || !o.Debug {
		t.Fatalf("got %+v, %v", o, err)
	}
	for _, bad := range []string{`{"SignerIDs": "x"}`, `{"ProductID": 70000}`, `{} {}`, `[`} {
		if _, err := ParseVerifyOptions([]byte(bad)); err == nil {
			t.Errorf("ParseVerifyOptions(%s): no error", bad)
		}
	}
}

type claimsVerifier struct {
	c   attestation.Claims
	err error
}

func (v claimsVerifier) Verify(context.Context, []byte) (*attestation.Claims, error) {
	c := v.c
	return &c, v.err
}

func TestVerifyQuote(t *testing.T) {
	c := newCA(t)
	nonce := []byte("fresh")
	base := VerifyOptions{UniqueID: hexOf(1), SignerID: hexOf(2), ProductID: u16p(3), SecurityVersion: uintp(5)}
	bound := func(cl attestation.Claims) attestation.Claims {
		cl.ReportData = attestation.BindHash(c.root.Raw, nonce)
		return cl
	}
	with := func(f func(*attestation.Claims)) attestation.Claims {
		cl := claims()
		f(&cl)
		return bound(cl)
	}
	for name, tc := range map[string]struct {
		claims attestation.Claims
		opts   func(*VerifyOptions)
		verErr error
		want   string
	}{
		"match":              {bound(claims()), nil, nil, ""},
		"higher svn":         {with(func(c *attestation.Claims) { c.SecurityVersion = 9 }), nil, nil, ""},
		"lower svn":          {with(func(c *attestation.Claims) { c.SecurityVersion = 4 }), nil, nil, "SecurityVersion: expected at least 5, found 4"},
		"wrong unique id":    {with(func(c *attestation.Claims) { c.UniqueID = bytesOf(9) }), nil, nil, "UniqueID (MRENCLAVE): expected 0101"},
		"wrong signer":       {with(func(c *attestation.Claims) { c.SignerID = bytesOf(9) }), nil, nil, "SignerID (MRSIGNER): expected 0202"},
		"wrong product":      {with(func(c *attestation.Claims) { c.ProductID = 4 }), nil, nil, "ProductID: expected 3, found 4"},
		"debug":              {with(func(c *attestation.Claims) { c.Debug = true }), nil, nil, "Debug: expected a production enclave, found a debug enclave"},
		"debug accepted":     {with(func(c *attestation.Claims) { c.Debug = true }), func(o *VerifyOptions) { o.Debug = true }, nil, ""},
		"out of date":        {with(func(c *attestation.Claims) { c.TCBStatus = "OutOfDate" }), nil, nil, "TCBStatus: expected one of [UpToDate SWHardeningNeeded], found OutOfDate"},
		"no tcb status":      {with(func(c *attestation.Claims) { c.TCBStatus = "" }), nil, nil, "(none reported)"},
		"out of date ok":     {with(func(c *attestation.Claims) { c.TCBStatus = "OutOfDate" }), func(o *VerifyOptions) { o.AcceptedTCBStatuses = []string{"outofdate"} }, nil, ""},
		"advisories all":     {with(func(c *attestation.Claims) { c.Advisories = []string{"INTEL-SA-00615"} }), nil, nil, ""},
		"advisory listed":    {with(func(c *attestation.Claims) { c.Advisories = []string{"INTEL-SA-00615"} }), func(o *VerifyOptions) { o.AcceptedAdvisories = []string{"INTEL-SA-00615"} }, nil, ""},
		"advisory unlisted":  {with(func(c *attestation.Claims) { c.Advisories = []string{"INTEL-SA-00334"} }), func(o *VerifyOptions) { o.AcceptedAdvisories = []string{"INTEL-SA-00615"} }, nil, "Advisories: expected only [INTEL-SA-00615], found INTEL-SA-00334"},
		"nonce not bound":    {func() attestation.Claims { cl := claims(); cl.ReportData = attestation.BindHash(c.root.Raw); return cl }(), nil, nil, "root certificate and the nonce"},
		"verifier rejects":   {bound(claims()), nil, errors.New("bad signature"), "bad signature"},
		"incomplete options": {bound(claims()), func(o *VerifyOptions) { o.UniqueID = ""; o.SecurityVersion = nil }, nil, "missing: SecurityVersion"},
	} {
		opts := base
		opts.Verifier = claimsVerifier{tc.claims, tc.verErr}
		if tc.opts != nil {
			tc.opts(&opts)
		}
		att, err := VerifyQuote(context.Background(), &Quote{Root: c.root, Intermediate: c.inter, Evidence: []byte("q"), Nonce: nonce}, opts)
		if tc.want == "" {
			if err != nil || att.Claims == nil || !att.Root.Equal(c.root) {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want)
		}
		if name != "incomplete options" && !errors.Is(err, ErrVerification) {
			t.Errorf("%s: error does not wrap ErrVerification", name)
		}
	}

	q := &Quote{Root: c.root, Intermediate: c.inter}
	if _, err := VerifyQuote(context.Background(), q, base); !errors.Is(err, ErrSimulation) {
		t.Errorf("empty quote: %v", err)
	}
	if att, err := VerifyQuote(context.Background(), q, VerifyOptions{InsecureSkipVerify: true}); err != nil || att.Claims != nil || !att.Simulation() {
		t.Errorf("insecure: %v %+v", err, att)
	}
	q.Evidence = []byte("q")
	if _, err := VerifyQuote(context.Background(), q, base); !errors.Is(err, ErrNoVerifier) {
		t.Errorf("no verifier: %v", err)
	}
}

func TestFetchQuoteAndFallback(t *testing.T) {
	c := newCA(t)
	var paths []string
	addr := c.serve(t, func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.RequestURI())
		if strings.HasPrefix(r.URL.Path, "/api/v2/") {
			w.WriteHeader(http.StatusMethodNotAllowed)
			_, _ = io.WriteString(w, `{"status":"error","message":"no endpoint"}`)
			return
		}
		jsendOK(w, map[string]any{"Cert": pemOf(c.inter, c.root), "Quote": []byte{1, 2}})
	})
	q, err := FetchQuote(context.Background(), addr, nil)
	if err != nil || !q.Root.Equal(c.root) || !q.Intermediate.Equal(c.inter) || string(q.Evidence) != "\x01\x02" {
		t.Fatalf("FetchQuote: %+v %v", q, err)
	}
	if strings.Join(paths, " ") != "/api/v2/quote /quote" {
		t.Errorf("paths %v", paths)
	}
	// A nonce needs v2: no fallback.
	_, err = FetchQuote(context.Background(), addr, []byte("n"))
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("nonce against v1: %v", err)
	}
	if want := "/api/v2/quote?nonce=" + base64.RawURLEncoding.EncodeToString([]byte("n")); paths[len(paths)-1] != want {
		t.Errorf("nonce request %q, want %q", paths[len(paths)-1], want)
	}
}

func TestFetchQuoteRefusesForeignTLSCertificate(t *testing.T) {
	served, claimed := newCA(t), newCA(t)
	addr := served.serve(t, func(w http.ResponseWriter, _ *http.Request) {
		jsendOK(w, map[string]any{"cert": pemOf(claimed.inter, claimed.root), "quote": []byte{}})
	})
	if _, err := FetchQuote(context.Background(), addr, nil); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("FetchQuote: %v", err)
	}
}

func TestPinnedClientRefusesOtherRoot(t *testing.T) {
	served, trusted := newCA(t), newCA(t)
	addr := served.serve(t, func(w http.ResponseWriter, _ *http.Request) {
		jsendOK(w, map[string]any{"code": 3, "message": "ok"})
	})
	_, err := Status(context.Background(), addr, trusted.root)
	var ue *UntrustedCertificateError
	if !errors.Is(err, ErrUntrustedCertificate) || !errors.As(err, &ue) || !ue.Trusted.Equal(trusted.root) {
		t.Fatalf("Status with another root: %v", err)
	}
	st, err := Status(context.Background(), addr, served.root)
	if err != nil || st.Code != 3 {
		t.Fatalf("Status: %+v %v", st, err)
	}
	if _, err := Status(context.Background(), addr, nil); err == nil {
		t.Fatal("Status without root: no error")
	}
}

func TestClientTLSConfig(t *testing.T) {
	c, other := newCA(t), newCA(t)
	// A marble's server: its certificate comes from the intermediate, is
	// sent with it, and names no host that is dialled here.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "marble"}, DNSNames: []string{"marble.invalid"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.inter, &key.PublicKey, c.ikey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			_, _ = io.WriteString(w, "anonymous")
			return
		}
		_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der, c.inter.Raw}, PrivateKey: key}},
		ClientAuth:   tls.RequestClientCert,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	get := func(cfg *tls.Config) (string, error) {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		defer client.CloseIdleConnections()
		resp, err := client.Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return string(body), err
	}
	if got, err := get(ClientTLSConfig(c.root, nil)); err != nil || got != "anonymous" {
		t.Errorf("without client certificate: %q, %v", got, err)
	}
	if got, err := get(ClientTLSConfig(c.root, tlsCert(t, other))); err != nil || got != "marble" {
		t.Errorf("with client certificate: %q, %v", got, err)
	}
	_, err = get(ClientTLSConfig(other.root, nil))
	var ue *UntrustedCertificateError
	if !errors.Is(err, ErrUntrustedCertificate) || !errors.As(err, &ue) || !ue.Trusted.Equal(other.root) {
		t.Errorf("another root: %v", err)
	}
	if _, err := get(ClientTLSConfig(nil, nil)); !errors.Is(err, ErrUntrustedCertificate) {
		t.Errorf("no root: %v", err)
	}
}

func TestErrorAnswers(t *testing.T) {
	c := newCA(t)
	addr := c.serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v2/status":
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<html>proxy error</html>")
		case "/api/v2/manifest":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"status":"fail","data":null,"message":"no manifest has been set yet"}`)
		case "/api/v2/update":
			_, _ = io.WriteString(w, `not json`)
		case "/api/v2/update-manifest":
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"status":"error","message":"no pending update"}`)
		}
	})
	_, err := Status(context.Background(), addr, c.root)
	var ae *Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadGateway || ae.Message != "<html>proxy error</html>" {
		t.Errorf("non-JSON error: %v", err)
	}
	_, err = ManifestGet(context.Background(), addr, c.root)
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest || !strings.Contains(err.Error(), "no manifest has been set yet") {
		t.Errorf("fail answer: %v", err)
	}
	if _, err = UpdateLog(context.Background(), addr, c.root); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Errorf("non-JSON success: %v", err)
	}
	if _, err = ManifestUpdateGet(context.Background(), addr, c.root); !errors.Is(err, ErrNoPendingUpdate) {
		t.Errorf("404 pending update: %v", err)
	}
}

func TestManifestGetChecksIntegrity(t *testing.T) {
	c := newCA(t)
	raw := []byte(`{"Packages":{}}`)
	sum := sha256.Sum256(raw)
	goodSig, _ := ecdsa.SignASN1(rand.Reader, c.key, sum[:])
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	badSig, _ := ecdsa.SignASN1(rand.Reader, other, sum[:])
	var fingerprint string
	var sig []byte
	addr := c.serve(t, func(w http.ResponseWriter, _ *http.Request) {
		jsendOK(w, map[string]any{"manifest": raw, "manifestFingerprint": fingerprint, "manifestSignatureRootECDSA": sig})
	})
	fingerprint, sig = ManifestFingerprint(raw), goodSig
	if m, err := ManifestGet(context.Background(), addr, c.root); err != nil || string(m.Raw) != string(raw) {
		t.Fatalf("good manifest: %v", err)
	}
	sig = badSig
	if _, err := ManifestGet(context.Background(), addr, c.root); err == nil || !strings.Contains(err.Error(), "root key") {
		t.Errorf("foreign signature: %v", err)
	}
	fingerprint, sig = strings.Repeat("0", 64), nil
	if _, err := ManifestGet(context.Background(), addr, c.root); err == nil || !strings.Contains(err.Error(), "hashes to") {
		t.Errorf("wrong fingerprint: %v", err)
	}
}

func TestSignQuoteAndCounter(t *testing.T) {
	c := newCA(t)
	quote := []byte("a quote")
	v2 := true
	var counterBody map[string]any
	var counterHadCert bool
	addr := c.serve(t, func(w http.ResponseWriter, r *http.Request) {
		if !v2 {
			w.WriteHeader(http.StatusMethodNotAllowed)
			_, _ = io.WriteString(w, `{"status":"error","message":"no endpoint"}`)
			return
		}
		switch r.URL.Path {
		case "/api/v2/sign-quote":
			h := sha256.New()
			h.Write([]byte(base64.StdEncoding.EncodeToString(quote)))
			h.Write([]byte("UpToDate"))
			sig, _ := ecdsa.SignASN1(rand.Reader, c.key, h.Sum(nil))
			jsendOK(w, map[string]any{"tcbStatus": "UpToDate", "verificationSignature": sig})
		case "/api/v2/monotonic-counter":
			counterHadCert = len(r.TLS.PeerCertificates) > 0
			_ = json.NewDecoder(r.Body).Decode(&counterBody)
			jsendOK(w, map[string]any{"value": 7})
		}
	})
	sq, err := SignQuote(context.Background(), addr, c.root, quote)
	if err != nil || sq.TCBStatus != "UpToDate" {
		t.Fatalf("SignQuote: %+v %v", sq, err)
	}
	sq.TCBStatus = "OutOfDate"
	if VerifySignedQuote(c.root, quote, sq) == nil {
		t.Error("a changed verdict verifies")
	}
	marble := tlsCert(t, c)
	prev, err := SetMonotonicCounter(context.Background(), addr, c.root, marble, "ctr", 9)
	if err != nil || prev != 7 || counterBody["name"] != "ctr" || counterBody["value"] != float64(9) || !counterHadCert {
		t.Fatalf("SetMonotonicCounter: %d %v %v %v", prev, err, counterBody, counterHadCert)
	}
	v2 = false
	if _, err := SignQuote(context.Background(), addr, c.root, quote); !errors.Is(err, ErrUnsupported) {
		t.Errorf("sign-quote on v1: %v", err)
	}
	if _, err := RecoverWithSignature(context.Background(), addr, c.root, []byte("s"), []byte("sig")); !errors.Is(err, ErrUnsupported) {
		t.Errorf("recover on v1: %v", err)
	}
}

func tlsCert(t *testing.T, c *ca) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "marble"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.root, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestRecoverySecretCrypto(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	secret := bytesOf(7)
	enc, err := EncryptRecoverySecret(secret, &key.PublicKey)
	if err != nil || IsPlainRecoverySecret(enc) {
		t.Fatalf("encrypt: %v", err)
	}
	dec, err := DecryptRecoverySecret(enc, key)
	if err != nil || string(dec) != string(secret) {
		t.Fatalf("decrypt: %v", err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := DecryptRecoverySecret(enc, other); err == nil {
		t.Error("decrypting with another key succeeded")
	}
	sig, err := SignRecoverySecret(secret, key)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(secret)
	if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig); err != nil {
		t.Errorf("signature: %v", err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := SignRecoverySecret(secret, ec); err == nil {
		t.Error("an ECDSA recovery key was accepted")
	}
	for n, plain := range map[int]bool{16: true, 32: true, 33: true, 31: false, 256: false} {
		if IsPlainRecoverySecret(make([]byte, n)) != plain {
			t.Errorf("IsPlainRecoverySecret(%d bytes) != %t", n, plain)
		}
	}
}

func TestParseUserSecrets(t *testing.T) {
	c := newCA(t)
	der := base64.StdEncoding.EncodeToString(c.root.Raw)
	s, err := ParseUserSecrets([]byte(`{"k": {"key": "AAEC"}, "c": {"Cert": "` + der + `", "Private": "AAEC"}}`))
	if err != nil || string(s["k"].Key) != "\x00\x01\x02" || len(s["c"].Cert) == 0 {
		t.Fatalf("ParseUserSecrets: %v %v", s, err)
	}
	if strings.Contains(s["k"].String(), "AAEC") || strings.Contains(s["k"].String(), "\x00\x01") {
		t.Error("String() shows the key")
	}
	for _, bad := range []string{
		`{"k": {"Public": "AAEC"}}`,
		`{"k": {}}`,
		`{}`,
		`{"k": {"Key": "AAEC", "Cert": "` + der + `"}}`,
		`{"k": {"Cert": "AAEC"}}`,
		`{"k": {"Key": "not base64!"}}`,
	} {
		if _, err := ParseUserSecrets([]byte(bad)); err == nil {
			t.Errorf("ParseUserSecrets(%s): no error", bad)
		}
	}
}
