// Package core is the Coordinator's state machine: it boots from the sealed
// store, accepts the manifest, activates marbles and answers the queries of
// the client API. It knows nothing of HTTP or gRPC; the API packages adapt
// it.
package core

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/pki"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/internal/manifest"
)

// Config configures a Core.
type Config struct {
	// DNSNames are the host names and IP addresses of the Coordinator,
	// written into its CA certificates.
	DNSNames []string
	// Simulation admits marbles without verifying their evidence. It must
	// be chosen explicitly and is reported everywhere.
	Simulation bool
	// Issuer produces the Coordinator's own evidence. Required.
	Issuer attestation.Issuer
	// Verifier checks marble evidence. Required unless Simulation.
	Verifier attestation.Verifier
	// TEE names the trusted execution environment outside simulation
	// (for example "gramine-sgx"); it appears in the status message and
	// the coordinator_tee_info metric; empty means "unknown". In
	// simulation the name is always TEESimulation.
	TEE string
	// Store persists the state. Required. It may be shared with other
	// Coordinators (store.KubeStore): a write that loses a race to one of
	// them is checked and tried again against the state it stored, and
	// what they wrote is served here after such a write or Core.Reload.
	Store store.Store
	// DefaultSealMode is the seal mode before a manifest is set and when
	// the manifest leaves Config.SealMode empty; empty means ProductKey.
	// It must be the store's default mode. Disabled is not allowed here:
	// only a manifest with recovery keys may choose it.
	DefaultSealMode seal.Mode
	// Logger receives structured logs. Defaults to a discarding logger.
	Logger *slog.Logger
	// Metrics records Prometheus metrics. Optional.
	Metrics *Metrics
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time
	// RecoveryKeyBits is the size of the ephemeral RSA key that owners may
	// encrypt their recovery secrets with. Defaults to
	// DefaultRecoveryKeyBits; tests use smaller keys.
	RecoveryKeyBits int
	// Freshness, when set, is told of every read of the stored state
	// after the start and asked before every write after the start: a
	// write while the served state is not current is refused with
	// KindUnavailable before it reaches the store. Optional.
	Freshness Freshness
}

// Freshness tracks whether the state a Coordinator serves is the stored
// one (see package health).
type Freshness interface {
	// BeginLoad is called when a read of the stored state begins; the
	// returned function is called with its outcome.
	BeginLoad() func(error)
	// Current tells whether the served state is current, and if not why.
	Current() (bool, string)
}

// DefaultRecoveryKeyBits is the size of the ephemeral recovery key.
const DefaultRecoveryKeyBits = 4096

// Core is the Coordinator's state machine. It is safe for concurrent use.
type Core struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	events  *eventLog

	// mu serialises every change of state and every store commit.
	mu heldMutex
	// view is what readers see; it is replaced, never modified.
	view atomic.Pointer[view]
	// activations counts activations of marbles with MaxActivations; guarded by mu.
	activations map[string]uint64
	// updateSeq is the sequence number of the last update log entry; guarded by mu.
	updateSeq uint64
	// updateLog holds the update log entries, oldest first; guarded by mu.
	updateLog []string
	// counters are the marbles' monotonic counters by store key suffix;
	// guarded by mu.
	counters map[string]uint64
	// pending is the manifest update waiting for acknowledgements, nil if
	// none; guarded by mu.
	pending *pendingUpdate
	// hashSeed keys the hashes in stored; New makes it at random.
	hashSeed maphash.Seed
	// stored holds a hash of every value of the stored state that the
	// served state was read from or written as, by key (see
	// serveChanges); nil while there is none. Guarded by mu.
	stored map[string]uint64
	// unsealErr is why the stored state could not be opened (recovery).
	unsealErr error
	// recovery collects the owners' recovery secrets while in state 1;
	// guarded by mu.
	recovery *recoverySession

	// ephMu guards ephemeral, the key owners may encrypt recovery secrets
	// with. It is separate from mu because generating the key takes long.
	ephMu     sync.Mutex
	ephemeral *rsa.PrivateKey

	// sealMode is the seal mode in force (a seal.Mode), copied from the
	// store by noteSealMode whenever it may have changed.
	sealMode atomic.Value

	// needKey is set while in recovery because the store holds no key of
	// this platform (store.ErrNeedKey) that a peer could hand over.
	needKey atomic.Bool
	// rollback is the error of the last read of the stored state when it
	// was refused as older than state seen before (store.ErrRollback);
	// nil otherwise. While set, writes are refused.
	rollback atomic.Pointer[error]
}

