package keyapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/keyapi/keyapipb"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// Core is what the key API needs of the Coordinator's core; *core.Core
// implements it.
type Core interface {
	// KeyForPeer returns the key-encryption key and the generation of the
	// state, or ok false while the replica holds no key.
	KeyForPeer() (kek []byte, generation uint64, ok bool)
	// NeedsKey reports whether the replica waits for a key from a peer.
	NeedsKey() bool
	// JoinWithKey opens the shared state with a peer's key, refusing a
	// state older than generation.
	JoinWithKey(ctx context.Context, kek []byte, generation uint64) error
	// RaiseGenerationFloor refuses, from now on, states older than gen.
	RaiseGenerationFloor(ctx context.Context, gen uint64) error
	// SealMode is the seal mode of the state, which decides what a peer
	// must be (PeerPolicy).
	SealMode() seal.Mode
	// Status tells the core's state (recovery or not).
	Status() (core.State, string)
	// RecoveryShares returns the recovery secrets the core has verified
	// in the current recovery.
	RecoveryShares() []core.RecoveryShare
	// AddRecoveryShares verifies and keeps a peer's recovery secrets and,
	// with complete, unlocks the state once enough are held; it returns
	// how many are still missing.
	AddRecoveryShares(ctx context.Context, shares []core.RecoveryShare, complete bool) (int, error)
	// DecryptRecoverySecret decrypts a recovery secret encrypted with the
	// core's ephemeral recovery key.
	DecryptRecoverySecret(ciphertext []byte) ([]byte, error)
}

// Defaults of Config.
const (
	DefaultInterval    = 10 * time.Second
	DefaultPeerTimeout = 5 * time.Second
	// DefaultSyncTimeout bounds the question for the newest generation at
	// start-up.
	DefaultSyncTimeout = 15 * time.Second
)

// maxKEKSize bounds the key a peer may return.
const maxKEKSize = 1 << 10

// Bounds of the recovery secrets replicas exchange: at most
// maxExchangeSecrets per message, each signature at most
// maxSignatureSize bytes (an RSA-16384 recovery key's), and so a message
// of at most maxMessageSize.
const (
	maxExchangeSecrets = 32
	maxSignatureSize   = 2048
	maxMessageSize     = 128 << 10
)

// Bounds of Replicas: at most maxStatusPeers peers are asked, all within
// StatusTimeout, and a peer's reason is cut to maxReasonSize bytes.
const (
	maxStatusPeers = 32
	StatusTimeout  = 1500 * time.Millisecond
	maxReasonSize  = 512
)

// Config configures the key API of one replica.
type Config struct {
	Core Core
	// Replica describes this replica; GetReplicaStatus answers it.
	Replica func() wire.ReplicaStatus
	// Issuer produces the replica's evidence and Verifier checks peers'.
	// A nil or insecure Issuer is simulation: no evidence is issued or
	// checked, which Simulation must confirm.
	Issuer     attestation.Issuer
	Verifier   attestation.Verifier
	Simulation bool
	// Peers lists the other replicas.
	Peers PeerSource
	// Interval is the pause between rounds of asking peers for a key
	// while the replica needs one (DefaultInterval if 0); each pause
	// varies by up to a fifth either way.
	Interval time.Duration
	// PeerTimeout bounds the connection and request to one peer
	// (DefaultPeerTimeout if 0).
	PeerTimeout time.Duration
	// SyncTimeout bounds SyncGeneration (DefaultSyncTimeout if 0).
	SyncTimeout time.Duration
	// Dial, if set, opens connections to peers instead of a plain TCP
	// dial (tests route peers' addresses to loopback with it).
	Dial   func(ctx context.Context, addr string) (net.Conn, error)
	Logger *slog.Logger
	// Metrics, if not nil, counts requests and joins.
	Metrics *Metrics
}

// KeyAPI is one replica's key API: the server that hands the key to
// attested peers, and the client that asks peers for it.
type KeyAPI struct {
	cfg Config
	id  *identity
	log *slog.Logger

	// mu guards what the last round of TryJoin found: whether no peer
	// handed over a key (noKey), and when.
	mu        sync.Mutex
	noKey     bool
	roundDone time.Time
}

