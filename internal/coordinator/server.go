package coordinator

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/marblemesh/marblemesh/internal/coordinator/clientapi"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/health"
	"github.com/marblemesh/marblemesh/internal/coordinator/meshapi"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/internal/lifecycle"
	"github.com/marblemesh/marblemesh/internal/logging"
	"github.com/marblemesh/marblemesh/internal/promreg"
	"github.com/marblemesh/marblemesh/internal/version"
)

// Server is a running Coordinator.
type Server struct {
	cfg      Config
	log      *slog.Logger
	store    store.Store
	core     *core.Core
	health   *health.Monitor
	name     string
	grpc     *grpc.Server
	client   *http.Server
	prom     *http.Server
	meshLn   net.Listener
	clientLn net.Listener
	promLn   net.Listener
	// metrics holds every metric the Coordinator offers.
	metrics *promreg.Registry
	// replicas is the key API between replicas (distributed mode only).
	replicas *replicas
}

// New opens the sealed state, boots the core, applies the startup
// manifest and opens the listeners. Serve starts serving.
func New(cfg Config, logger *slog.Logger) (_ *Server, err error) {
	p, err := selectPlatform(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Simulation {
		logger.Warn("running in SIMULATION mode: marbles are admitted without attestation and the Coordinator's own quote is empty; do not use this for production")
	} else {
		logger.Info("running in a trusted execution environment; marbles are attested", append([]any{"tee", p.tee}, p.notes...)...)
	}
	mode, err := ParseSealMode(string(cfg.SealMode))
	if err != nil {
		return nil, err
	}
	storeOpts := store.Options{Sealers: p.sealers, DefaultMode: mode, Logger: logger}
	st, where, err := openStore(cfg, storeOpts)
	if err != nil {
		return nil, err
	}
	if cfg.ImportSealDir != "" {
		if err := importSealDir(context.Background(), cfg, st, storeOpts, logger); err != nil {
			_ = st.Close()
			return nil, err
		}
	}
	where = append([]any{"store", cfg.storeBackend()}, where...)
	logger.Info("sealed state store opened", where...)
	_, shared := st.(*store.KubeStore)
	s := &Server{cfg: cfg, log: logger, store: st, name: replicaName(cfg),
		health: health.NewMonitor(health.Config{Shared: shared}, nil)}
	defer func() {
		if err != nil {
			s.closeListeners()
			_ = st.Close()
		}
	}()

	reg := promreg.New()
	s.metrics = reg
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	storeInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "coordinator_store_info",
		Help: "The store backend that keeps the sealed state (always 1): file or k8s-secret.",
	}, []string{"backend"})
	storeInfo.WithLabelValues(cfg.storeBackend()).Set(1)
	reg.MustRegister(storeInfo)
	if c, ok := st.(prometheus.Collector); ok {
		// The shared store's counters of lost races and of loads.
		reg.MustRegister(c)
	}
	s.core, err = core.New(core.Config{
		DNSNames:   cfg.DNSNames,
		Simulation: cfg.Simulation,
		Issuer:     p.issuer,
		Verifier:   p.verifier,
		TEE:        p.tee,
		Store:      st,
		Logger:     logger,

		DefaultSealMode: mode,
		Metrics:         core.NewMetrics(reg),

		RecoveryKeyBits: cfg.RecoveryKeyBits,
		Freshness:       s.health,
	})
	if err != nil {
		return nil, fmt.Errorf("starting the Coordinator core: %w", err)
	}
	registerHealthMetrics(reg, s)
	if cfg.StartupManifest != "" {
		if err := s.applyStartupManifest(context.Background(), cfg.StartupManifest); err != nil {
			return nil, err
		}
	}

	if s.clientLn, err = net.Listen("tcp", cfg.ClientAddr); err != nil {
		return nil, fmt.Errorf("client API: %w", err)
	}
	if s.meshLn, err = net.Listen("tcp", cfg.MeshAddr); err != nil {
		return nil, fmt.Errorf("mesh API: %w", err)
	}
	if cfg.PrometheusAddr != "" {
		if s.promLn, err = net.Listen("tcp", cfg.PrometheusAddr); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	if s.replicas, err = s.newReplicas(p, reg); err != nil {
		return nil, err
	}

	s.grpc = meshapi.NewServer(meshapi.NewService(s.core, logger), meshapi.TLSConfig(s.marbleRootCert()), reg,
		meshapi.Timeouts{Handshake: cfg.handshakeTimeout(), Idle: cfg.idleTimeout()})
	s.client = &http.Server{
		Handler:   clientapi.New(s.clientCore(), s, logger, reg),
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert, GetCertificate: s.rootCert()},
		// The TLS handshake is bounded by the smallest of these (net/http).
		ReadHeaderTimeout: cfg.handshakeTimeout(),
		ReadTimeout:       time.Minute,
		IdleTimeout:       cfg.idleTimeout(),
		ErrorLog:          httpErrorLog(logger.With("server", "client API"), cfg.HTTPErrorLogLevel),
	}
	if s.promLn != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /events", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(s.core.Events())
		})
		s.prom = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: httpErrorLog(logger.With("server", "metrics"), cfg.HTTPErrorLogLevel)}
	}
	state, _ := s.core.Status()
	if s.replicas != nil {
		where = append(where, "keyAPI", s.KeyAPIAddr())
	}
	v := version.Get()
	logger.Info("Coordinator ready", append([]any{"version", v.Version, "commit", v.Commit, "state", int(state), "status", state.String(), "tee", s.core.TEE(), "sealMode", string(s.core.SealMode()),
		"clientAPI", s.clientLn.Addr().String(), "meshAPI", s.meshLn.Addr().String()}, where...)...)
	return s, nil
}