// view is an immutable snapshot of the Coordinator's state.
type view struct {
	state State
	// quote is the cached evidence over the root certificate.
	quote []byte
	dep   *deployment
}

// deployment holds the CA and, once a manifest is set, everything derived
// from it. It is never modified after construction.
type deployment struct {
	root         pki.CA
	intermediate pki.CA
	marbleRoot   *x509.Certificate

	rootPEM, intermediatePEM, marbleRootPEM []byte
	// reservedCA is the CA part of the template data (.MarbleRun.*).
	reservedCA manifest.ReservedSecrets

	manifest    *manifest.Manifest
	manifestRaw []byte
	manifestSig []byte
	compiled    map[string]*manifest.Compiled
	// packageSVN holds the security versions raised by package updates,
	// which manifest already includes; manifestRaw stays the manifest the
	// owners set.
	packageSVN map[string]uint
	// users maps the DER encoding of each user's certificate to the name.
	users map[string]string
	// secrets are the shared and user-defined secret values.
	secrets            map[string]manifest.Secret
	rootSecret         []byte
	previousRootSecret []byte
	previousSecrets    map[string]manifest.Secret
}

// New boots a Core from its store: a fresh Coordinator waits for a
// manifest, one with stored state resumes, and one whose stored state
// cannot be unsealed enters recovery. Any other failure to read the store
// is returned, so the Coordinator never starts from scratch by mistake.
func New(cfg Config) (*Core, error) {
	if cfg.Issuer == nil {
		return nil, errors.New("no evidence issuer configured")
	}
	if cfg.Store == nil {
		return nil, errors.New("no store configured")
	}
	if !cfg.Simulation && cfg.Issuer.Insecure() {
		return nil, errors.New("the evidence issuer is insecure but simulation mode is off")
	}
	if !cfg.Simulation && cfg.Verifier == nil {
		return nil, errors.New("no evidence verifier configured and simulation mode is off")
	}
	switch {
	case cfg.Simulation:
		cfg.TEE = TEESimulation
	case cfg.TEE == TEESimulation:
		return nil, errors.New("the TEE is named simulation but simulation mode is off")
	case cfg.TEE == "":
		cfg.TEE = "unknown"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RecoveryKeyBits == 0 {
		cfg.RecoveryKeyBits = DefaultRecoveryKeyBits
	}
	if cfg.DefaultSealMode == "" {
		cfg.DefaultSealMode = seal.ModeProductKey
	}
	if _, err := cfg.DefaultSealMode.Code(); err != nil || !cfg.DefaultSealMode.Seals() {
		return nil, fmt.Errorf("default seal mode %q: want %s or %s", cfg.DefaultSealMode, seal.ModeProductKey, seal.ModeUniqueKey)
	}
	c := &Core{
		cfg:         cfg,
		log:         cfg.Logger,
		metrics:     cfg.Metrics,
		events:      newEventLog(1024),
		hashSeed:    maphash.MakeSeed(),
		activations: map[string]uint64{},
		counters:    map[string]uint64{},
	}
	c.mu.now = cfg.Now
	c.metrics.setSimulation(cfg.Simulation)
	c.metrics.setTEE(cfg.TEE)
	c.view.Store(&view{state: StateUninitialized})
	if err := c.boot(context.Background()); err != nil {
		return nil, err
	}
	c.noteSealMode()
	return c, nil
}

// boot serves the stored state, or creates and stores a new certificate
// authority when nothing is stored. Several Coordinators that share a
// store and start together create one: those that lose the race serve
// the winner's.
func (c *Core) boot(ctx context.Context) error {
	err := c.load(ctx, true)
	if !errors.Is(err, errNoStoredState) {
		return err
	}
	return c.writeAt(ctx, "storing a new certificate authority", func() error {
		if c.view.Load().state != StateUninitialized {
			// Another Coordinator stored its state first, which load
			// has taken over.
			return nil
		}
		return c.bootFresh(ctx)
	})
}

// adopt takes over the counters, log and pending update of restored state;
// the caller publishes its deployment. c.mu must be held or c unshared.
func (c *Core) adopt(st *storedState) {
	c.activations = st.activations
	c.counters = st.counters
	c.updateLog = st.updateLog
	c.updateSeq = st.updateSeq
	c.pending = st.pending
}

func (c *Core) bootFresh(ctx context.Context) error {
	dep, err := c.newCA()
	if err != nil {
		return err
	}
	if err := c.resetStore(ctx, encodeCA(dep), store.ResetOptions{Mode: c.cfg.DefaultSealMode}); err != nil {
		return fmt.Errorf("storing new certificate authority: %w", err)
	}
	c.noteSealMode()
	c.log.Info("created a new certificate authority; waiting for a manifest")
	return c.publish(StateAcceptingManifest, dep)
}

// newCA creates a root CA, intermediate and marble root.
func (c *Core) newCA() (*deployment, error) {
	dnsNames, ips := pki.SplitHosts(c.cfg.DNSNames)
	now := c.cfg.Now()
	root, err := pki.NewRoot(dnsNames, ips, now)
	if err != nil {
		return nil, err
	}
	dep := &deployment{root: root}
	if err := dep.rotateIntermediate(dnsNames, ips, now); err != nil {
		return nil, err
	}
	return dep, nil
}

func (d *deployment) rotateIntermediate(dnsNames []string, ips []net.IP, now time.Time) error {
	inter, marbleRoot, err := pki.NewIntermediate(d.root, dnsNames, ips, now)
	if err != nil {
		return err
	}
	d.intermediate = inter
	d.marbleRoot = marbleRoot
	d.fillDerived()
	return nil
}

// fillDerived computes what depends only on the CA certificates: their PEM
// forms and the CA part of every marble's template data.
func (d *deployment) fillDerived() {
	d.rootPEM = certPEM(d.root.Cert)
	d.intermediatePEM = certPEM(d.intermediate.Cert)
	d.marbleRootPEM = certPEM(d.marbleRoot)
	d.reservedCA = manifest.ReservedSecrets{
		RootCA:                  manifest.Secret{Cert: manifest.Certificate(*d.marbleRoot)},
		CoordinatorRoot:         manifest.Secret{Cert: manifest.Certificate(*d.root.Cert)},
		CoordinatorIntermediate: manifest.Secret{Cert: manifest.Certificate(*d.intermediate.Cert)},
	}
}

// marbleCA is the CA that issues marble and secret certificates.
func (d *deployment) marbleCA() manifest.CA {
	return manifest.CA{Cert: d.marbleRoot, Key: d.intermediate.Key}
}

// publish makes a new state and deployment visible, issuing fresh evidence
// when the root changed.
func (c *Core) publish(state State, dep *deployment) error {
	old := c.view.Load()
	if state != old.state && !old.state.canMoveTo(state) {
		return fmt.Errorf("state may not move from %s to %s", old.state, state)
	}
	quote := old.quote
	if old.dep == nil || !old.dep.root.Cert.Equal(dep.root.Cert) {
		q, err := c.cfg.Issuer.Issue(context.Background(), attestation.BindHash(dep.root.Cert.Raw))
		if err != nil {
			return fmt.Errorf("issuing evidence over the root certificate: %w", err)
		}
		quote = q
	}
	c.view.Store(&view{state: state, quote: quote, dep: dep})
	c.metrics.setState(state)
	return nil
}

// Status returns the state and its message. The message names the TEE
// and the seal mode in force, and in simulation mode says that nothing is
// attested.
func (c *Core) Status() (State, string) {
	v := c.view.Load()
	mode := " Seal mode: " + string(c.SealMode()) + "."
	if c.cfg.Simulation {
		return v.state, v.state.Message() + mode + " " + simulationNotice
	}
	return v.state, v.state.Message() + " TEE: " + c.cfg.TEE + "." + mode
}

// SealMode returns the seal mode in force: the one the stored state is
// sealed in (in recovery, the one it was sealed in).
// It is read from the core's copy, so that status never waits for a store
// write.
func (c *Core) SealMode() seal.Mode {
	if m, ok := c.sealMode.Load().(seal.Mode); ok {
		return m
	}
	return c.cfg.Store.SealMode()
}

// noteSealMode takes over the store's seal mode after a change: the
// status and the coordinator_seal_mode_info metric report it.
func (c *Core) noteSealMode() {
	m := c.cfg.Store.SealMode()
	c.sealMode.Store(m)
	c.metrics.setSealMode(m)
}

// sealModeOf returns the seal mode a manifest asks for: its
// Config.SealMode, or the default mode when it is empty or m is nil.
func (c *Core) sealModeOf(m *manifest.Manifest) seal.Mode {
	if m == nil {
		return c.cfg.DefaultSealMode
	}
	mode, ok := m.Config.CanonicalSealMode()
	if !ok || mode == manifest.SealModeDefault {
		return c.cfg.DefaultSealMode
	}
	return seal.Mode(mode)
}

// checkSealMode refuses a manifest whose seal mode is Disabled without
// recovery keys: every restart of such a Coordinator would enter recovery
// with no way out but a new manifest, losing every secret.
func (c *Core) checkSealMode(m *manifest.Manifest) error {
	mode := c.sealModeOf(m)
	if !c.cfg.Store.CanSeal(mode) {
		return newError(KindInvalidArgument, nil, "invalid manifest: Config.SealMode %s cannot be used on this machine: the Coordinator has no sealing key for it (under Gramine, keys/_sgx_mrsigner for ProductKey, keys/_sgx_mrenclave for UniqueKey); choose another seal mode", mode)
	}
	if mode == seal.ModeDisabled && len(m.RecoveryKeys) == 0 {
		return newError(KindInvalidArgument, nil, "invalid manifest: Config.SealMode Disabled keeps nothing sealed, so every restart of the Coordinator needs the recovery keys; the manifest has no RecoveryKeys, so a restart would lose the whole state: add RecoveryKeys or choose ProductKey or UniqueKey")
	}
	return nil
}

// enforceSealMode seals the stored data key in the mode m asks for when it
// is not the one in force (after a crash between storing a manifest update
// and re-sealing, or for a state of the older format). A failure is logged:
// the state stays sealed as it was, and status reports that mode. c.mu
// must be held or c unshared.
func (c *Core) enforceSealMode(ctx context.Context, m *manifest.Manifest) {
	want := c.sealModeOf(m)
	if err := c.cfg.Store.SetSealMode(ctx, want); err != nil {
		c.log.Error("the data key cannot be sealed in the manifest's seal mode; it stays sealed as before", "want", string(want), "inForce", string(c.cfg.Store.SealMode()), "error", err)
	}
	c.noteSealMode()
}

// TEESimulation is the TEE name of a Coordinator in simulation mode.
const TEESimulation = "simulation"

// TEE names the trusted execution environment the Coordinator runs in,
// TEESimulation in simulation mode.
func (c *Core) TEE() string { return c.cfg.TEE }

// simulationNotice is added to every status message in simulation mode.
const simulationNotice = "SIMULATION MODE: marbles are not attested and the Coordinator's quote is empty; do not use in production."

// Simulation reports whether the Coordinator runs in simulation mode.
func (c *Core) Simulation() bool { return c.cfg.Simulation }

// RootCertificate returns the root CA certificate and key, which are the
// client API's TLS identity.
func (c *Core) RootCertificate() (*x509.Certificate, *ecdsa.PrivateKey) {
	d := c.view.Load().dep
	return d.root.Cert, d.root.Key
}

// MarbleRoot returns the current marble root certificate.
func (c *Core) MarbleRoot() (*x509.Certificate, *ecdsa.PrivateKey) {
	d := c.view.Load().dep
	return d.marbleRoot, d.intermediate.Key
}

// Quote returns the PEM chain (intermediate, then root) and evidence over
// the root certificate. With a nonce the evidence is fresh and binds
// SHA-256(root DER ‖ nonce).
func (c *Core) Quote(ctx context.Context, nonce []byte) (chainPEM []byte, quote []byte, err error) {
	v := c.view.Load()
	if v.state == StateUninitialized {
		return nil, nil, newError(KindFailedPrecondition, nil, "the Coordinator is not initialized yet")
	}
	chain := append(append([]byte{}, v.dep.intermediatePEM...), v.dep.rootPEM...)
	if nonce == nil {
		return chain, v.quote, nil
	}
	q, err := c.cfg.Issuer.Issue(ctx, attestation.BindHash(v.dep.root.Cert.Raw, nonce))
	if err != nil {
		return nil, nil, fmt.Errorf("issuing evidence with nonce: %w", err)
	}
	return chain, q, nil
}

// ManifestInfo returns the raw manifest, the root key's ECDSA signature
// over its SHA-256 and its SHA-256 fingerprint. ok is false when no
// manifest is set.
func (c *Core) ManifestInfo() (raw, signature []byte, ok bool) {
	d := c.view.Load().dep
	if d == nil || d.manifest == nil {
		return nil, nil, false
	}
	return d.manifestRaw, d.manifestSig, true
}

// UpdateLog returns the update log entries, oldest first, as JSON lines.
func (c *Core) UpdateLog() ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.view.Load()
	if v.state != StateAcceptingMarbles {
		return nil, newError(KindFailedPrecondition, nil, "the Coordinator has no manifest yet (state: %s)", v.state)
	}
	return append([]string(nil), c.updateLog...), nil
}

// Events returns the most recent activations, oldest first.
func (c *Core) Events() []Event { return c.events.list() }

func certPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}
