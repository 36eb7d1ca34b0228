package keyapi

import (
	"bytes"
	"context"
	"errors"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/marblemesh/marblemesh/api/wire"
	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/attestation/sgx"
	"github.com/marblemesh/marblemesh/internal/coordinator/keyapi/keyapipb"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/test/sgxtest"
)

// fakeCore is a Core whose key and generation the test sets.
type fakeCore struct {
	mu       sync.Mutex
	kek      []byte
	gen      uint64
	floor    uint64
	mode     seal.Mode
	joinErr  error
	joined   int
	floorErr error
	// recovering marks a core in recovery that needs threshold secrets;
	// secrets holds the ones it has, by secret. A secret verifies when
	// its signature is "sig:" followed by it; a ciphertext decrypts when
	// it is "enc:<name>:" followed by the secret, for the core named name.
	recovering bool
	name       string
	threshold  int
	secrets    map[string]core.RecoveryShare
	unlocked   int
}

func (c *fakeCore) KeyForPeer() ([]byte, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kek == nil {
		return nil, 0, false
	}
	return bytes.Clone(c.kek), c.gen, true
}

func (c *fakeCore) NeedsKey() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kek == nil
}

func (c *fakeCore) JoinWithKey(_ context.Context, kek []byte, gen uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.joinErr != nil {
		return c.joinErr
	}
	c.kek, c.gen = bytes.Clone(kek), gen
	c.joined++
	return nil
}

func (c *fakeCore) RaiseGenerationFloor(_ context.Context, gen uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.floor = max(c.floor, gen)
	return c.floorErr
}

func (c *fakeCore) SealMode() seal.Mode {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode == "" {
		return seal.ModeProductKey
	}
	return c.mode
}

func (c *fakeCore) Status() (core.State, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recovering {
		return core.StateRecovery, "recovery"
	}
	return core.StateAcceptingMarbles, "accepting marbles"
}

func (c *fakeCore) RecoveryShares() []core.RecoveryShare {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]core.RecoveryShare, 0, len(c.secrets))
	for _, k := range slices.Sorted(maps.Keys(c.secrets)) {
		out = append(out, c.secrets[k])
	}
	return out
}

func (c *fakeCore) AddRecoveryShares(_ context.Context, shares []core.RecoveryShare, complete bool) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.recovering {
		return 0, nil
	}
	if c.secrets == nil {
		c.secrets = map[string]core.RecoveryShare{}
	}
	for _, sh := range shares {
		if string(sh.Signature) == "sig:"+string(sh.Secret) {
			c.secrets[string(sh.Secret)] = sh
		}
	}
	missing := max(c.threshold-len(c.secrets), 0)
	if missing == 0 && complete {
		c.recovering = false
		c.unlocked++
	}
	return missing, nil
}

func (c *fakeCore) DecryptRecoverySecret(ct []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prefix := "enc:" + c.name + ":"
	if !c.recovering || !strings.HasPrefix(string(ct), prefix) {
		return nil, errors.New("not encrypted for this replica")
	}
	return []byte(strings.TrimPrefix(string(ct), prefix)), nil
}

// held returns the secrets the core holds, sorted, and how often it
// unlocked.
func (c *fakeCore) held() ([]string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.secrets)), c.unlocked
}

func (c *fakeCore) state() (kek []byte, gen, floor uint64, joined int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.kek), c.gen, c.floor, c.joined
}

// staticPeers is a fixed PeerSource.
type staticPeers []string

func (p staticPeers) Peers(context.Context) ([]string, error) {
	return append([]string(nil), p...), nil
}

func (p staticPeers) Members(context.Context) ([]Member, error) {
	ms := make([]Member, 0, len(p))
	for _, a := range p {
		ms = append(ms, Member{Addr: a})
	}
	return ms, nil
}

