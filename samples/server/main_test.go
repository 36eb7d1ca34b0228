package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSharedKey(t *testing.T) {
	key := strings.Repeat("ab", 32)
	got, err := sharedKey(key)
	if err != nil || hex.EncodeToString(got) != key {
		t.Fatalf("sharedKey = %x, %v", got, err)
	}
	for in, want := range map[string]string{
		"":                      envSharedKey + " is not set",
		"zz":                    "not hex",
		strings.Repeat("00", 8): "at least 16",
	} {
		if _, err := sharedKey(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("sharedKey(%q) err = %v, want %q", in, err, want)
		}
	}
}

func TestHandler(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	var out bytes.Buffer
	h := newHandler(key, slog.New(slog.NewTextHandler(&out, nil)))

	peer := &x509.Certificate{
		Subject: pkix.Name{CommonName: "client-uuid"},
		Issuer:  pkix.Name{CommonName: "mesh root"},
	}
	req := httptest.NewRequest(http.MethodGet, "/mac?message=hello+mesh", nil)
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{peer}}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var resp macResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("hello mesh"))
	if resp.MAC != hex.EncodeToString(m.Sum(nil)) {
		t.Fatalf("MAC = %s", resp.MAC)
	}
	if resp.Client != "CN=client-uuid" {
		t.Fatalf("client = %q", resp.Client)
	}
	if !strings.Contains(out.String(), `subject="CN=client-uuid" issuer="CN=mesh root"`) {
		t.Fatalf("report = %q", out.String())
	}
	if strings.Contains(out.String(), hex.EncodeToString(key)) {
		t.Fatal("the key was printed")
	}

	for name, r := range map[string]*http.Request{
		"no TLS": httptest.NewRequest(http.MethodGet, "/mac?message=x", nil),
		"no peer cert": func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/mac", nil)
			r.TLS = &tls.ConnectionState{}
			return r
		}(),
		"wrong method": func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/mac", nil)
			r.TLS = req.TLS
			return r
		}(),
		"unknown route": func() *http.Request {
			r := httptest.NewRequest(http.MethodGet, "/other", nil)
			r.TLS = req.TLS
			return r
		}(),
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code == http.StatusOK {
			t.Errorf("%s: status 200", name)
		}
	}
}
