package logging

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

type slowValue struct{}

func (slowValue) LogValue() slog.Value { return slog.DurationValue(250 * time.Millisecond) }

func TestDurationsAsStrings(t *testing.T) {
	t.Parallel()
	var json1, text bytes.Buffer
	for _, log := range []*slog.Logger{NewJSON(&json1, slog.LevelInfo), New(&text, FormatText)} {
		log.With("grace", 10*time.Second).WithGroup("retry").Info("waiting", "backoff", 1500*time.Millisecond, "slow", slowValue{}, "count", 3)
	}
	var line struct {
		Grace string
		Retry struct {
			Backoff, Slow string
			Count         int
		}
	}
	if err := json.Unmarshal(json1.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, json1.Bytes())
	}
	if line.Grace != "10s" || line.Retry.Backoff != "1.5s" || line.Retry.Slow != "250ms" || line.Retry.Count != 3 {
		t.Fatalf("JSON line %s", json1.Bytes())
	}
	if !strings.Contains(text.String(), "grace=10s retry.backoff=1.5s retry.slow=250ms retry.count=3") {
		t.Fatalf("text line %s", text.String())
	}
}

func TestNewFormats(t *testing.T) {
	t.Parallel()
	for format, wantJSON := range map[string]bool{"json": true, " JSON ": true, "text": false, "": false} {
		var buf bytes.Buffer
		New(&buf, format).Info("hello")
		if json.Valid(bytes.TrimSpace(buf.Bytes())) != wantJSON {
			t.Errorf("format %q wrote %q", format, buf.String())
		}
	}
}

func TestHandshakeLevel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind        string
		other, want slog.Level
	}{
		{HungUp, slog.LevelError, slog.LevelDebug},
		{BadClient, slog.LevelError, slog.LevelInfo},
		{BadClient, slog.LevelDebug, slog.LevelDebug},
		{"", slog.LevelError, slog.LevelError},
		{"", slog.LevelWarn, slog.LevelWarn},
	} {
		if got := HandshakeLevel(tc.kind, tc.other); got != tc.want {
			t.Errorf("HandshakeLevel(%q, %v) = %v, want %v", tc.kind, tc.other, got, tc.want)
		}
	}
}

// selfSigned returns a server certificate for 127.0.0.1 that no client
// trusts.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// clients are the ways a client can fail a handshake, with the kind the
// server must see.
var clients = []struct {
	name string
	kind string
	do   func(addr string) error
}{
	{"hangs up", HungUp, func(addr string) error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}},
	{"speaks plain HTTP", BadClient, func(addr string) error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		_, _ = io.ReadAll(c)
		return nil
	}},
	{"refuses the certificate", BadClient, func(addr string) error {
		c, err := tls.Dial("tcp", addr, &tls.Config{MinVersion: tls.VersionTLS12})
		if err == nil {
			_ = c.Close()
			return errors.New("the client trusted a self-signed certificate")
		}
		return nil
	}},
}

func TestHandshakeFailureOfRealHandshakes(t *testing.T) {
	t.Parallel()
	cert := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range clients {
		t.Run(tc.name, func(t *testing.T) {
			errc := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				defer c.Close()
				errc <- tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}).HandshakeContext(context.Background())
			}()
			if err := tc.do(ln.Addr().String()); err != nil {
				t.Fatal(err)
			}
			err := <-errc
			if got := HandshakeFailure(err); got != tc.kind {
				t.Fatalf("HandshakeFailure(%v) = %q, want %q", err, got, tc.kind)
			}
		})
	}
	t.Run("server without certificate", func(t *testing.T) {
		errc := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			errc <- tls.Server(c, &tls.Config{MinVersion: tls.VersionTLS12}).HandshakeContext(context.Background())
		}()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the server fails first
		if err == nil {
			_ = c.Close()
		}
		err = <-errc
		if got := HandshakeFailure(err); got != "" {
			t.Fatalf("HandshakeFailure(%v) = %q, want none: the server's own fault", err, got)
		}
	})
	if HandshakeFailure(nil) != "" {
		t.Fatal("no error is no failure")
	}
}

// syncBuffer is written by the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestServerErrorLog runs an HTTPS server with ServerErrorLog and checks the
// level of each client's failure in its JSON log.
func TestServerErrorLog(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	logger := NewJSON(&out, slog.LevelDebug)
	srv := &http.Server{
		Handler:           http.NotFoundHandler(),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          ServerErrorLog(logger, slog.LevelError),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	defer srv.Close()
	for _, tc := range clients {
		if err := tc.do(ln.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	srv.ErrorLog.Print("http: some other server error")

	want := map[string]string{HungUp: "DEBUG", BadClient: "INFO"}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var lines []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%v: %q", err, l)
			}
			lines = append(lines, m)
		}
		counts := map[string]int{}
		other := false
		for _, m := range lines {
			if m["msg"] == "http: some other server error" && m["level"] == "ERROR" {
				other = true
				continue
			}
			kind, _ := m["cause"].(string)
			if m["msg"] != "TLS handshake failed" || m["level"] != want[kind] || m["remote"] == "" || m["error"] == "" {
				t.Fatalf("unexpected line %v\nlog:\n%s", m, out.String())
			}
			counts[kind]++
		}
		if other && counts[HungUp] == 1 && counts[BadClient] == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
