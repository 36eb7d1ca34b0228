package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/marblemesh/marblemesh/internal/promreg"
	"github.com/marblemesh/marblemesh/test/testpki"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

// testServer is a Server running on 127.0.0.1 with a test CA.
type testServer struct {
	srv       *Server
	secret    *testpki.SecretDir
	reg       *promreg.Registry
	ca        *testpki.CA
	leaf      *testpki.Leaf
	certFile  string
	keyFile   string
	url       string
	metricURL string
	logs      *testsupport.SyncBuffer
	cancel    context.CancelFunc
	done      chan error
}

type serverOption func(*Options)

// wrapHandler wraps the server's handler, for tests that watch requests.
type wrapHandler func(http.Handler) http.Handler

func startServer(t *testing.T, opts ...serverOption) *testServer {
	t.Helper()
	return startServerWith(t, nil, opts...)
}

func startServerWith(t *testing.T, wrap wrapHandler, opts ...serverOption) *testServer {
	t.Helper()
	ca, err := testpki.NewCA("injector test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("marble-injector 1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ts := &testServer{
		ca: ca, leaf: leaf, logs: &testsupport.SyncBuffer{}, reg: promreg.New(),
		secret:   &testpki.SecretDir{Dir: dir},
		certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key"),
		done: make(chan error, 1),
	}
	if err := leaf.Publish(ts.secret); err != nil {
		t.Fatal(err)
	}
	o := Options{
		CertFile: ts.certFile, KeyFile: ts.keyFile, Config: testConfig(), Registry: ts.reg,
		Logger: slog.New(slog.NewJSONHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	withMetricsListener := false
	for _, f := range opts {
		f(&o)
	}
	if o.MetricsAddr != "" {
		withMetricsListener = true
	}
	srv, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = srv
	if wrap != nil {
		srv.handler = wrap(srv.handler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.url = "https://" + ln.Addr().String()
	var mln net.Listener
	if withMetricsListener {
		mln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ts.metricURL = "http://" + mln.Addr().String() + PathMetrics
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- srv.Serve(ctx, ln, mln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
			ts.done <- err
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
	})
	return ts
}

// client returns a client trusting the test CA; each client has its own
// connections.
func (ts *testServer) client(keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: ts.ca.Pool(), MinVersion: tls.VersionTLS12},
			DisableKeepAlives: !keepAlive,
			ForceAttemptHTTP2: true,
		},
	}
}

// answer is what post saw of a response whose body it has read and closed.
type answer struct {
	StatusCode int
	Header     http.Header
}

func (ts *testServer) post(t *testing.T, c *http.Client, contentType string, body []byte) (answer, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.url+PathMutate, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{StatusCode: resp.StatusCode, Header: resp.Header}, b
}

func (ts *testServer) get(t *testing.T, c *http.Client, path string) (int, string) {
	t.Helper()
	resp, err := c.Get(ts.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func caseNamed(t *testing.T, name string) reviewCase {
	t.Helper()
	for _, c := range reviewCases() {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no case %s", name)
	return reviewCase{}
}

func TestServerMutate(t *testing.T) {
	ts := startServer(t)
	c := ts.client(true)
	body := caseNamed(t, "intel").encodeReview(t, nil)
	resp, b := ts.post(t, c, "application/json", body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("HTTP %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if want := Review(body, testConfig()).Body; !bytes.Equal(b, want) {
		t.Fatalf("server answered\n%s\nReview answers\n%s", b, want)
	}
	var rev admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &rev); err != nil || rev.Response == nil || len(rev.Response.Patch) == 0 {
		t.Fatalf("no patch in %s (%v)", b, err)
	}

	// A charset parameter is fine; an unlabelled Pod is admitted unchanged.
	resp, b = ts.post(t, c, "application/json; charset=utf-8", caseNamed(t, "no-label").encodeReview(t, nil))
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"allowed":true}`)) {
		t.Fatalf("unlabelled Pod: HTTP %d %s", resp.StatusCode, b)
	}
	resp, b = ts.post(t, c, "application/json", caseNamed(t, "empty-label").encodeReview(t, nil))
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"allowed":false`)) {
		t.Fatalf("empty label: HTTP %d %s", resp.StatusCode, b)
	}
	resp, b = ts.post(t, c, "application/json", []byte("{not json"))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "not an AdmissionReview") {
		t.Fatalf("garbage: HTTP %d %s", resp.StatusCode, b)
	}

	m := ts.srv.metrics
	for name, got := range map[string]float64{
		"requests":  value(m.requests),
		"mutations": value(m.mutations),
		"skips":     value(m.skips[ReasonNoMarbleType]),
		"denials":   value(m.denials[ReasonEmptyMarbleType]),
		"badReview": value(m.errors[errBadReview]),
	} {
		want := 1.0
		if name == "requests" {
			want = 4
		}
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	logs := ts.logs.String()
	for _, want := range []string{`"msg":"pod mutated"`, `"reason":"no_marbletype_label"`, `"reason":"empty_marbletype"`, `"marbletype":"voting-svc"`, `"pod":"voting-5d8f7c9b6-*"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "ghcr.io/example") || strings.Contains(logs, "pod-template-hash") {
		t.Errorf("logs contain the Pod:\n%s", logs)
	}
}

func TestServerRejects(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.MaxBodyBytes = 4096 })
	c := ts.client(true)
	body := caseNamed(t, "intel").encodeReview(t, nil)
	for _, ct := range []string{"", "text/plain", "application/yaml", "application/json-patch+json", "application/jsonx"} {
		resp, b := ts.post(t, c, ct, body)
		if resp.StatusCode != http.StatusUnsupportedMediaType || !strings.Contains(string(b), "Content-Type must be application/json") {
			t.Errorf("Content-Type %q: HTTP %d %s", ct, resp.StatusCode, b)
		}
	}
	resp, err := c.Get(ts.url + PathMutate)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
		t.Errorf("GET %s: HTTP %d", PathMutate, resp.StatusCode)
	}
	large, b := ts.post(t, c, "application/json", bytes.Repeat([]byte(" "), 5000))
	if large.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("large body: HTTP %d %s", large.StatusCode, b)
	}
	if code, _ := ts.get(t, c, "/nothing"); code != http.StatusNotFound {
		t.Errorf("unknown path: HTTP %d", code)
	}
	m := ts.srv.metrics
	if got := value(m.errors[errUnsupportedMediaType]); got != 5 {
		t.Errorf("unsupported media type errors = %v, want 5", got)
	}
	if got := value(m.errors[errBodyTooLarge]); got != 1 {
		t.Errorf("body too large errors = %v, want 1", got)
	}
	if got := value(m.errors[errMethodNotAllowed]); got != 1 {
		t.Errorf("method errors = %v, want 1", got)
	}
}

func TestServerHealthAndMetrics(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.MetricsAddr = "127.0.0.1:0" })
	c := ts.client(true)
	if code, body := ts.get(t, c, PathHealthz); code != http.StatusOK || body != "ok\n" {
		t.Errorf("healthz: %d %q", code, body)
	}
	if code, body := ts.get(t, c, PathReadyz); code != http.StatusOK || body != "ok\n" {
		t.Errorf("readyz: %d %q", code, body)
	}
	ts.post(t, c, "application/json", caseNamed(t, "intel").encodeReview(t, nil))

	code, https := ts.get(t, c, PathMetrics)
	if code != http.StatusOK {
		t.Fatalf("metrics: HTTP %d", code)
	}
	resp, err := http.Get(ts.metricURL)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("plain metrics: HTTP %d %v", resp.StatusCode, err)
	}
	for _, text := range []string{https, string(plain)} {
		for _, want := range []string{
			"marble_injector_admission_requests_total 1",
			"marble_injector_mutations_total 1",
			"marble_injector_patch_operations_total 5",
			`marble_injector_skips_total{reason="no_marbletype_label"} 0`,
			`marble_injector_skips_total{reason="already_injected"} 0`,
			`marble_injector_denials_total{reason="not_a_pod"} 0`,
			`marble_injector_errors_total{kind="unsupported_media_type"} 0`,
			"marble_injector_admission_duration_seconds_bucket",
			"marble_injector_admission_duration_seconds_count 1",
			`marble_injector_certificate_reloads_total{result="error"} 0`,
			"marble_injector_certificate_expiry_timestamp_seconds",
			"go_goroutines",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	}
}

// TestServerGracefulShutdown cancels the server while a request is being
// sent: readiness fails at once, the request still gets its answer, and
// Serve returns without error.
func TestServerGracefulShutdown(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.ShutdownDelay = 200 * time.Millisecond })
	c := ts.client(true)
	body := caseNamed(t, "intel").encodeReview(t, nil)

	pr, pw := io.Pipe()
	type result struct {
		code int
		body []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		req, err := http.NewRequest(http.MethodPost, ts.url+PathMutate, pr)
		if err != nil {
			got <- result{err: err}
			return
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{resp.StatusCode, b, err}
	}()
	if _, err := pw.Write(body[:len(body)/2]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request to arrive", func() bool { return value(ts.srv.metrics.requests) == 1 })

	ts.cancel()
	waitFor(t, "readiness to fail", func() bool {
		code, _ := ts.get(t, c, PathReadyz)
		return code == http.StatusServiceUnavailable
	})
	if _, err := pw.Write(body[len(body)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-got
	if r.err != nil || r.code != http.StatusOK || !bytes.Contains(r.body, []byte(`"patch":`)) {
		t.Fatalf("in-flight request: %v HTTP %d %s", r.err, r.code, r.body)
	}
	select {
	case err := <-ts.done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
		ts.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if !strings.Contains(ts.logs.String(), `"msg":"shutting down"`) {
		t.Error("shutdown not logged")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// servedSerial makes a new TLS connection and returns the serial number of
// the certificate the server presents; the client trusts every given CA.
func servedSerial(t *testing.T, addr string, cas ...*testpki.CA) *big.Int {
	t.Helper()
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AppendCertsFromPEM(ca.PEM)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestCertificateRotation replaces the certificate files while requests keep
// flowing over kept-alive connections: new connections get the new
// certificate, requests never fail, and a broken pair leaves the last good
// certificate in use.
func TestCertificateRotation(t *testing.T) {
	ts := startServer(t)
	addr := strings.TrimPrefix(ts.url, "https://")
	ca2, err := testpki.NewCA("rotated CA")
	if err != nil {
		t.Fatal(err)
	}
	body := caseNamed(t, "intel").encodeReview(t, nil)

	// Load runs until stopped, at most 20,000 requests, each on a client
	// that trusts both CAs; half the clients reconnect for every request.
	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ts.ca.PEM)
	pool.AppendCertsFromPEM(ca2.PEM)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(keepAlive bool) {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
				DisableKeepAlives: !keepAlive,
			}}
			defer c.CloseIdleConnections()
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				resp, err := c.Post(ts.url+PathMutate, "application/json", bytes.NewReader(body))
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("HTTP %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}(w%2 == 0)
	}
	defer func() {
		close(stop)
		wg.Wait()
		if n := failed.Load(); n > 0 {
			t.Errorf("%d of %d requests failed during rotation, first: %v", n, sent.Load(), firstErr.Load())
		}
		if sent.Load() == 0 {
			t.Error("no load was sent")
		}
	}()

	if got := servedSerial(t, addr, ts.ca); got.Cmp(ts.leaf.Serial) != 0 {
		t.Fatalf("serves serial %v, want %v", got, ts.leaf.Serial)
	}
	reloadOK := func() float64 { return value(ts.srv.metrics.certReloadOK) }
	reloadKO := func() float64 { return value(ts.srv.metrics.certReloadKO) }

	// Rotation as kubelet projects a renewed Secret: both files at once.
	leaf2, err := ts.ca.Issue("marble-injector 2")
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf2.Publish(ts.secret); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, addr, ts.ca); got.Cmp(leaf2.Serial) != 0 {
		t.Fatalf("after rotation serves serial %v, want %v", got, leaf2.Serial)
	}
	if reloadOK() < 1 || reloadKO() != 0 {
		t.Errorf("reloads = %v, failed %v; want at least one, no failure", reloadOK(), reloadKO())
	}

	// A broken pair: the new certificate with the old key.
	leaf3, err := ts.ca.Issue("marble-injector 3")
	if err != nil {
		t.Fatal(err)
	}
	broken := &testpki.Leaf{CertPEM: leaf3.CertPEM, KeyPEM: leaf2.KeyPEM}
	if err := broken.Publish(ts.secret); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, addr, ts.ca); got.Cmp(leaf2.Serial) != 0 {
		t.Fatalf("with a broken pair serves serial %v, want the previous %v", got, leaf2.Serial)
	}
	failures := reloadKO()
	if failures < 1 {
		t.Errorf("failed reloads = %v, want at least 1", failures)
	}
	for i := 0; i < 3; i++ {
		if got := servedSerial(t, addr, ts.ca); got.Cmp(leaf2.Serial) != 0 {
			t.Fatalf("with a broken pair serves serial %v, want the previous %v", got, leaf2.Serial)
		}
	}
	if reloadKO() != failures {
		t.Errorf("failed reloads grew from %v to %v: an unchanged broken pair is retried", failures, reloadKO())
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "keeping the previous one") || !strings.Contains(logs, `"level":"ERROR"`) {
		t.Errorf("broken pair not logged as an error:\n%s", logs)
	}

	// Files that vanish for a moment keep the certificate too.
	if err := os.Remove(ts.keyFile); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, addr, ts.ca); got.Cmp(leaf2.Serial) != 0 {
		t.Fatalf("without a key file serves serial %v, want %v", got, leaf2.Serial)
	}

	// A certificate of a new CA, written in place one file after the other:
	// the server may see the mixed pair in between, and ends on the new one.
	time.Sleep(20 * time.Millisecond)
	leaf4, err := ca2.Issue("marble-injector 4")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ts.keyFile, leaf4.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ts.certFile, leaf4.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the in-place certificate", func() bool {
		return servedSerial(t, addr, ts.ca, ca2).Cmp(leaf4.Serial) == 0
	})
	waitFor(t, "load during rotation", func() bool { return sent.Load() > 50 })
}

func TestNewServerErrors(t *testing.T) {
	dir := t.TempDir()
	ca, err := testpki.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("x")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := leaf.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]Options{
		"no cert":     {CertFile: filepath.Join(dir, "missing"), KeyFile: keyFile, Config: testConfig()},
		"bad config":  {CertFile: certFile, KeyFile: keyFile, Config: withResource("not a resource")},
		"key as cert": {CertFile: keyFile, KeyFile: keyFile, Config: testConfig()},
	} {
		if _, err := NewServer(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	reg := promreg.New()
	o := Options{CertFile: certFile, KeyFile: keyFile, Config: testConfig(), Registry: reg}
	if _, err := NewServer(o); err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(o); err == nil || !strings.Contains(err.Error(), "registering metrics") {
		t.Errorf("second server on one registry: %v", err)
	}
	var are prometheus.AlreadyRegisteredError
	_, err = NewServer(o)
	if !errors.As(err, &are) {
		t.Errorf("error %v does not wrap AlreadyRegisteredError", err)
	}
}

// value reads a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