// storeBackend names the configured store backend.
func (c Config) storeBackend() string {
	if c.Store == "" {
		return StoreFile
	}
	return c.Store
}

// kubeTimeout bounds each request of the k8s-secret store to the
// Kubernetes API.
const kubeTimeout = 30 * time.Second

// Client-side rate limit of the k8s-secret store's requests. Writes are
// serialized by the core and reloads coalesced, so the store's own pace
// is bounded by the API server's round trip; the limit only catches a
// runaway loop. client-go's usual 5/10 (or even 50/100) would instead
// queue every limited activation and secret write behind a token bucket
// at a few dozen writes per second. The API server's priority and
// fairness settings protect it from the Coordinator's load in either
// case.
const (
	kubeQPS   = 500
	kubeBurst = 1000
)

// openStore opens the configured store. It also returns log attributes
// that say where the state is kept.
func openStore(cfg Config, opts store.Options) (store.Store, []any, error) {
	switch cfg.storeBackend() {
	case StoreFile:
		st, err := store.Open(cfg.SealDir, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("opening sealed state in %s: %w", cfg.SealDir, err)
		}
		return st, []any{"sealDir", cfg.SealDir}, nil
	case StoreK8sSecret:
		rc, source, err := kubeRESTConfig(cfg.Kubeconfig)
		if err != nil {
			return nil, nil, fmt.Errorf("store %s: %w", StoreK8sSecret, err)
		}
		rc.UserAgent = "marblemesh-coordinator"
		rc.Timeout = kubeTimeout
		rc.QPS, rc.Burst = kubeQPS, kubeBurst
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, nil, fmt.Errorf("store %s: a Kubernetes client: %w", StoreK8sSecret, err)
		}
		// Watches are long requests: their client has no request
		// timeout (each watch is bounded by the API server instead).
		wrc := rest.CopyConfig(rc)
		wrc.Timeout = 0
		wcs, err := kubernetes.NewForConfig(wrc)
		if err != nil {
			return nil, nil, fmt.Errorf("store %s: a Kubernetes client: %w", StoreK8sSecret, err)
		}
		st, err := store.OpenKube(store.KubeOptions{
			Client: cs, WatchClient: wcs, Namespace: cfg.KubeNamespace, Name: cfg.KubeStateName, KEKMapName: cfg.KubeKEKMapName,
			Sealers: opts.Sealers, DefaultMode: opts.DefaultMode, Logger: opts.Logger,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("opening sealed state in Secret %s/%s: %w", cfg.KubeNamespace, cfg.KubeStateName, err)
		}
		return st, []any{"namespace", cfg.KubeNamespace, "stateSecret", cfg.KubeStateName, "kubernetesAPI", rc.Host, "kubeconfig", source}, nil
	}
	return nil, nil, fmt.Errorf("unknown store backend %q", cfg.Store)
}

// kubeRESTConfig returns the configuration that reaches the Kubernetes
// API: from the kubeconfig files listed in kubeconfig, else in-cluster.
// It also names where it came from.
func kubeRESTConfig(kubeconfig string) (*rest.Config, string, error) {
	if kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, "", fmt.Errorf("the in-cluster Kubernetes configuration (set %s outside a cluster): %w", EnvKubeconfig, err)
		}
		return rc, "in-cluster", nil
	}
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{Precedence: filepath.SplitList(kubeconfig)}, &clientcmd.ConfigOverrides{})
	rc, err := loader.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("the Kubernetes configuration in %s=%s: %w", EnvKubeconfig, kubeconfig, err)
	}
	return rc, kubeconfig, nil
}

