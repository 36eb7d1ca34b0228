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

	"github.com/marblemesh/marblemesh/internal/coordinator/clientapi"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
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

// clientCore is the core as the client API of a distributed Coordinator
// sees it: an owner's recovery secret is put together with the secrets
// other owners uploaded to the other replicas.
type clientCore struct {
	*core.Core
	replicas *replicas
}

// Recover takes an owner's recovery secret as core.Core.Recover does. A
// secret encrypted with another replica's ephemeral recovery key (an
// owner may fetch the key through the Service from one replica and reach
// another with the upload) is decrypted by that peer. When more secrets
// are missing, the replica exchanges the secrets it holds with its peers
// in recovery and unlocks the state once it holds enough; the answer
// counts the secrets still missing after that exchange.
func (c clientCore) Recover(ctx context.Context, secret, signature []byte) (int, error) {
	missing, err := c.Core.Recover(ctx, secret, signature)
	if errors.Is(err, core.ErrForeignRecoveryKey) {
		if plain, ok := c.replicas.api.DecryptWithPeers(ctx, secret); ok {
			defer clear(plain)
			missing, err = c.Core.Recover(ctx, plain, signature)
		}
	}
	if err != nil || missing == 0 {
		return missing, err
	}
	after, err := c.replicas.api.ShareRecoverySecrets(ctx)
	if err != nil {
		return 0, err
	}
	return after, nil
}

// clientCore returns what the client API serves: the core, or on a
// distributed Coordinator the core with recovery across replicas.
func (s *Server) clientCore() clientapi.Core {
	if s.replicas == nil {
		return s.core
	}
	return clientCore{Core: s.core, replicas: s.replicas}
}