// describe describes a replica by its core: named name, Ready while it
// holds a key.
func describe(name string, core *fakeCore) func() wire.ReplicaStatus {
	return func() wire.ReplicaStatus {
		kek, gen, _, _ := core.state()
		r := wire.ReplicaStatus{Name: name, Ready: len(kek) > 0, Generation: gen, StoreBackend: "k8s-secret"}
		if !r.Ready {
			r.Reason = "holds no key"
		}
		return r
	}
}

// replica is a key API with its core, serving on loopback.
type replica struct {
	core    *fakeCore
	api     *KeyAPI
	addr    string
	metrics *Metrics
	reg     *prometheus.Registry
	logs    *syncBuffer
	stop    func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// platform is how a test replica attests: simulation, or a synthetic SGX
// enclave described by parts.
type platform struct {
	pki      *sgxtest.PKI
	verifier attestation.Verifier
	parts    func(*sgxtest.QuoteParts)
}

func newSGX(t *testing.T) *platform {
	t.Helper()
	p, err := sgxtest.New()
	if err != nil {
		t.Fatal(err)
	}
	col, err := p.Collateral(nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := p.Verifier(col, sgx.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &platform{pki: p, verifier: v}
}

func (p *platform) with(parts func(*sgxtest.QuoteParts)) *platform {
	return &platform{pki: p.pki, verifier: p.verifier, parts: parts}
}

func startReplica(t *testing.T, p *platform, core *fakeCore, peers PeerSource) *replica {
	t.Helper()
	r := &replica{core: core, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	r.metrics = NewMetrics(r.reg)
	cfg := Config{
		Core: core, Replica: func() wire.ReplicaStatus { return describe("replica-"+r.addr, core)() }, Peers: peers, Logger: slog.New(slog.NewTextHandler(r.logs, nil)), Metrics: r.metrics,
		Interval: 50 * time.Millisecond, PeerTimeout: 2 * time.Second, SyncTimeout: 5 * time.Second,
	}
	if p == nil {
		cfg.Simulation = true
	} else {
		cfg.Issuer, cfg.Verifier = sgxtest.Issuer{PKI: p.pki, Parts: p.parts}, p.verifier
	}
	api, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.api = api
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	srv := api.NewServer(5 * time.Second)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	var once sync.Once
	r.stop = func() { once.Do(func() { srv.Stop(); <-done }) }
	t.Cleanup(r.stop)
	return r
}

func TestSimulationHandsKeyToPeer(t *testing.T) {
	live := startReplica(t, nil, &fakeCore{kek: []byte("0123456789abcdef0123456789abcdef"), gen: 7}, staticPeers{})
	joiner := startReplica(t, nil, &fakeCore{}, staticPeers{live.addr})
	if !joiner.api.TryJoin(t.Context()) {
		t.Fatalf("join failed; logs:\n%s", joiner.logs)
	}
	kek, gen, _, joined := joiner.core.state()
	if string(kek) != "0123456789abcdef0123456789abcdef" || gen != 7 || joined != 1 {
		t.Fatalf("joined with %q generation %d (%d joins)", kek, gen, joined)
	}
	if got := testutil.ToFloat64(live.metrics.served); got != 1 {
		t.Fatalf("served = %v, want 1", got)
	}
	if got := testutil.ToFloat64(joiner.metrics.joins.WithLabelValues("ok")); got != 1 {
		t.Fatalf("joins ok = %v, want 1", got)
	}
	for _, r := range []*replica{live, joiner} {
		if !strings.Contains(r.logs.String(), "SIMULATION") {
			t.Errorf("no simulation warning in logs:\n%s", r.logs)
		}
	}
}

func TestDialRoutesPeers(t *testing.T) {
	live := startReplica(t, nil, &fakeCore{kek: []byte("k"), gen: 2}, staticPeers{})
	_, port, err := net.SplitHostPort(live.addr)
	if err != nil {
		t.Fatal(err)
	}
	core := &fakeCore{}
	var dialed []string
	api, err := New(t.Context(), Config{
		Core: core, Replica: describe("dialer", core), Peers: staticPeers{net.JoinHostPort("192.0.2.7", port)}, Logger: slog.New(slog.DiscardHandler), Simulation: true,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			dialed = append(dialed, addr)
			_, p, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", p))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !api.TryJoin(t.Context()) || len(dialed) != 1 || dialed[0] != "192.0.2.7:"+port {
		t.Fatalf("join through the dialer failed; dialed %v", dialed)
	}
}

func TestPeerWithoutKeyRefuses(t *testing.T) {
	empty := startReplica(t, nil, &fakeCore{}, staticPeers{})
	joiner := startReplica(t, nil, &fakeCore{}, staticPeers{empty.addr})
	if joiner.api.TryJoin(t.Context()) {
		t.Fatal("joined through a peer that holds no key")
	}
	if got := testutil.ToFloat64(empty.metrics.refused.WithLabelValues(refusedNoKey)); got != 1 {
		t.Fatalf("refused no_key = %v, want 1", got)
	}
	if got := testutil.ToFloat64(joiner.metrics.requests.WithLabelValues("refused")); got != 1 {
		t.Fatalf("peer requests refused = %v, want 1", got)
	}
}

func TestJoinTriesNextPeerAfterFailure(t *testing.T) {
	// The first peers are unreachable or hold no key, or the core refuses
	// their key; the round goes on to the next.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()
	empty := startReplica(t, nil, &fakeCore{}, staticPeers{})
	live := startReplica(t, nil, &fakeCore{kek: []byte("k"), gen: 3}, staticPeers{})
	joiner := startReplica(t, nil, &fakeCore{}, staticPeers{deadAddr, empty.addr, live.addr})
	if !joiner.api.TryJoin(t.Context()) {
		t.Fatalf("join failed; logs:\n%s", joiner.logs)
	}
	if _, gen, _, _ := joiner.core.state(); gen != 3 {
		t.Fatalf("generation %d, want 3", gen)
	}

	refusing := startReplica(t, nil, &fakeCore{joinErr: errors.New("state older than the floor")}, staticPeers{live.addr})
	if refusing.api.TryJoin(t.Context()) {
		t.Fatal("TryJoin reported success although the core refused the key")
	}
	if got := testutil.ToFloat64(refusing.metrics.joins.WithLabelValues("failed")); got != 1 {
		t.Fatalf("joins failed = %v, want 1", got)
	}
}

func TestRunWaitsForPeerToReturn(t *testing.T) {
	// The only peer is down; Run keeps asking and joins once it is back
	// on the same address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	joiner := startReplica(t, nil, &fakeCore{}, staticPeers{addr})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); joiner.api.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(300 * time.Millisecond)
	if !joiner.core.NeedsKey() {
		t.Fatal("joined without a peer")
	}
	if got := testutil.ToFloat64(joiner.metrics.requests.WithLabelValues("unreachable")); got < 2 {
		t.Fatalf("unreachable requests = %v, want several rounds", got)
	}
	peer := &fakeCore{kek: []byte("kek"), gen: 9}
	api, err := New(t.Context(), Config{Core: peer, Replica: describe("peer", peer), Peers: staticPeers{}, Logger: slog.New(slog.DiscardHandler), Simulation: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(0)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for joiner.core.NeedsKey() {
		if time.Now().After(deadline) {
			t.Fatal("Run did not join after the peer returned")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, gen, _, _ := joiner.core.state(); gen != 9 {
		t.Fatalf("generation %d, want 9", gen)
	}
}

func TestSyncGenerationRaisesFloorToHighest(t *testing.T) {
	a := startReplica(t, nil, &fakeCore{kek: []byte("k"), gen: 4}, staticPeers{})
	b := startReplica(t, nil, &fakeCore{kek: []byte("k"), gen: 11}, staticPeers{})
	empty := startReplica(t, nil, &fakeCore{}, staticPeers{})
	self := startReplica(t, nil, &fakeCore{kek: []byte("k"), gen: 2}, staticPeers{a.addr, b.addr, empty.addr})
	gen, err := self.api.SyncGeneration(t.Context())
	if err != nil || gen != 11 {
		t.Fatalf("SyncGeneration = %d, %v; want 11", gen, err)
	}
	if _, _, floor, _ := self.core.state(); floor != 11 {
		t.Fatalf("floor %d, want 11", floor)
	}

	// A core that refuses its own state under the new floor says so.
	stale := startReplica(t, nil, &fakeCore{kek: []byte("k"), gen: 2, floorErr: errors.New("rolled back")}, staticPeers{b.addr})
	if _, err := stale.api.SyncGeneration(t.Context()); err == nil {
		t.Fatal("SyncGeneration hid the core's refusal")
	}

	// Without reachable peers nothing is raised.
	alone := startReplica(t, nil, &fakeCore{kek: []byte("k"), gen: 2}, staticPeers{empty.addr})
	if gen, err := alone.api.SyncGeneration(t.Context()); err != nil || gen != 0 {
		t.Fatalf("SyncGeneration alone = %d, %v", gen, err)
	}
	if _, _, floor, _ := alone.core.state(); floor != 0 {
		t.Fatalf("floor %d, want 0", floor)
	}
}

func TestConfigChecks(t *testing.T) {
	p := newSGX(t)
	base := Config{Core: &fakeCore{}, Replica: describe("base", &fakeCore{}), Peers: staticPeers{}, Logger: slog.New(slog.DiscardHandler)}
	cfg := base
	cfg.Issuer, cfg.Verifier = sgxtest.Issuer{PKI: p.pki}, p.verifier
	cfg.Simulation = true
	if _, err := New(t.Context(), cfg); err == nil {
		t.Fatal("accepted a secure issuer in simulation")
	}
	cfg = base
	if _, err := New(t.Context(), cfg); err == nil {
		t.Fatal("accepted no issuer outside simulation")
	}
	cfg = base
	cfg.Issuer = sgxtest.Issuer{PKI: p.pki}
	if _, err := New(t.Context(), cfg); err == nil {
		t.Fatal("accepted an issuer without a verifier")
	}
}

func svn(v uint16) func(*sgxtest.QuoteParts) {
	return func(q *sgxtest.QuoteParts) { q.SVN = v }
}

func TestAttestedHandsKeyToSameIdentity(t *testing.T) {
	p := newSGX(t)
	live := startReplica(t, p, &fakeCore{kek: []byte("attested kek"), gen: 5}, staticPeers{})
	joiner := startReplica(t, p, &fakeCore{}, staticPeers{live.addr})
	if !joiner.api.TryJoin(t.Context()) {
		t.Fatalf("join failed; joiner logs:\n%s\nserver logs:\n%s", joiner.logs, live.logs)
	}
	if kek, gen, _, _ := joiner.core.state(); string(kek) != "attested kek" || gen != 5 {
		t.Fatalf("joined with %q generation %d", kek, gen)
	}
	if strings.Contains(joiner.logs.String(), "SIMULATION") {
		t.Fatal("simulation warning outside simulation")
	}
}

// uncheckedFetch asks the server at addr for its key as a requester of
// identity parts that does not check the server: it shows what the server
// alone enforces.
func uncheckedFetch(t *testing.T, p *platform, addr string) error {
	t.Helper()
	id, err := newIdentity(t.Context(), sgxtest.Issuer{PKI: p.pki, Parts: p.parts}, p.verifier, func() seal.Mode { return seal.ModeProductKey }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	conf := id.clientTLS()
	conf.VerifyConnection = nil
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = keyapipb.NewKeyAPIClient(conn).GetKeyEncryptionKey(ctx, &keyapipb.GetKeyEncryptionKeyRequest{})
	return err
}

// TestAttestedRefusals runs a requester and a server of different
// identities. The server's own check is shown with a requester that does
// not check the server; the requester's with a server that, in TLS 1.3,
// presents its certificate before it sees the requester's.
func TestAttestedRefusals(t *testing.T) {
	p := newSGX(t)
	otherSigner := func(q *sgxtest.QuoteParts) { q.MRSigner[0] ^= 0xff }
	otherEnclave := func(q *sgxtest.QuoteParts) { q.MREnclave[0] ^= 0xff }
	otherProduct := func(q *sgxtest.QuoteParts) { q.ProdID++ }
	debug := func(q *sgxtest.QuoteParts) { q.Flags |= 0x02 }
	for _, tc := range []struct {
		name                         string
		server, joiner               func(*sgxtest.QuoteParts)
		mode                         seal.Mode
		serverRefuses, joinerRefuses bool
	}{
		{name: "requester with lower SecurityVersion", server: svn(4), joiner: svn(3), serverRefuses: true},
		{name: "server with lower SecurityVersion", server: svn(3), joiner: svn(4), joinerRefuses: true},
		{name: "another signer", joiner: otherSigner, serverRefuses: true, joinerRefuses: true},
		{name: "another product", joiner: otherProduct, serverRefuses: true, joinerRefuses: true},
		{name: "debug and production", joiner: debug, serverRefuses: true, joinerRefuses: true},
		{name: "UniqueKey: another enclave of the same signer", joiner: otherEnclave, mode: seal.ModeUniqueKey, serverRefuses: true, joinerRefuses: true},
		{name: "ProductKey: another enclave of the same signer", joiner: otherEnclave},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live := startReplica(t, p.with(tc.server), &fakeCore{kek: []byte("secret"), gen: 1, mode: tc.mode}, staticPeers{})
			err := uncheckedFetch(t, p.with(tc.joiner), live.addr)
			refused := testutil.ToFloat64(live.metrics.refused.WithLabelValues(refusedHandshake))
			if tc.serverRefuses != (err != nil) || tc.serverRefuses != (refused == 1) {
				t.Fatalf("server refusal: got error %v, refused counter %v; want refused %t; server logs:\n%s", err, refused, tc.serverRefuses, live.logs)
			}

			joiner := startReplica(t, p.with(tc.joiner), &fakeCore{mode: tc.mode}, staticPeers{live.addr})
			joined := joiner.api.TryJoin(t.Context())
			joinerRefused := strings.Contains(joiner.logs.String(), ErrPeerRefused.Error())
			if joinerRefused != tc.joinerRefuses {
				t.Fatalf("requester refusal %t, want %t; joiner logs:\n%s", joinerRefused, tc.joinerRefuses, joiner.logs)
			}
			if want := !tc.serverRefuses && !tc.joinerRefuses; joined != want {
				t.Fatalf("joined %t, want %t", joined, want)
			}
			wantServed := 0.0
			if !tc.serverRefuses {
				wantServed = 1 // to uncheckedFetch
				if !tc.joinerRefuses {
					wantServed = 2
				}
			}
			if served := testutil.ToFloat64(live.metrics.served); served != wantServed {
				t.Fatalf("served %v, want %v", served, wantServed)
			}
		})
	}
}

func TestAttestedSimulatedPeerRefused(t *testing.T) {
	p := newSGX(t)
	sim := startReplica(t, nil, &fakeCore{kek: []byte("k"), gen: 1}, staticPeers{})
	joiner := startReplica(t, p, &fakeCore{}, staticPeers{sim.addr})
	if joiner.api.TryJoin(t.Context()) {
		t.Fatal("an attested replica took a key from a simulated peer")
	}
	if !strings.Contains(joiner.logs.String(), "carries no evidence") {
		t.Fatalf("logs:\n%s", joiner.logs)
	}
	live := startReplica(t, p, &fakeCore{kek: []byte("k"), gen: 1}, staticPeers{})
	simJoiner := startReplica(t, nil, &fakeCore{}, staticPeers{live.addr})
	if simJoiner.api.TryJoin(t.Context()) {
		t.Fatal("an attested replica handed its key to a simulated peer")
	}
}

func TestPeerPolicy(t *testing.T) {
	own := &attestation.Claims{UniqueID: []byte{1}, SignerID: []byte{2}, ProductID: 7, SecurityVersion: 3, Debug: true}
	p := PeerPolicy(own, seal.ModeProductKey)
	if !bytes.Equal(p.SignerID, own.SignerID) || *p.ProductID != 7 || *p.SecurityVersion != 3 || p.UniqueID != nil || p.Debug != attestation.DebugRequired {
		t.Fatalf("ProductKey policy %+v", p)
	}
	for _, m := range []seal.Mode{seal.ModeUniqueKey, seal.ModeDisabled} {
		p = PeerPolicy(own, m)
		if !bytes.Equal(p.UniqueID, own.UniqueID) || p.SignerID != nil || p.ProductID != nil {
			t.Fatalf("%s policy %+v", m, p)
		}
	}
	own.Debug = false
	if PeerPolicy(own, seal.ModeProductKey).Debug != attestation.DebugRefused {
		t.Fatal("a production replica accepts debug peers")
	}
}

func TestAttestedVerificationsBounded(t *testing.T) {
	p := newSGX(t)
	live := startReplica(t, p, &fakeCore{kek: []byte("k"), gen: 1}, staticPeers{})
	joiner := startReplica(t, p, &fakeCore{}, staticPeers{live.addr})
	for range maxVerifying {
		live.api.id.verifying <- struct{}{}
	}
	if joiner.api.TryJoin(t.Context()) {
		t.Fatal("a requester was verified beyond the bound")
	}
	if !strings.Contains(live.logs.String(), "verifications of evidence are in progress") {
		t.Fatalf("server logs:\n%s", live.logs)
	}
	for range maxVerifying {
		<-live.api.id.verifying
	}
	if !joiner.api.TryJoin(t.Context()) {
		t.Fatalf("join failed once verifications were free; logs:\n%s", joiner.logs)
	}
}

// TestReplicasDescribesEveryPeer: Replicas describes this replica first,
// then each peer as it describes itself over GetReplicaStatus (one without
// the key too), and a peer that refuses connections or never completes the
// handshake as unreachable, all within StatusTimeout.
func TestReplicasDescribesEveryPeer(t *testing.T) {
	live := startReplica(t, nil, &fakeCore{kek: []byte("kek"), gen: 4}, staticPeers{})
	empty := startReplica(t, nil, &fakeCore{}, staticPeers{})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	_ = closed.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = silent.Close() })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	asker := startReplica(t, nil, &fakeCore{kek: []byte("kek"), gen: 4}, staticPeers{live.addr, empty.addr, deadAddr, silent.Addr().String()})

	start := time.Now()
	got := asker.api.Replicas(t.Context())
	if d := time.Since(start); d > StatusTimeout+500*time.Millisecond {
		t.Fatalf("Replicas took %v, want at most about %v", d, StatusTimeout)
	}
	if len(got) != 5 || got[0].Name != "replica-"+asker.addr || !got[0].Ready {
		t.Fatalf("Replicas = %+v, want this replica first and four peers", got)
	}
	byName := map[string]wire.ReplicaStatus{}
	for _, r := range got[1:] {
		byName[r.Name] = r
	}
	want := map[string]wire.ReplicaStatus{
		"replica-" + live.addr:  {Name: "replica-" + live.addr, Ready: true, Generation: 4, StoreBackend: "k8s-secret"},
		"replica-" + empty.addr: {Name: "replica-" + empty.addr, Reason: "holds no key", StoreBackend: "k8s-secret"},
	}
	for name, w := range want {
		if byName[name] != w {
			t.Errorf("peer %s = %+v, want %+v", name, byName[name], w)
		}
	}
	for _, addr := range []string{deadAddr, silent.Addr().String()} {
		r, ok := byName[addr]
		if !ok || r.Ready || !strings.HasPrefix(r.Reason, "unreachable: ") || !strings.Contains(r.Reason, addr) {
			t.Errorf("peer %s = %+v (found %t), want it unreachable", addr, r, ok)
		}
	}
	for i := 2; i < len(got); i++ {
		if got[i-1].Name > got[i].Name {
			t.Errorf("peers not sorted by name: %+v", got[1:])
		}
	}
}

// TestAttestedReplicaStatus: GetReplicaStatus is attested like the key: a
// peer of the same identity is described, one of another signer is refused
// in the handshake by the asking replica and reported unreachable.
func TestAttestedReplicaStatus(t *testing.T) {
	p := newSGX(t)
	otherSigner := func(q *sgxtest.QuoteParts) { q.MRSigner[0] ^= 0xff }
	same := startReplica(t, p, &fakeCore{kek: []byte("k"), gen: 3}, staticPeers{})
	other := startReplica(t, p.with(otherSigner), &fakeCore{kek: []byte("k"), gen: 3}, staticPeers{})
	asker := startReplica(t, p, &fakeCore{}, staticPeers{same.addr, other.addr})
	got := asker.api.Replicas(t.Context())
	byName := map[string]wire.ReplicaStatus{}
	for _, r := range got {
		byName[r.Name] = r
	}
	if r := byName["replica-"+same.addr]; !r.Ready || r.Generation != 3 {
		t.Errorf("peer of the same identity = %+v; all %+v", r, got)
	}
	if _, ok := byName["replica-"+other.addr]; ok {
		t.Errorf("a peer of another signer was described: %+v", got)
	}
	if r := byName[other.addr]; !strings.HasPrefix(r.Reason, "unreachable: ") || !strings.Contains(r.Reason, ErrPeerRefused.Error()) {
		t.Errorf("peer of another signer = %+v, want it unreachable as refused", r)
	}
}

func share(secret string) core.RecoveryShare {
	return core.RecoveryShare{Secret: []byte(secret), Signature: []byte("sig:" + secret)}
}

// TestRecoverySecretsAcrossReplicas: secrets uploaded to different
// replicas in recovery are put together by the one that asks, and only
// it unlocks; the others keep what they were handed.
func TestRecoverySecretsAcrossReplicas(t *testing.T) {
	newCore := func(name string, held ...string) *fakeCore {
		c := &fakeCore{recovering: true, name: name, threshold: 3, secrets: map[string]core.RecoveryShare{}}
		for _, h := range held {
			c.secrets[h] = share(h)
		}
		return c
	}
	a := startReplica(t, nil, newCore("a", "s1"), staticPeers{})
	b := startReplica(t, nil, newCore("b", "s2"), staticPeers{})
	down := "127.0.0.1:1" // a peer that is not there leaves its secrets out
	c := startReplica(t, nil, newCore("c", "s3"), staticPeers{a.addr, b.addr, down})

	// A peer's forged secret is not taken.
	a.core.mu.Lock()
	a.core.secrets["s9"] = core.RecoveryShare{Secret: []byte("s9"), Signature: []byte("forged")}
	a.core.mu.Unlock()

	missing, err := c.api.ShareRecoverySecrets(t.Context())
	if err != nil || missing != 0 {
		t.Fatalf("exchange: missing %d, %v", missing, err)
	}
	if got, unlocked := c.core.held(); !slices.Equal(got, []string{"s1", "s2", "s3"}) || unlocked != 1 {
		t.Fatalf("asking replica holds %v, unlocked %d", got, unlocked)
	}
	for name, r := range map[string]*replica{"a": a, "b": b} {
		got, unlocked := r.core.held()
		if !slices.Contains(got, "s3") || unlocked != 0 {
			t.Fatalf("replica %s holds %v and unlocked %d times: it must keep the asker's secret and never unlock", name, got, unlocked)
		}
	}
	if got := testutil.ToFloat64(c.metrics.recovery.WithLabelValues("ok")); got != 2 {
		t.Fatalf("exchanges ok = %v, want 2", got)
	}
	if got := testutil.ToFloat64(c.metrics.recovery.WithLabelValues("failed")); got != 1 {
		t.Fatalf("exchanges failed = %v, want 1 (the peer that is down)", got)
	}

	// A replica out of recovery refuses the exchange.
	conn, err := c.api.dial(a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := keyapipb.NewKeyAPIClient(conn)
	a.core.mu.Lock()
	a.core.recovering = false
	a.core.mu.Unlock()
	if _, err := client.ExchangeRecoverySecrets(t.Context(), &keyapipb.ExchangeRecoverySecretsRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("exchange outside recovery: %v", err)
	}
	// Too many secrets, or too large a signature, are refused whole.
	a.core.mu.Lock()
	a.core.recovering = true
	a.core.mu.Unlock()
	many := make([]*keyapipb.RecoverySecret, maxExchangeSecrets+1)
	for i := range many {
		many[i] = &keyapipb.RecoverySecret{Secret: []byte("x"), Signature: []byte("sig:x")}
	}
	if _, err := client.ExchangeRecoverySecrets(t.Context(), &keyapipb.ExchangeRecoverySecretsRequest{Secrets: many}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("too many secrets: %v", err)
	}
	big := []*keyapipb.RecoverySecret{{Secret: []byte("x"), Signature: make([]byte, maxSignatureSize+1)}}
	if _, err := client.ExchangeRecoverySecrets(t.Context(), &keyapipb.ExchangeRecoverySecretsRequest{Secrets: big}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("too large a signature: %v", err)
	}
	if got, _ := a.core.held(); slices.Contains(got, "x") {
		t.Fatal("a refused message left a secret behind")
	}
}

// TestDecryptWithPeers: a secret encrypted for a peer's ephemeral key is
// decrypted by that peer; one no peer can decrypt is not.
func TestDecryptWithPeers(t *testing.T) {
	a := startReplica(t, nil, &fakeCore{recovering: true, name: "a"}, staticPeers{})
	b := startReplica(t, nil, &fakeCore{recovering: true, name: "b"}, staticPeers{})
	c := startReplica(t, nil, &fakeCore{recovering: true, name: "c"}, staticPeers{a.addr, b.addr})
	got, ok := c.api.DecryptWithPeers(t.Context(), []byte("enc:b:secret"))
	if !ok || string(got) != "secret" {
		t.Fatalf("decrypted %q, %t", got, ok)
	}
	if got, ok := c.api.DecryptWithPeers(t.Context(), []byte("enc:z:secret")); ok {
		t.Fatalf("no peer holds key z, yet %q was returned", got)
	}
	if n := testutil.ToFloat64(b.metrics.recovery.WithLabelValues("decrypted")); n != 1 {
		t.Fatalf("b decrypted = %v, want 1", n)
	}
}

// TestNoPeerHoldsKey: a replica that needs a key learns from each round
// whether any peer handed one over; the finding fades after a few
// Intervals.
func TestNoPeerHoldsKey(t *testing.T) {
	keyless := startReplica(t, nil, &fakeCore{}, staticPeers{})
	joiner := startReplica(t, nil, &fakeCore{}, staticPeers{keyless.addr})
	if joiner.api.NoPeerHoldsKey() {
		t.Fatal("no round yet, but no peer holds a key")
	}
	if joiner.api.TryJoin(t.Context()) || !joiner.api.NoPeerHoldsKey() {
		t.Fatal("the only peer holds no key, yet the round did not say so")
	}
	time.Sleep(noKeyFreshness*50*time.Millisecond + 50*time.Millisecond)
	if joiner.api.NoPeerHoldsKey() {
		t.Fatal("the finding of an old round still counts")
	}
	keyless.core.mu.Lock()
	keyless.core.kek = []byte("0123456789abcdef0123456789abcdef")
	keyless.core.mu.Unlock()
	if !joiner.api.TryJoin(t.Context()) || joiner.api.NoPeerHoldsKey() {
		t.Fatal("a peer handed over its key, yet no peer holds one")
	}
	alone := startReplica(t, nil, &fakeCore{}, staticPeers{})
	if alone.api.TryJoin(t.Context()) || !alone.api.NoPeerHoldsKey() {
		t.Fatal("a replica without peers does not learn that none holds a key")
	}
}