// noKeyFreshness is how many Intervals a round's finding that no peer
// holds a key is trusted for.
const noKeyFreshness = 3

// NoPeerHoldsKey tells whether the last round of asking peers for the
// key, within the last few Intervals, found that none handed one over
// (none listed, none holding one, none reachable or accepted): the
// deployment is then in recovery as a whole, and owners may recover it
// through this replica.
func (k *KeyAPI) NoPeerHoldsKey() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.noKey && time.Since(k.roundDone) < noKeyFreshness*k.cfg.Interval
}

// noteRound records what a round of TryJoin found.
func (k *KeyAPI) noteRound(noKey bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.noKey, k.roundDone = noKey, time.Now()
}

// New creates the replica's ephemeral attested identity. Outside
// simulation the issuer's evidence binds its key; in simulation a loud
// warning is logged, since peers are then not attested at all.
func New(ctx context.Context, cfg Config) (*KeyAPI, error) {
	if cfg.Core == nil || cfg.Replica == nil || cfg.Peers == nil || cfg.Logger == nil {
		return nil, errors.New("key API: Core, Replica, Peers and Logger are required")
	}
	insecure := cfg.Issuer == nil || cfg.Issuer.Insecure()
	if insecure != cfg.Simulation {
		return nil, fmt.Errorf("key API: simulation is %t but the evidence issuer is %s", cfg.Simulation, map[bool]string{true: "missing or insecure", false: "secure"}[insecure])
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = DefaultPeerTimeout
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = DefaultSyncTimeout
	}
	log := cfg.Logger.With("component", "keyapi")
	id, err := newIdentity(ctx, cfg.Issuer, cfg.Verifier, cfg.Core.SealMode, log)
	if err != nil {
		return nil, err
	}
	if insecure {
		log.Warn("key API in SIMULATION mode: the key-encryption key is handed to any peer and taken from any peer WITHOUT attestation; do not use this for production")
	}
	return &KeyAPI{cfg: cfg, id: id, log: log}, nil
}

// NewServer returns the gRPC server of the key API: it serves
// GetKeyEncryptionKey only to requesters whose evidence the TLS handshake
// accepted. handshake bounds the handshake (0 keeps gRPC's default).
func (k *KeyAPI) NewServer(handshake time.Duration) *grpc.Server {
	tlsConf := k.id.serverTLS()
	verify := tlsConf.VerifyConnection
	tlsConf.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil {
			k.cfg.Metrics.incRefused(refusedHandshake)
			k.log.Warn("refused a key API requester", "error", err)
		}
		return err
	}
	opts := []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(tlsConf)),
		grpc.ReadBufferSize(8 << 10),
		grpc.WriteBufferSize(8 << 10),
		grpc.MaxRecvMsgSize(maxMessageSize),
		grpc.MaxConcurrentStreams(16),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: time.Minute}),
	}
	if handshake > 0 {
		opts = append(opts, grpc.ConnectionTimeout(handshake))
	}
	srv := grpc.NewServer(opts...)
	keyapipb.RegisterKeyAPIServer(srv, &service{k: k})
	return srv
}

// service implements keyapipb.KeyAPIServer.
type service struct {
	keyapipb.UnimplementedKeyAPIServer
	k *KeyAPI
}

// GetKeyEncryptionKey implements keyapipb.KeyAPIServer. The TLS
// handshake has verified the requester when this runs.
func (s *service) GetKeyEncryptionKey(ctx context.Context, _ *keyapipb.GetKeyEncryptionKeyRequest) (*keyapipb.GetKeyEncryptionKeyResponse, error) {
	from := peerAddr(ctx)
	kek, gen, ok := s.k.cfg.Core.KeyForPeer()
	if !ok {
		s.k.cfg.Metrics.incRefused(refusedNoKey)
		s.k.log.Info("a peer asked for the key-encryption key, which this replica does not hold", "peer", from)
		return nil, status.Error(codes.FailedPrecondition, "this replica holds no key-encryption key")
	}
	s.k.cfg.Metrics.incServed()
	s.k.log.Info("handed the key-encryption key to a peer", "peer", from, "generation", gen, "attested", !s.k.id.insecure)
	return &keyapipb.GetKeyEncryptionKeyResponse{KEK: kek, Generation: gen}, nil
}

