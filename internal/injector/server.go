package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/marblemesh/marblemesh/internal/lifecycle"
	"github.com/marblemesh/marblemesh/internal/logging"
	"github.com/marblemesh/marblemesh/internal/promreg"
	"github.com/marblemesh/marblemesh/internal/version"
)

// Server defaults.
const (
	DefaultAddr            = ":8443"
	DefaultCertFile        = "/etc/webhook/certs/tls.crt"
	DefaultKeyFile         = "/etc/webhook/certs/tls.key"
	DefaultShutdownTimeout = 15 * time.Second
	// DefaultMaxBodyBytes bounds a request body: an AdmissionReview carries
	// at most two objects of etcd's 1.5 MiB limit.
	DefaultMaxBodyBytes = 7 << 20
)

// Paths served.
const (
	PathMutate  = "/mutate"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathMetrics = "/metrics"
)

// pooledBufferMax is the largest request buffer kept for reuse.
const pooledBufferMax = 1 << 20

// Options configure a Server.
type Options struct {
	// Addr is the HTTPS listen address used by Run.
	Addr string
	// MetricsAddr, when set, is a plain-HTTP address that Run serves
	// /metrics on in addition to the HTTPS server.
	MetricsAddr string
	// CertFile and KeyFile hold the serving certificate (PEM); they are
	// reloaded when they change.
	CertFile, KeyFile string
	// Config is passed to the rules.
	Config Config
	// Logger receives JSON-friendly structured logs; nil discards them.
	Logger *slog.Logger
	// Registry receives the metrics; nil creates a private one.
	Registry *promreg.Registry
	// ShutdownDelay is how long the server keeps serving after shutdown
	// begins while /readyz already fails, so load balancers can stop
	// sending new connections.
	ShutdownDelay time.Duration
	// ShutdownTimeout bounds the wait for requests in flight; zero means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// MaxBodyBytes bounds a request body; zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

// Server is the webhook's HTTPS server.
type Server struct {
	opts    Options
	log     *slog.Logger
	reg     *promreg.Registry
	metrics *metrics
	certs   *certReloader
	handler http.Handler
	ready   atomic.Bool
	bufs    sync.Pool
}

// NewServer checks the options, loads the certificate and registers the
// metrics.
func NewServer(opts Options) (*Server, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("invalid injector configuration: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = promreg.New()
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, err
	}
	certs, err := newCertReloader(opts.CertFile, opts.KeyFile, opts.Logger, m)
	if err != nil {
		return nil, fmt.Errorf("loading serving certificate: %w", err)
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		reg:     opts.Registry,
		metrics: m,
		certs:   certs,
		bufs:    sync.Pool{New: func() any { return new(bytes.Buffer) }},
	}
	mux := http.NewServeMux()
	mux.HandleFunc(PathMutate, s.serveMutate)
	mux.HandleFunc("GET "+PathHealthz, func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET "+PathReadyz, s.serveReadyz)
	mux.Handle("GET "+PathMetrics, s.metricsHandler())
	s.handler = mux
	return s, nil
}

// Metrics describes every metric the injector registers.
func (s *Server) Metrics() ([]promreg.Metric, error) { return s.reg.Describe() }

// Handler returns the HTTP handler of all paths.
func (s *Server) Handler() http.Handler { return s.handler }

// TLSConfig returns the server's TLS configuration, whose certificate
// follows the files.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.certs.GetCertificate,
	}
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
	})
}

// Run listens on the configured addresses and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.opts.Addr, err)
	}
	var mln net.Listener
	if s.opts.MetricsAddr != "" {
		mln, err = net.Listen("tcp", s.opts.MetricsAddr)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("listening on %s for metrics: %w", s.opts.MetricsAddr, err)
		}
	}
	return s.Serve(ctx, ln, mln)
}

