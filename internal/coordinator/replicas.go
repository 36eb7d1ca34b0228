package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"k8s.io/client-go/kubernetes"

	"github.com/marblemesh/marblemesh/internal/coordinator/keyapi"
)

// replicas is the key API of a Coordinator in distributed mode: it hands
// the key to attested peers and takes it from them when this replica
// needs one.
type replicas struct {
	api  *keyapi.KeyAPI
	grpc *grpc.Server
	ln   net.Listener
	log  *slog.Logger
}

// newReplicas opens the key API's listener and creates its attested
// identity. Outside distributed mode a key API address is refused.
func (s *Server) newReplicas(p *platform, reg prometheus.Registerer) (*replicas, error) {
	cfg := s.cfg
	if cfg.storeBackend() != StoreK8sSecret {
		if cfg.KeyAPIAddr != "" {
			return nil, fmt.Errorf("a key API address (%s) is set, but only replicas in distributed mode (%s=1) share a key", EnvKeyAPIAddr, EnvDistributed)
		}
		return nil, nil
	}
	if cfg.KeyAPIAddr == "" {
		return nil, fmt.Errorf("distributed mode needs a key API address (%s)", EnvKeyAPIAddr)
	}
	rc, _, err := kubeRESTConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("key API peers: %w", err)
	}
	rc.UserAgent = "marblemesh-coordinator"
	rc.Timeout = kubeTimeout
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("key API peers: a Kubernetes client: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.KeyAPIAddr)
	if err != nil {
		return nil, fmt.Errorf("key API: %w", err)
	}
	self := []string{ln.Addr().String()}
	if _, port, err := net.SplitHostPort(ln.Addr().String()); err == nil && cfg.PodIP != "" {
		self = append(self, net.JoinHostPort(cfg.PodIP, port))
	}
	service := cfg.KeyAPIService
	if service == "" {
		service = keyapi.DefaultServiceName
	}
	api, err := keyapi.New(context.Background(), keyapi.Config{
		Core: s.core, Replica: s.Replica, Issuer: p.issuer, Verifier: p.verifier, Simulation: cfg.Simulation,
		Peers: keyapi.EndpointSlices{
			Client: cs, Namespace: cfg.KubeNamespace, Service: service,
			SelfIP: cfg.PodIP, SelfPod: cfg.ReplicaName, SelfAddrs: self,
		},
		Interval: cfg.KeyAPIInterval,
		Dial:     cfg.KeyAPIDial,
		Logger:   s.log,
		Metrics:  keyapi.NewMetrics(reg),
	})
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return &replicas{api: api, grpc: api.NewServer(cfg.handshakeTimeout()), ln: ln, log: s.log}, nil
}

// serve serves the key API until it is stopped.
func (r *replicas) serve() error {
	if err := r.grpc.Serve(r.ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("key API: %w", err)
	}
	return nil
}

// syncGeneration, for a replica that opened the state by itself, learns
// the newest generation from the live peers, so that a state rolled back
// behind theirs is refused.
func (r *replicas) syncGeneration(ctx context.Context, needsKey bool) {
	if needsKey {
		return
	}
	if _, err := r.api.SyncGeneration(ctx); err != nil {
		r.log.Error("a live peer has seen a newer state than the one this replica opened: the state was rolled back, and is refused", "error", err)
	}
}

// stop stops the key API within ctx, then cuts what is left.
func (r *replicas) stop(ctx context.Context) error {
	stopped := make(chan struct{})
	go func() { r.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		r.grpc.Stop()
		return ctx.Err()
	}
}