// GetReplicaStatus implements keyapipb.KeyAPIServer: it describes this
// replica to an attested peer, whether it holds the key or not.
func (s *service) GetReplicaStatus(context.Context, *keyapipb.GetReplicaStatusRequest) (*keyapipb.GetReplicaStatusResponse, error) {
	r := s.k.cfg.Replica()
	return &keyapipb.GetReplicaStatusResponse{
		Name: r.Name, Ready: r.Ready, Degraded: r.Degraded, Reason: r.Reason,
		Generation: r.Generation, StoreBackend: r.StoreBackend,
	}, nil
}

// ExchangeRecoverySecrets implements keyapipb.KeyAPIServer: in recovery,
// it keeps the requester's recovery secrets that verify and returns the
// ones this replica holds. It never unlocks the state: the requester, to
// which an owner uploaded a secret, does that with what it collects.
func (s *service) ExchangeRecoverySecrets(ctx context.Context, req *keyapipb.ExchangeRecoverySecretsRequest) (*keyapipb.ExchangeRecoverySecretsResponse, error) {
	if st, _ := s.k.cfg.Core.Status(); st != core.StateRecovery {
		return nil, status.Errorf(codes.FailedPrecondition, "this replica is not in recovery (state: %s)", st)
	}
	in, err := fromWire(req.GetSecrets())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	missing, err := s.k.cfg.Core.AddRecoveryShares(ctx, in, false)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	held := s.k.cfg.Core.RecoveryShares()
	s.k.cfg.Metrics.incExchange("served")
	return &keyapipb.ExchangeRecoverySecretsResponse{Secrets: toWire(held), Missing: uint32(min(missing, maxExchangeSecrets))}, nil //nolint:gosec // G115: bounded above
}

// DecryptRecoverySecret implements keyapipb.KeyAPIServer.
func (s *service) DecryptRecoverySecret(_ context.Context, req *keyapipb.DecryptRecoverySecretRequest) (*keyapipb.DecryptRecoverySecretResponse, error) {
	secret, err := s.k.cfg.Core.DecryptRecoverySecret(req.GetCiphertext())
	if err != nil {
		code := codes.InvalidArgument
		if core.KindOf(err) == core.KindFailedPrecondition {
			code = codes.FailedPrecondition
		}
		return nil, status.Error(code, err.Error())
	}
	s.k.cfg.Metrics.incExchange("decrypted")
	return &keyapipb.DecryptRecoverySecretResponse{Secret: secret}, nil
}

// fromWire checks the bounds of secrets from a peer and converts them.
func fromWire(in []*keyapipb.RecoverySecret) ([]core.RecoveryShare, error) {
	if len(in) > maxExchangeSecrets {
		return nil, fmt.Errorf("%d recovery secrets, at most %d are taken", len(in), maxExchangeSecrets)
	}
	out := make([]core.RecoveryShare, 0, len(in))
	for _, sh := range in {
		if n := len(sh.GetSignature()); n > maxSignatureSize {
			return nil, fmt.Errorf("a recovery secret's signature is %d bytes, at most %d are taken", n, maxSignatureSize)
		}
		out = append(out, core.RecoveryShare{Secret: sh.GetSecret(), Signature: sh.GetSignature()})
	}
	return out, nil
}

// toWire converts secrets for a peer, at most maxExchangeSecrets.
func toWire(in []core.RecoveryShare) []*keyapipb.RecoverySecret {
	in = in[:min(len(in), maxExchangeSecrets)]
	out := make([]*keyapipb.RecoverySecret, 0, len(in))
	for _, sh := range in {
		out = append(out, &keyapipb.RecoverySecret{Secret: sh.Secret, Signature: sh.Signature})
	}
	return out
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		return p.Addr.String()
	}
	return "unknown"
}

// peerConn is an attested connection to one peer.
type peerConn struct {
	*grpc.ClientConn
	// refused receives why this replica refused the peer's evidence.
	refused chan error
}

