// Package meshapi serves the Coordinator's gRPC mesh API,
// rpc.Marble/Activate, over TLS with client certificates.
package meshapi

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/marblemesh/marblemesh/internal/coordinator/apierror"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/logging"
	"github.com/marblemesh/marblemesh/rpc"
)

// Activator activates marbles; *core.Core implements it.
type Activator interface {
	Activate(ctx context.Context, req core.ActivationRequest) (*core.Parameters, error)
}

// Service implements rpc.MarbleServer.
type Service struct {
	rpc.UnimplementedMarbleServer
	core Activator
	log  *slog.Logger
}

// NewService returns the mesh API over an Activator.
func NewService(a Activator, log *slog.Logger) *Service {
	return &Service{core: a, log: log}
}

// Activate implements rpc.MarbleServer.
func (s *Service) Activate(ctx context.Context, req *rpc.ActivationReq) (*rpc.ActivationResp, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, status.Error(codes.Unauthenticated, "a TLS client certificate is required")
	}
	params, err := s.core.Activate(ctx, core.ActivationRequest{
		PeerCert:   info.State.PeerCertificates[0],
		Quote:      req.GetQuote(),
		CSR:        req.GetCSR(),
		MarbleType: req.GetMarbleType(),
		UUID:       req.GetUUID(),
	})
	if err != nil {
		d := apierror.Decide(ctx, s.log, "activation failed", err, "api", "mesh", "type", req.GetMarbleType(), "uuid", req.GetUUID())
		return nil, status.Error(d.GRPC, d.Message)
	}
	return &rpc.ActivationResp{Parameters: &rpc.Parameters{
		Files: params.Files, Env: params.Env, Argv: params.Argv,
	}}, nil
}

// TLSConfig returns the server TLS configuration: it presents the current
// marble root (which changes with manifest updates) and requires a client
// certificate without verifying its chain, since the marble's evidence
// binds it.
func TLSConfig(current func() (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return current()
		},
	}
}

// Timeouts bound what a connection may cost while it does nothing useful.
type Timeouts struct {
	// Handshake bounds the TLS handshake and the HTTP/2 preface of a new
	// connection; gRPC's default is 120 s.
	Handshake time.Duration
	// Idle closes (with GOAWAY) a connection that has had no call in
	// progress for that long; gRPC's default is never.
	Idle time.Duration
}

// MetricsPrefix starts the names of the mesh API's gRPC metrics: the
// middleware's grpc_server_* metrics become
// coordinator_mesh_api_grpc_server_*, after the Coordinator's scheme.
const MetricsPrefix = "coordinator_mesh_api"

// handshakeLogger logs the server handshakes that fail, which gRPC itself
// reports only to its own logger at a level it does not print by default:
// at Debug when the client hung up, at Info when it spoke bad TLS or
// refused the Coordinator's certificate, else at Error.
type handshakeLogger struct {
	credentials.TransportCredentials
	log *slog.Logger
}

func (h handshakeLogger) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := h.TransportCredentials.ServerHandshake(conn)
	if err != nil && h.log != nil {
		kind := logging.HandshakeFailure(err)
		attrs := []any{"component", "mesh", "remote", conn.RemoteAddr().String(), "error", err.Error()}
		if kind != "" {
			attrs = append(attrs, "cause", kind)
		}
		h.log.Log(context.Background(), logging.HandshakeLevel(kind, slog.LevelError), "TLS handshake failed", attrs...)
	}
	return out, info, err
}

func (h handshakeLogger) Clone() credentials.TransportCredentials {
	return handshakeLogger{TransportCredentials: h.TransportCredentials.Clone(), log: h.log}
}

// NewServer returns a gRPC server with the mesh API registered and its
// gRPC server metrics (MetricsPrefix) registered with reg (if not nil),
// the handling time included. Zero timeouts keep gRPC's defaults.
func NewServer(svc *Service, tlsConfig *tls.Config, reg prometheus.Registerer, timeouts Timeouts) *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.Creds(handshakeLogger{TransportCredentials: credentials.NewTLS(tlsConfig), log: svc.log}),
		// A marble opens one connection for one small request and response,
		// so per-connection buffers stay small and the write buffer is
		// returned to a pool between writes.
		grpc.ReadBufferSize(8 << 10),
		grpc.WriteBufferSize(8 << 10),
	}
	if timeouts.Handshake > 0 {
		opts = append(opts, grpc.ConnectionTimeout(timeouts.Handshake))
	}
	if timeouts.Idle > 0 {
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: timeouts.Idle}))
	}
	var metrics *grpcprom.ServerMetrics
	if reg != nil {
		metrics = grpcprom.NewServerMetrics(
			grpcprom.WithServerCounterOptions(grpcprom.WithNamespace(MetricsPrefix)),
			grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramNamespace(MetricsPrefix)),
		)
		reg.MustRegister(metrics)
		opts = append(opts, grpc.ChainUnaryInterceptor(metrics.UnaryServerInterceptor()))
	}
	srv := grpc.NewServer(opts...)
	rpc.RegisterMarbleServer(srv, svc)
	if metrics != nil {
		metrics.InitializeMetrics(srv)
	}
	return srv
}