// Core returns the Coordinator's core.
func (s *Server) Core() *core.Core { return s.core }

// ClientAddr returns the client API's listen address.
func (s *Server) ClientAddr() string { return s.clientLn.Addr().String() }

// MeshAddr returns the mesh API's listen address.
func (s *Server) MeshAddr() string { return s.meshLn.Addr().String() }

// KeyAPIAddr returns the key API's listen address, or "" outside
// distributed mode.
func (s *Server) KeyAPIAddr() string {
	if s.replicas == nil {
		return ""
	}
	return s.replicas.ln.Addr().String()
}

// Metrics describes every metric the Coordinator registers, those of its
// configuration only (the key API's and the shared store's in distributed
// mode), whether served or not (EDG_COORDINATOR_PROMETHEUS_ADDR).
func (s *Server) Metrics() ([]promreg.Metric, error) { return s.metrics.Describe() }

// PrometheusAddr returns the metrics listen address, or "".
func (s *Server) PrometheusAddr() string {
	if s.promLn == nil {
		return ""
	}
	return s.promLn.Addr().String()
}

// Serve serves until ctx is done, then drains the APIs within a grace period
// and closes the store. It returns the first server error, or the drain's
// error when requests in flight outlast the grace period, or nil after a
// clean stop.
func (s *Server) Serve(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	if s.replicas != nil {
		// Peers are served first: replicas that start together ask each
		// other. A replica that opened the state by itself learns the
		// newest generation from its peers before it serves clients and
		// marbles; one that needs a key asks its peers until it has one.
		g.Go(s.replicas.serve)
		s.replicas.syncGeneration(gctx, s.core.NeedsKey())
		g.Go(func() error {
			s.replicas.api.Run(gctx)
			return nil
		})
	}
	g.Go(func() error {
		if err := s.client.ServeTLS(s.clientLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("client API: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		// A stop that comes before Serve begins is a clean stop too.
		if err := s.grpc.Serve(s.meshLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("mesh API: %w", err)
		}
		return nil
	})
	if s.prom != nil {
		g.Go(func() error {
			if err := s.prom.Serve(s.promLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
	}
	// The watch keeps reads current while requests drain, and stops
	// after the drain: its reloads must not outlast the store, which is
	// closed last.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	watched := s.watchStore(watchCtx)
	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil {
			s.log.Info("shutting down", "reason", lifecycle.Reason(ctx), "grace", shutdownGrace)
		} else {
			s.log.Warn("shutting down after a server error", "grace", shutdownGrace)
		}
		err := s.shutdown()
		stopWatch()
		<-watched
		return err
	})
	err := g.Wait()
	stopWatch()
	if cerr := s.store.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("closing store: %w", cerr)
	}
	return err
}

// watchStore keeps the served state current when the store is shared
// with other Coordinators (a KubeStore): it watches the stored state and
// reads it again whenever another Coordinator wrote, so that reads
// (status, manifest, activations' checks) do not wait for a write here.
// Bursts of changes are coalesced: at most one reload runs and one more
// waits. Beside the watch, the head is read once every probeInterval
// (checkStore), which proves the Kubernetes API reachable, catches a
// change the watch missed and tries a failed reload again. What the
// watch, the checks and the reloads find feeds s.health. The returned
// channel is closed once all of this has stopped after ctx is done.
// Other stores return a closed channel.
func (s *Server) watchStore(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	ks, ok := s.store.(*store.KubeStore)
	if !ok {
		close(done)
		return done
	}
	s.health.Observe(health.Started, "")
	pending := make(chan struct{}, 1)
	queue := func() {
		select {
		case pending <- struct{}{}:
		default: // a reload is queued already
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-pending:
			}
			rctx, cancel := context.WithTimeout(ctx, reloadTimeout)
			err := s.core.Reload(rctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				s.log.Warn("reading the stored state again after another Coordinator wrote failed; writes are refused until it is read", "error", err)
			}
		}
	})
	wg.Go(func() { s.checkStore(ctx, ks, queue) })
	go func() {
		defer close(done)
		_ = ks.WatchWith(ctx, store.WatchEvents{
			Changed: func() {
				s.health.Observe(health.ChangeSeen, "")
				queue()
			},
			Up: func() { s.health.Observe(health.WatchUp, "") },
			Down: func(err error) {
				reason := ""
				if err != nil {
					reason = err.Error()
				}
				s.health.Observe(health.WatchDown, reason)
			},
		})
		wg.Wait()
	}()
	return done
}