// explain wraps err with the peer's address and, when this replica
// refused the peer's evidence, with that refusal (ErrPeerRefused).
func (c peerConn) explain(addr string, err error) error {
	select {
	case rerr := <-c.refused:
		return fmt.Errorf("key API peer %s: %w", addr, rerr)
	default:
	}
	return fmt.Errorf("key API peer %s: %w", addr, err)
}

// dial prepares an attested connection to the peer at addr.
func (k *KeyAPI) dial(addr string) (peerConn, error) {
	tlsConf := k.id.clientTLS()
	verify := tlsConf.VerifyConnection
	refused := make(chan error, 1)
	tlsConf.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil {
			select {
			case refused <- err:
			default:
			}
		}
		return err
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize)),
	}
	if k.cfg.Dial != nil {
		opts = append(opts, grpc.WithContextDialer(k.cfg.Dial))
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return peerConn{}, fmt.Errorf("key API peer %s: %w", addr, err)
	}
	return peerConn{ClientConn: conn, refused: refused}, nil
}

// fetch asks the peer at addr for its key, within PeerTimeout. An error
// wraps ErrPeerRefused when this replica refused the peer's evidence.
func (k *KeyAPI) fetch(ctx context.Context, addr string) (kek []byte, gen uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, k.cfg.PeerTimeout)
	defer cancel()
	conn, err := k.dial(addr)
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = conn.Close() }()
	resp, err := keyapipb.NewKeyAPIClient(conn).GetKeyEncryptionKey(ctx, &keyapipb.GetKeyEncryptionKeyRequest{})
	if err != nil {
		return nil, 0, conn.explain(addr, err)
	}
	if n := len(resp.GetKEK()); n == 0 || n > maxKEKSize {
		return nil, 0, fmt.Errorf("key API peer %s: returned a key of %d bytes", addr, n)
	}
	return resp.GetKEK(), resp.GetGeneration(), nil
}

// peerStatus asks the peer at addr to describe itself.
func (k *KeyAPI) peerStatus(ctx context.Context, addr string) (wire.ReplicaStatus, error) {
	conn, err := k.dial(addr)
	if err != nil {
		return wire.ReplicaStatus{}, err
	}
	defer func() { _ = conn.Close() }()
	resp, err := keyapipb.NewKeyAPIClient(conn).GetReplicaStatus(ctx, &keyapipb.GetReplicaStatusRequest{})
	if err != nil {
		return wire.ReplicaStatus{}, conn.explain(addr, err)
	}
	return wire.ReplicaStatus{
		Name: resp.GetName(), Ready: resp.GetReady(), Degraded: resp.GetDegraded(),
		Reason: cut(resp.GetReason()), Generation: resp.GetGeneration(), StoreBackend: resp.GetStoreBackend(),
	}, nil
}

// cut bounds a reason to maxReasonSize bytes.
func cut(s string) string {
	if len(s) <= maxReasonSize {
		return s
	}
	return strings.ToValidUTF8(s[:maxReasonSize], "")
}

// Replicas describes this replica, then every other one the PeerSource
// lists, ready or not (at most maxStatusPeers), sorted by name. The peers
// are asked in parallel within StatusTimeout; one that does not answer
// is named by its Pod, else its address, with the reason
// "unreachable: ...".
func (k *KeyAPI) Replicas(ctx context.Context) []wire.ReplicaStatus {
	ctx, cancel := context.WithTimeout(ctx, StatusTimeout)
	defer cancel()
	out := []wire.ReplicaStatus{k.cfg.Replica()}
	members, err := k.cfg.Peers.Members(ctx)
	if err != nil {
		k.log.Warn("finding key API peers to describe them", "error", err)
	}
	if len(members) > maxStatusPeers {
		members = members[:maxStatusPeers]
	}
	peers := make([]wire.ReplicaStatus, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			r, err := k.peerStatus(ctx, m.Addr)
			if err != nil {
				name := m.Pod
				if name == "" {
					name = m.Addr
				}
				r = wire.ReplicaStatus{Name: name, Reason: cut("unreachable: " + err.Error())}
			}
			peers[i] = r
		})
	}
	wg.Wait()
	slices.SortStableFunc(peers, func(a, b wire.ReplicaStatus) int { return strings.Compare(a.Name, b.Name) })
	return append(out, peers...)
}