// Serve serves HTTPS on ln, and plain-HTTP /metrics on metricsLn if it is not
// nil, until ctx ends; then it fails readiness, waits ShutdownDelay and shuts
// down gracefully. It closes the listeners.
func (s *Server) Serve(ctx context.Context, ln, metricsLn net.Listener) error {
	// A client's failed TLS handshake (the API server gave up, a probe or
	// a scanner hung up) is logged at most at Info; other server errors
	// at Warn.
	errLog := logging.ServerErrorLog(s.log, slog.LevelWarn)
	main := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          errLog,
	}
	steps := []lifecycle.Step{{Name: "HTTPS server", Stop: main.Shutdown}}
	errc := make(chan error, 2)
	go func() { errc <- main.ServeTLS(ln, "", "") }()
	if metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("GET "+PathMetrics, s.metricsHandler())
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: errLog}
		steps = append(steps, lifecycle.Step{Name: "metrics server", Stop: msrv.Shutdown})
		go func() { errc <- msrv.Serve(metricsLn) }()
		s.log.Info("serving metrics", "addr", metricsLn.Addr().String())
	}
	s.ready.Store(true)
	v := version.Get()
	s.log.Info("marble injector serving", "version", v.Version, "commit", v.Commit, "addr", ln.Addr().String(),
		"coord_addr", s.opts.Config.CoordAddr, "cluster_domain", s.opts.Config.ClusterDomain,
		"sgx_resource", s.opts.Config.SGXResource)

	var serveErr error
	pending := len(steps)
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", "reason", lifecycle.Reason(ctx), "delay", s.opts.ShutdownDelay, "timeout", s.opts.ShutdownTimeout)
	case err := <-errc:
		pending--
		serveErr = fmt.Errorf("serving: %w", err)
		s.log.Error("server stopped", "error", err)
	}
	s.ready.Store(false)
	if serveErr == nil && s.opts.ShutdownDelay > 0 {
		time.Sleep(s.opts.ShutdownDelay)
	}
	var errs []error
	if serveErr != nil {
		errs = append(errs, serveErr)
	}
	if err := lifecycle.Drain(s.opts.ShutdownTimeout, steps...); err != nil {
		errs = append(errs, fmt.Errorf("shutting down: %w", err))
	}
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("serving: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (s *Server) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		writeText(w, http.StatusServiceUnavailable, "not ready")
		return
	}
	writeText(w, http.StatusOK, "ok")
}

func (s *Server) serveMutate(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	m := s.metrics
	m.requests.Inc()
	defer func() { m.latency.Observe(time.Since(start).Seconds()) }()

	if r.Method != http.MethodPost {
		m.errors[errMethodNotAllowed].Inc()
		w.Header().Set("Allow", http.MethodPost)
		writeText(w, http.StatusMethodNotAllowed, "use POST with an AdmissionReview")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		m.errors[errUnsupportedMediaType].Inc()
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "request rejected",
			slog.String("reason", errUnsupportedMediaType), slog.String("content_type", r.Header.Get("Content-Type")))
		writeText(w, http.StatusUnsupportedMediaType,
			fmt.Sprintf("Content-Type must be application/json, got %q", r.Header.Get("Content-Type")))
		return
	}
	buf := s.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= pooledBufferMax {
			s.bufs.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)); err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			m.errors[errBodyTooLarge].Inc()
			writeText(w, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
			return
		}
		m.errors[errReadBody].Inc()
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "reading request body failed", slog.Any("error", err))
		writeText(w, http.StatusBadRequest, fmt.Sprintf("reading request body: %v", err))
		return
	}

	res := Review(buf.Bytes(), s.opts.Config)
	m.observe(res.Decision)
	if res.HTTPStatus != http.StatusOK {
		m.errors[errBadReview].Inc()
	}
	s.logResult(r.Context(), res)

	h := w.Header()
	h.Set("Content-Type", res.ContentType)
	h.Set("Content-Length", strconv.Itoa(len(res.Body)))
	if res.HTTPStatus != http.StatusOK {
		h.Set("X-Content-Type-Options", "nosniff")
	}
	w.WriteHeader(res.HTTPStatus)
	if _, err := w.Write(res.Body); err != nil {
		m.errors[errWriteResponse].Inc()
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "writing response failed",
			slog.String("uid", res.Request.UID), slog.Any("error", err))
	}
}

// logResult logs one review: never the Pod, only identifying facts.
func (s *Server) logResult(ctx context.Context, res ReviewResult) {
	d := res.Decision
	if res.HTTPStatus != http.StatusOK {
		s.log.LogAttrs(ctx, slog.LevelWarn, "request rejected",
			slog.String("reason", string(d.Reason)), slog.String("message", d.Message))
		return
	}
	attrs := [...]slog.Attr{
		slog.String("uid", res.Request.UID),
		slog.String("namespace", res.Request.Namespace),
		slog.String("pod", res.PodName),
		slog.String("operation", res.Request.Operation),
		slog.Bool("dry_run", res.Request.DryRun),
		slog.String("marbletype", d.MarbleType),
		{},
	}
	switch d.Outcome {
	case Mutated:
		attrs[len(attrs)-1] = slog.Int("patch_ops", d.Ops)
		s.log.LogAttrs(ctx, slog.LevelInfo, "pod mutated", attrs[:]...)
	case Unchanged:
		attrs[len(attrs)-1] = slog.String("reason", string(d.Reason))
		s.log.LogAttrs(ctx, slog.LevelInfo, "pod admitted unchanged", attrs[:]...)
	case Denied:
		attrs[len(attrs)-1] = slog.String("reason", string(d.Reason))
		s.log.LogAttrs(ctx, slog.LevelWarn, "request denied", append(attrs[:], slog.String("message", d.Message))...)
	}
}

func writeText(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n") //nolint:gosec // G705: plain text with nosniff, never rendered as HTML
}