// reloadTimeout bounds one reload of the stored state after a change.
const reloadTimeout = 2 * time.Minute

// shutdownGrace bounds how long a stopping Coordinator waits for requests
// in flight.
const shutdownGrace = 10 * time.Second

// shutdown drains the APIs within shutdownGrace; the mesh API's remaining
// streams are cut when the grace period ends.
func (s *Server) shutdown() error {
	steps := []lifecycle.Step{
		{Name: "client API", Stop: s.client.Shutdown},
		{Name: "mesh API", Stop: func(ctx context.Context) error {
			stopped := make(chan struct{})
			go func() { s.grpc.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
				return nil
			case <-ctx.Done():
				s.grpc.Stop()
				return ctx.Err()
			}
		}},
	}
	if s.prom != nil {
		steps = append(steps, lifecycle.Step{Name: "metrics", Stop: s.prom.Shutdown})
	}
	if s.replicas != nil {
		steps = append(steps, lifecycle.Step{Name: "key API", Stop: s.replicas.stop})
	}
	return lifecycle.Drain(shutdownGrace, steps...)
}

func (s *Server) closeListeners() {
	lns := []net.Listener{s.clientLn, s.meshLn, s.promLn}
	if s.replicas != nil {
		lns = append(lns, s.replicas.ln)
	}
	for _, ln := range lns {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// applyStartupManifest sets the manifest file at boot. A Coordinator that
// already runs the same manifest carries on; a different one is an error,
// since changes go through manifest updates.
func (s *Server) applyStartupManifest(ctx context.Context, path string) error {
	raw, err := os.ReadFile(path) //nolint:gosec // G304: the operator's EDG_STARTUP_MANIFEST
	if err != nil {
		return fmt.Errorf("reading startup manifest: %w", err)
	}
	// alreadySet decides when a manifest is set: the same one is fine
	// (a restart, or another Coordinator sharing the state set it first),
	// another one is refused.
	alreadySet := func() (bool, error) {
		current, _, ok := s.core.ManifestInfo()
		if !ok {
			return false, nil
		}
		if !bytes.Equal(current, raw) {
			return true, fmt.Errorf("startup manifest %s differs from the manifest already set; change it with a manifest update", path)
		}
		s.log.Info("startup manifest is already set", "path", path)
		return true, nil
	}
	if set, err := alreadySet(); set {
		return err
	}
	secrets, err := s.core.SetManifest(ctx, raw)
	if err != nil {
		// SetManifest re-reads the stored state when another Coordinator
		// wrote first; it may have set this very manifest.
		if set, serr := alreadySet(); set {
			return serr
		}
		return fmt.Errorf("setting startup manifest %s: %w", path, err)
	}
	if len(secrets) > 0 {
		s.log.Warn("the startup manifest defines recovery keys; its recovery secrets are only returned by setting the manifest through the client API", "path", path)
	}
	s.log.Info("startup manifest set", "path", path)
	return nil
}

// rootCert returns the client API's certificate: the current root CA.
func (s *Server) rootCert() func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	var cache atomic.Pointer[tls.Certificate]
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, key := s.core.RootCertificate()
		if c := cache.Load(); c != nil && c.Leaf == cert {
			return c, nil
		}
		c := &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
		cache.Store(c)
		return c, nil
	}
}

// marbleRootCert returns the mesh API's certificate: the current marble
// root with the intermediate key.
func (s *Server) marbleRootCert() func() (*tls.Certificate, error) {
	var cache atomic.Pointer[tls.Certificate]
	return func() (*tls.Certificate, error) {
		cert, key := s.core.MarbleRoot()
		if c := cache.Load(); c != nil && c.Leaf == cert {
			return c, nil
		}
		c := &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
		cache.Store(c)
		return c, nil
	}
}

// httpErrorLog routes the HTTP server's own errors to slog at the
// configured level, and failed TLS handshakes that are the client's doing
// at most at Info (logging.ServerErrorLog).
func httpErrorLog(logger *slog.Logger, level string) *log.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "info":
		l = slog.LevelInfo
	case "warn":
		l = slog.LevelWarn
	default:
		l = slog.LevelError
	}
	return logging.ServerErrorLog(logger.With("component", "http"), l)
}