// peers lists the other replicas in random order.
func (k *KeyAPI) peers(ctx context.Context) ([]string, error) {
	peers, err := k.cfg.Peers.Peers(ctx)
	//nolint:gosec // G404: the order only spreads requests over peers; it protects nothing
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	return peers, err
}

// TryJoin runs one round: while the core needs a key, it asks the peers
// one after another, in random order, and joins with the first key a peer
// hands over and the core accepts. It reports whether the core holds a
// key afterwards.
func (k *KeyAPI) TryJoin(ctx context.Context) bool {
	if !k.cfg.Core.NeedsKey() {
		return true
	}
	peers, err := k.peers(ctx)
	if err != nil {
		k.log.Warn("finding key API peers", "error", err)
	}
	if len(peers) == 0 {
		k.log.Info("waiting for a key: no peer is ready to hand it over")
		k.noteRound(true)
		return false
	}
	for _, addr := range peers {
		if !k.cfg.Core.NeedsKey() {
			return true
		}
		kek, gen, err := k.fetch(ctx, addr)
		if err != nil {
			k.countFailure(err)
			k.log.Warn("a peer did not hand over the key", "peer", addr, "error", err)
			continue
		}
		k.cfg.Metrics.incRequest("ok")
		err = k.cfg.Core.JoinWithKey(ctx, kek, gen)
		clear(kek)
		k.cfg.Metrics.incJoin(err == nil)
		if err != nil {
			k.log.Warn("joining the shared state with a peer's key failed", "peer", addr, "generation", gen, "error", err)
			continue
		}
		k.log.Info("joined the shared state with a peer's key", "peer", addr, "generation", gen)
		k.noteRound(false)
		return true
	}
	joined := !k.cfg.Core.NeedsKey()
	k.noteRound(!joined)
	return joined
}

func (k *KeyAPI) countFailure(err error) {
	if errors.Is(err, ErrPeerRefused) || status.Code(err) == codes.FailedPrecondition {
		k.cfg.Metrics.incRequest("refused")
		return
	}
	k.cfg.Metrics.incRequest("unreachable")
}

// Run keeps the core supplied with a key until ctx is done: whenever the
// core needs one, it asks the peers, round after round, with Interval
// (±20 %) between rounds.
func (k *KeyAPI) Run(ctx context.Context) {
	for {
		k.TryJoin(ctx)
		d := k.cfg.Interval
		jitter := rand.Int64N(int64(d)*2/5 + 1) //nolint:gosec // G404: jitter spreads requests over time; it protects nothing
		d += time.Duration(jitter) - d/5
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// SyncGeneration asks every ready peer, within SyncTimeout, for the
// generation of its state and raises the core's floor to the highest:
// a replica that opened the state by itself then refuses a state that was
// rolled back behind a live peer's. It returns the highest generation
// learnt (0 if none), and an error only if raising the floor failed.
func (k *KeyAPI) SyncGeneration(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, k.cfg.SyncTimeout)
	defer cancel()
	peers, err := k.peers(ctx)
	if err != nil {
		k.log.Warn("finding key API peers to learn the newest generation", "error", err)
	}
	var highest uint64
	var asked int
	for _, addr := range peers {
		kek, gen, err := k.fetch(ctx, addr)
		if err != nil {
			k.countFailure(err)
			k.log.Warn("a peer did not tell its generation", "peer", addr, "error", err)
			continue
		}
		clear(kek)
		k.cfg.Metrics.incRequest("ok")
		asked++
		highest = max(highest, gen)
	}
	if asked == 0 {
		k.log.Info("no peer told its generation; the state opened is trusted as the newest", "peers", len(peers))
		return 0, nil
	}
	if err := k.cfg.Core.RaiseGenerationFloor(ctx, highest); err != nil {
		return highest, fmt.Errorf("raising the generation floor to %d, learnt from %d peers: %w", highest, asked, err)
	}
	k.log.Info("learnt the newest generation from peers", "generation", highest, "peers", asked)
	return highest, nil
}

// ShareRecoverySecrets is run by a replica in recovery after an owner
// uploaded a recovery secret to it and more are missing: it hands the
// secrets it holds to every peer in recovery, takes theirs, and unlocks
// the state once it holds enough. Peers are asked in parallel, each
// within PeerTimeout. It returns how many secrets are still missing (0
// once the core has left recovery), and an error only when the unlock
// with the collected secrets failed; a peer that cannot be reached only
// leaves its secrets out.
func (k *KeyAPI) ShareRecoverySecrets(ctx context.Context) (int, error) {
	mine := toWire(k.cfg.Core.RecoveryShares())
	peers, err := k.peers(ctx)
	if err != nil {
		k.log.Warn("finding key API peers to exchange recovery secrets with", "error", err)
	}
	got := make([][]core.RecoveryShare, len(peers))
	var wg sync.WaitGroup
	for i, addr := range peers {
		wg.Go(func() {
			shares, err := k.exchange(ctx, addr, mine)
			if err != nil {
				if status.Code(err) != codes.FailedPrecondition {
					k.log.Warn("a peer did not exchange recovery secrets", "peer", addr, "error", err)
				}
				k.cfg.Metrics.incExchange("failed")
				return
			}
			k.cfg.Metrics.incExchange("ok")
			got[i] = shares
		})
	}
	wg.Wait()
	missing, err := k.cfg.Core.AddRecoveryShares(ctx, slices.Concat(got...), true)
	if err != nil {
		return missing, fmt.Errorf("unlocking the state with the recovery secrets of this replica and its peers: %w", err)
	}
	return missing, nil
}

// exchange hands secrets to the peer at addr and returns the peer's.
func (k *KeyAPI) exchange(ctx context.Context, addr string, secrets []*keyapipb.RecoverySecret) ([]core.RecoveryShare, error) {
	ctx, cancel := context.WithTimeout(ctx, k.cfg.PeerTimeout)
	defer cancel()
	conn, err := k.dial(addr)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	resp, err := keyapipb.NewKeyAPIClient(conn).ExchangeRecoverySecrets(ctx, &keyapipb.ExchangeRecoverySecretsRequest{Secrets: secrets})
	if err != nil {
		return nil, conn.explain(addr, err)
	}
	shares, err := fromWire(resp.GetSecrets())
	if err != nil {
		return nil, fmt.Errorf("key API peer %s: %w", addr, err)
	}
	return shares, nil
}

// DecryptWithPeers asks the peers, in parallel and each within
// PeerTimeout, to decrypt a recovery secret encrypted with one of their
// ephemeral recovery keys, and returns the first plaintext a peer
// answers. ok is false when no peer could.
func (k *KeyAPI) DecryptWithPeers(ctx context.Context, ciphertext []byte) (secret []byte, ok bool) {
	peers, err := k.peers(ctx)
	if err != nil {
		k.log.Warn("finding key API peers to decrypt a recovery secret", "error", err)
	}
	ctx, cancel := context.WithTimeout(ctx, k.cfg.PeerTimeout)
	defer cancel()
	found := make(chan []byte, len(peers))
	var wg sync.WaitGroup
	for _, addr := range peers {
		wg.Go(func() {
			conn, err := k.dial(addr)
			if err != nil {
				return
			}
			defer func() { _ = conn.Close() }()
			resp, err := keyapipb.NewKeyAPIClient(conn).DecryptRecoverySecret(ctx, &keyapipb.DecryptRecoverySecretRequest{Ciphertext: ciphertext})
			if err != nil {
				if code := status.Code(err); code != codes.InvalidArgument && code != codes.FailedPrecondition {
					k.log.Warn("a peer did not answer a request to decrypt a recovery secret", "peer", addr, "error", conn.explain(addr, err))
				}
				return
			}
			found <- resp.GetSecret()
		})
	}
	wg.Wait()
	close(found)
	for sec := range found {
		if ok {
			clear(sec)
			continue
		}
		secret, ok = sec, true
	}
	if ok {
		k.cfg.Metrics.incExchange("decrypted_by_peer")
	}
	return secret, ok
}
