package store

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// DefaultKubeStateName is the default name of the head object of a
// KubeStore, the name MarbleRun gives its state Secret.
const DefaultKubeStateName = "marblerun-state"

// Labels of every object a KubeStore writes, so that they can be listed
// and removed together.
const (
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	ManagedByValue   = "marblemesh"
	LabelState       = "marblemesh.io/state"
	LabelObject      = "marblemesh.io/object"
	LabelGeneration  = "marblemesh.io/generation"
	objectHead       = "head"
	objectChunk      = "chunk"
	objectDiscarded  = "discarded"
	headDataKey      = "head"
	chunkDataKey     = "chunk"
	maxKubeNameLen   = 63
	kubeReadParallel = 8
	// maxLoadAttempts bounds how often Load starts over when the head
	// moves while it reads the chunks.
	maxLoadAttempts = 4
	// defaultMaxDeltas is the number of deltas after which a commit is
	// followed by a compaction.
	defaultMaxDeltas = 64
)

// errHeadMoved: a chunk went missing because the head moved during a read.
var errHeadMoved = errors.New("the head moved while its chunks were read")

// KubeOptions configure a KubeStore.
type KubeOptions struct {
	// Client reaches the Kubernetes API. Required.
	Client kubernetes.Interface
	// WatchClient, when set, is used by Watch instead of Client: a
	// client without a request timeout, since a watch is a long request.
	WatchClient kubernetes.Interface
	// Namespace holds the state's objects. Required.
	Namespace string
	// Name is the head object's name, a DNS label; empty means
	// DefaultKubeStateName. Chunk objects are named after it.
	Name string
	// KEKMapName names the ConfigMap holding the key-encryption key
	// sealed for each platform; empty means DefaultKEKMapName.
	KEKMapName string
	// Sealers, DefaultMode and Logger are as in Options.
	Sealers     map[seal.Mode]seal.Sealer
	DefaultMode seal.Mode
	Logger      *slog.Logger
}

// KubeStore is the Store kept in Secrets of one namespace through the
// Kubernetes API (see the package documentation for the layout). Several
// KubeStores, in several processes, may share one state: every write is a
// compare-and-swap on the head's resourceVersion, and a write that lost a
// race fails with ErrConflict. All methods are safe for concurrent use.
type KubeStore struct {
	client      kubernetes.Interface
	watchClient kubernetes.Interface
	ns, name    string
	kekMap      string
	sealers     map[seal.Mode]seal.Sealer
	defaultMode seal.Mode
	log         *slog.Logger

	mu     sync.Mutex
	phase  phase
	broken error // a write of unknown outcome: Load first
	stale  bool  // a write lost a race: Load first
	// unsynced: a write stopped (at a hook) after adopting its head and
	// before the state was brought up to it, so the state is not the
	// head's and cannot be caught up from.
	unsynced bool

	// headKnown tells whether exists and rv are what the head was when
	// last read or written: whether there was one, and its resourceVersion.
	headKnown bool
	exists    bool
	rv        string
	headRaw   []byte   // the head's data as last read, for keeping it aside
	head      kubeHead // the head last read (if parsed) or written
	headOK    bool     // head was parsed
	// written holds the resourceVersions of the head's last writes by
	// this store (at most maxWrittenRVs), so that Watch does not take a
	// late event of its own write for another store's.
	written []string
	// maxGen is the highest authenticated generation seen or announced
	// (RaiseGenerationFloor): Load refuses anything older. seenGen is the
	// highest one read or written.
	maxGen  uint64
	seenGen uint64
	// gen is the generation of the head last read or written, readable
	// without mu (status must not wait for a write).
	gen atomic.Uint64

	key      []byte
	aead     cipher.AEAD
	state    map[string][]byte
	recovery []byte
	mode     seal.Mode
	// kek is the open state's key-encryption key (nil for a version 1
	// head until its next write).
	kek []byte
	// hintKey and hintKEK are the keys of the state last opened, kept
	// when a later Load fails: they open a head that another store wrote
	// with the same keys, without this platform's entry of the KEK map.
	hintKey, hintKEK []byte
	// rolledBack is set while the last load was refused with ErrRollback.
	rolledBack bool
	// entryKEK and entryMode are the key-encryption key and seal mode of
	// this platform's entry of the KEK map as a load last found or wrote
	// it: a load that opens the head with that key does not check the
	// map again.
	entryKEK  []byte
	entryMode seal.Mode

	pieceSize  int
	compactMin int64
	maxDeltas  int
	// inlineMax is the largest sealed delta kept in the head, and
	// inlineBudget bounds all of them (maxInlineSegment and
	// maxInlineBytes; tests lower them).
	inlineMax    int
	inlineBudget int
	// hook, when set, is called at the named points of every write; a
	// non-nil result stops the write there, as a crash would.
	hook func(point string) error

	// conflicts counts writes that lost a race; loads counts loads that
	// opened the state, by how ("incremental" or "full").
	conflicts prometheus.Counter
	loads     *prometheus.CounterVec
}

var (
	_ Store                = (*KubeStore)(nil)
	_ prometheus.Collector = (*KubeStore)(nil)
)

// Kinds of load counted by the metric coordinator_store_loads_total.
const (
	loadIncremental = "incremental"
	loadFull        = "full"
)

// Describe implements prometheus.Collector: the store's counters of lost
// races and of loads.
func (s *KubeStore) Describe(ch chan<- *prometheus.Desc) {
	s.conflicts.Describe(ch)
	s.loads.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *KubeStore) Collect(ch chan<- prometheus.Metric) {
	s.conflicts.Collect(ch)
	s.loads.Collect(ch)
}

// OpenKube returns a store for the state in opts.Namespace. It reads
// nothing yet: call Load.
func OpenKube(opts KubeOptions) (*KubeStore, error) {
	if opts.Client == nil || opts.Namespace == "" {
		return nil, errors.New("store: open: a Kubernetes client and a namespace are required")
	}
	name := opts.Name
	if name == "" {
		name = DefaultKubeStateName
	}
	if err := CheckKubeStateName(name); err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	kekMap := opts.KEKMapName
	if kekMap == "" {
		kekMap = DefaultKEKMapName
	}
	if err := CheckKEKMapName(kekMap); err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mode := opts.DefaultMode
	if mode == "" {
		mode = seal.ModeProductKey
	}
	if _, err := mode.Code(); err != nil || !mode.Seals() || opts.Sealers[mode] == nil {
		return nil, fmt.Errorf("store: open: no sealer for the default seal mode %q", mode)
	}
	sealers := make(map[seal.Mode]seal.Sealer, len(opts.Sealers))
	for m, sl := range opts.Sealers {
		if _, err := m.Code(); err != nil || !m.Seals() || sl == nil {
			return nil, fmt.Errorf("store: open: a sealer for seal mode %q", m)
		}
		sealers[m] = sl
		if sl.Insecure() {
			logger.Warn("store: the sealer offers no protection (simulation); stored state is not confidential", "namespace", opts.Namespace)
		}
	}
	loads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coordinator_store_loads_total",
		Help: "Loads of the shared state that opened it, by kind: incremental (only the deltas added since the state held) or full (every object).",
	}, []string{"kind"})
	loads.WithLabelValues(loadIncremental)
	loads.WithLabelValues(loadFull)
	return &KubeStore{
		client: opts.Client, watchClient: opts.WatchClient, ns: opts.Namespace, name: name, kekMap: kekMap,
		sealers: sealers, defaultMode: mode, log: logger, mode: mode,
		pieceSize: defaultPieceSize, compactMin: defaultCompactMin, maxDeltas: defaultMaxDeltas,
		inlineMax: maxInlineSegment, inlineBudget: maxInlineBytes,
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_store_conflicts_total",
			Help: "Writes to the shared state refused because another Coordinator wrote first (lost races).",
		}),
		loads: loads,
	}, nil
}

// CheckKubeStateName tells whether name can name a KubeStore's head: a DNS
// label short enough to leave room for the chunks' suffixes.
func CheckKubeStateName(name string) error {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 || len(name) > maxKubeNameLen-20 {
		return fmt.Errorf("state name %q: must be a DNS label of at most %d characters", name, maxKubeNameLen-20)
	}
	return nil
}

func (s *KubeStore) at(point string) error {
	if s.hook != nil {
		return s.hook(point)
	}
	return nil
}

func (s *KubeStore) secrets() typedcorev1.SecretInterface {
	return s.client.CoreV1().Secrets(s.ns)
}

func (s *KubeStore) labels(object string, gen uint64) map[string]string {
	l := map[string]string{LabelManagedBy: ManagedByValue, LabelState: s.name, LabelObject: object}
	if gen != 0 {
		l[LabelGeneration] = strconv.FormatUint(gen, 10)
	}
	return l
}

// Load reads the head, opens its data key, reads and checks every chunk
// and returns a copy of the state. It starts over when the head moves
// while it reads. It never writes the state; when it opened the data key
// without this platform's entry of the KEK map (with the keys of the
// state it had open), it adds that entry.
func (s *KubeStore) Load(ctx context.Context) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseClosed {
		return nil, fmt.Errorf("store: load: %w", ErrClosed)
	}
	return s.load(ctx, readKeys{hintKey: s.hintKey, hintKEK: s.hintKEK}, "load")
}

// LoadWithKEK opens the state with a key-encryption key handed over by a
// Coordinator that has it open: the key of another platform's entry. It
// first raises the generation floor to minGeneration, so a head older than
// what that Coordinator has seen is refused with ErrRollback. A key that
// does not open the head fails with an error wrapping ErrUnseal. On
// success the key is sealed for this platform into the KEK map (unless the
// seal mode is Disabled), so that later Loads need no peer.
func (s *KubeStore) LoadWithKEK(ctx context.Context, kek []byte, minGeneration uint64) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseClosed {
		return nil, fmt.Errorf("store: load with a key-encryption key: %w", ErrClosed)
	}
	if len(kek) != dataKeySize {
		return nil, fmt.Errorf("store: load with a key-encryption key: %w: the key is %d bytes, want %d", ErrUnseal, len(kek), dataKeySize)
	}
	s.maxGen = max(s.maxGen, minGeneration)
	return s.load(ctx, readKeys{kek: cloneValue(kek)}, "load with a key-encryption key")
}

// KeyEncryptionKey returns a copy of the open state's key-encryption key
// and the highest generation this store has read or written; ok is false when no state is open (or it is a version 1 head not
// yet written again). After the last load was refused as rolled back
// (ErrRollback), it returns the key of the state last opened, which also
// opens the rolled-back head, with the newer generation: a peer told them
// refuses the rolled-back state as well.
func (s *KubeStore) KeyEncryptionKey() (kek []byte, generation uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.phase == phaseOpen && s.kek != nil:
		return cloneValue(s.kek), s.seenGen, true
	case s.rolledBack && s.hintKEK != nil:
		return cloneValue(s.hintKEK), s.seenGen, true
	}
	return nil, 0, false
}

// RaiseGenerationFloor makes later loads refuse, with ErrRollback, a head
// whose generation is below gen. The floor never goes down.
func (s *KubeStore) RaiseGenerationFloor(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxGen = max(s.maxGen, gen)
}

// load is Load with keys. s.mu must be held.
func (s *KubeStore) load(ctx context.Context, keys readKeys, what string) (map[string][]byte, error) {
	held := s.held()
	s.forget()
	var d kubeRead
	var err error
	for range maxLoadAttempts {
		d, err = s.read(ctx, keys, held)
		if !errors.Is(err, errHeadMoved) {
			break
		}
	}
	s.headKnown, s.exists, s.rv, s.headRaw = d.headKnown, d.exists, d.rv, d.raw
	if d.headOK {
		s.head, s.headOK, s.recovery, s.mode = d.head, true, d.recovery, d.head.mode
	}
	switch {
	case err == nil:
		s.adopt(d)
		kind := loadFull
		if d.incremental {
			kind = loadIncremental
		}
		s.loads.WithLabelValues(kind).Inc()
		switch {
		case !d.head.hasKEK() || !d.head.mode.Seals():
		case d.viaEntry:
			s.entryKEK, s.entryMode = d.kek, d.head.mode
		case d.head.mode == s.entryMode && bytes.Equal(d.kek, s.entryKEK):
			// This store found or wrote that entry already.
		default:
			if _, perr := s.putKEKEntry(ctx, d.kek, d.head.mode, &d.head.kekCheck); perr != nil {
				s.log.Warn("store: could not seal the key-encryption key for this platform; a later load tries again", "map", s.kekMap, "err", perr)
			} else {
				s.entryKEK, s.entryMode = d.kek, d.head.mode
			}
		}
		return cloneState(s.state), nil
	case errors.Is(err, ErrNoState):
		s.phase = phaseEmpty
	case errors.Is(err, ErrUnseal):
		s.phase = phaseSealed
	default:
		s.phase = phaseUnloaded
		s.rolledBack = errors.Is(err, ErrRollback)
	}
	return nil, fmt.Errorf("store: %s %s/%s: %w", what, s.ns, s.name, err)
}

// held returns the open state, if any, for a load to catch up from.
func (s *KubeStore) held() *heldState {
	if s.phase != phaseOpen || s.unsynced || !s.headOK || s.aead == nil || s.state == nil {
		return nil
	}
	return &heldState{head: s.head, state: s.state, recovery: s.recovery}
}

// forget drops the open state, keeping the highest generation seen and
// the keys of the state last opened.
func (s *KubeStore) forget() {
	s.phase, s.broken, s.stale, s.rolledBack, s.unsynced = phaseUnloaded, nil, false, false, false
	s.headKnown, s.exists, s.rv, s.headRaw, s.head, s.headOK = false, false, "", nil, kubeHead{}, false
	s.key, s.aead, s.state, s.recovery, s.mode, s.kek = nil, nil, nil, nil, s.defaultMode, nil
}

func (s *KubeStore) adopt(d kubeRead) {
	s.phase = phaseOpen
	s.key, s.aead, s.state, s.kek = d.key, d.aead, d.state, d.kek
	s.hintKey, s.hintKEK = d.key, d.kek
	s.maxGen = max(s.maxGen, d.head.generation)
	s.seenGen = max(s.seenGen, d.head.generation)
	s.gen.Store(d.head.generation)
}

// readKeys are the keys read opens the head with. With dataKey (Unlock)
// or kek (LoadWithKEK) set, the head must open with that key. Otherwise
// the hints are tried first, then this platform's entry of the KEK map.
type readKeys struct {
	dataKey, kek     []byte
	hintKey, hintKEK []byte
}

// kubeRead is what read found.
type kubeRead struct {
	headKnown bool
	exists    bool
	rv        string
	raw       []byte
	headOK    bool
	head      kubeHead
	recovery  []byte
	key       []byte
	aead      cipher.AEAD
	kek       []byte
	// viaEntry: the key came from this platform's entry of the KEK map.
	viaEntry bool
	state    map[string][]byte
	// incremental: state is the held state with the head's new deltas
	// applied, not read in full.
	incremental bool
}

// heldState is the open state a load may catch up from: the head it was
// read or written as, the state, and the recovery data.
type heldState struct {
	head     kubeHead
	state    map[string][]byte
	recovery []byte
}

// extends tells whether h lists the same base and recovery data as the
// held head, and its deltas continued: the held head's segments, chunk
// for chunk (names, sizes and digests) or byte for byte where kept in
// the head (see segment.sameAs), are a prefix of h's, and h is under the
// same data key. The held state is then h's state without its
// further deltas.
func (held *heldState) extends(h kubeHead) bool {
	if held == nil {
		return false
	}
	hh := held.head
	if h.keyCheck != hh.keyCheck || h.generation < hh.generation ||
		len(h.segments) < len(hh.segments) || len(hh.segments) == 0 ||
		h.recoverySize != hh.recoverySize || !slices.Equal(h.recovery, hh.recovery) {
		return false
	}
	for i, g := range hh.segments {
		if !g.sameAs(h.segments[i]) {
			return false
		}
	}
	return true
}

// read reads the head and its chunks without writing, opening the data
// key with keys.
//
// When held extends to the head (see heldState.extends), only the chunks
// of the head's further deltas are read, and applied to the held state:
// the head is opened, authenticated and checked against the rollback
// floor as in a full read, and the held state was read or written under
// the same data key and head chain. Otherwise every chunk is read. On
// success the held state's map is taken over (updated in place).
func (s *KubeStore) read(ctx context.Context, keys readKeys, held *heldState) (kubeRead, error) {
	var d kubeRead
	sec, err := s.secrets().Get(ctx, s.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		d.headKnown = true
		return d, ErrNoState
	}
	if err != nil {
		return d, fmt.Errorf("read head: %w", err)
	}
	d.headKnown, d.exists, d.rv = true, true, sec.ResourceVersion
	raw := sec.Data[headDataKey]
	if len(raw) > maxHeadSize {
		return d, corrupt("head of %d bytes exceeds the limit %d", len(raw), maxHeadSize)
	}
	d.raw = raw
	h, body, tag, err := parseHead(raw)
	if errors.Is(err, ErrNewerFormat) {
		return d, fmt.Errorf("store: %s/%s: %w", s.ns, s.name, err)
	}
	if err != nil {
		return d, corrupt("%v", err)
	}
	d.headOK, d.head = true, h
	catchUp := held != nil && held.extends(h)
	var pieces map[string][]byte
	if catchUp {
		d.recovery = cloneValue(held.recovery)
	} else {
		if pieces, err = s.fetch(ctx, d.rv, h.recovery); err != nil {
			return d, err
		}
		d.recovery = join(h.recovery, pieces)
	}

	switch {
	case keys.dataKey != nil:
		if keyCheckOf(keys.dataKey) != h.keyCheck {
			return d, ErrWrongDataKey
		}
		d.key = cloneValue(keys.dataKey)
	case keys.kek != nil:
		if !h.hasKEK() {
			return d, fmt.Errorf("%w: the head is format version %d, which has no key-encryption key", ErrUnseal, h.version)
		}
		if d.key, err = unwrapDataKey(s.name, h, keys.kek); err != nil {
			return d, err
		}
		d.kek = cloneValue(keys.kek)
	case !h.hasKEK():
		if d.key, err = s.unsealKey(h); err != nil {
			return d, err
		}
	default:
		if d.key, d.kek, d.viaEntry, err = s.openHead(ctx, h, keys); err != nil {
			return d, err
		}
	}
	if d.aead, err = newAEAD(d.key); err != nil {
		return d, err
	}
	if err := verifyHead(d.aead, s.name, body, tag); err != nil {
		return d, corrupt("%v", err)
	}
	if h.generation < s.maxGen {
		return d, fmt.Errorf("%w: the head is generation %d, this store has seen or been told of generation %d", ErrRollback, h.generation, s.maxGen)
	}
	segs := h.segments
	if catchUp {
		segs = h.segments[len(held.head.segments):]
	}
	var refs []chunkRef
	for _, g := range segs {
		refs = append(refs, g.pieces...)
	}
	if pieces, err = s.fetch(ctx, d.rv, refs); err != nil {
		return d, err
	}
	opened, err := openSegments(d.aead, s.name, h.keyCheck, segs, pieces)
	if err != nil {
		return d, err
	}
	// Every segment opened: only now is the held state changed.
	if catchUp {
		d.state, d.incremental = held.state, true
	} else {
		d.state, opened = opened[0], opened[1:]
	}
	for _, m := range opened {
		applyChanges(d.state, m)
	}
	return d, nil
}

// openSegments decrypts segs, each from its inline bytes or its pieces
// (fetched and checked, by chunkRef.id). Every failure is corruption.
func openSegments(aead cipher.AEAD, name string, keyCheck [keyCheckSize]byte, segs []segment, pieces map[string][]byte) ([]map[string][]byte, error) {
	opened := make([]map[string][]byte, len(segs))
	for i, g := range segs {
		sealed := g.inline
		if g.place() != placeInline {
			sealed = join(g.pieces, pieces)
		}
		var err error
		if opened[i], err = openSegment(aead, name, keyCheck, g, sealed); err != nil {
			return nil, corrupt("%v", err)
		}
	}
	return opened, nil
}

func join(refs []chunkRef, pieces map[string][]byte) []byte {
	var n int
	for _, r := range refs {
		n += int(r.size)
	}
	b := make([]byte, 0, n)
	for _, r := range refs {
		b = append(b, pieces[r.id()]...)
	}
	return b
}

// fetch reads the chunk objects of refs, each once and in parallel,
// checking every piece against its reference before it is kept (by
// chunkRef.id). A missing chunk is errHeadMoved if the head is no longer
// rv, corruption otherwise.
func (s *KubeStore) fetch(ctx context.Context, rv string, refs []chunkRef) (map[string][]byte, error) {
	out := make(map[string][]byte, len(refs))
	byObject := map[string][]chunkRef{}
	var names []string
	for _, r := range refs {
		if _, ok := byObject[r.name]; !ok {
			names = append(names, r.name)
		}
		byObject[r.name] = append(byObject[r.name], r)
	}
	var mu sync.Mutex
	var missing bool
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(kubeReadParallel)
	for _, name := range names {
		g.Go(func() error {
			sec, err := s.secrets().Get(gctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				mu.Lock()
				missing = true
				mu.Unlock()
				return fmt.Errorf("chunk %s is missing", name)
			}
			if err != nil {
				return fmt.Errorf("read chunk %s: %w", name, err)
			}
			for _, r := range byObject[name] {
				data := sec.Data[r.dataKey()]
				if err := checkPiece(r, data); err != nil {
					return corrupt("%v", err)
				}
				mu.Lock()
				out[r.id()] = data
				mu.Unlock()
			}
			return nil
		})
	}
	err := g.Wait()
	if err != nil && missing {
		sec, herr := s.secrets().Get(ctx, s.name, metav1.GetOptions{})
		switch {
		case herr == nil && sec.ResourceVersion != rv, apierrors.IsNotFound(herr):
			return nil, errHeadMoved
		case herr != nil:
			return nil, fmt.Errorf("read head: %w", herr)
		}
		return nil, corrupt("%v", err)
	}
	return out, err
}

// openHead opens the keys of a version 2 head: with the hints when they
// are the head's, otherwise from this platform's entry of the KEK map
// (viaEntry). Failures wrap ErrUnseal; ErrNeedKey when no key is at hand.
func (s *KubeStore) openHead(ctx context.Context, h kubeHead, keys readKeys) (key, kek []byte, viaEntry bool, err error) {
	switch {
	case keys.hintKEK != nil && kekCheckOf(keys.hintKEK) == h.kekCheck:
		kek = cloneValue(keys.hintKEK)
	case keys.hintKey != nil && keyCheckOf(keys.hintKey) == h.keyCheck:
		if kek, err = unwrapKEK(s.name, h, keys.hintKey); err != nil {
			return nil, nil, false, err
		}
	default:
		if kek, err = s.sealedKEK(ctx, h); err != nil {
			return nil, nil, false, err
		}
		viaEntry = true
	}
	if key, err = unwrapDataKey(s.name, h, kek); err != nil {
		return nil, nil, false, err
	}
	return key, kek, viaEntry, nil
}

// unsealKey unseals the data key of a version 1 head with the sealer of
// its seal mode. Every failure wraps ErrUnseal.
func (s *KubeStore) unsealKey(h kubeHead) ([]byte, error) {
	if !h.mode.Seals() {
		return nil, fmt.Errorf("%w: the state's seal mode is %s, so its data key is not kept across restarts: recover it with the owners' recovery keys", ErrUnseal, h.mode)
	}
	sealer := s.sealers[h.mode]
	if sealer == nil {
		return nil, fmt.Errorf("%w: the state is sealed in seal mode %s, for which this Coordinator has no sealer", ErrUnseal, h.mode)
	}
	code, _ := h.mode.Code()
	last := fmt.Errorf("%w: the head holds no data key of this state sealed in seal mode %s", ErrUnseal, h.mode)
	for _, e := range h.entries {
		if e.mode != h.mode || e.keyCheck != h.keyCheck {
			continue
		}
		key, err := sealer.Unseal(e.sealed, sealedKeyAAD(code, h.keyCheck))
		if err != nil {
			last = fmt.Errorf("%w: unseal data key (seal mode %s): %w", ErrUnseal, h.mode, err)
			continue
		}
		if len(key) != dataKeySize || keyCheckOf(key) != h.keyCheck {
			last = fmt.Errorf("%w: an unsealed data key does not match the head's key check", ErrUnseal)
			continue
		}
		return key, nil
	}
	return nil, last
}

// Commit writes changes as a delta, kept in the head when it is small
// (one request: the head update), otherwise in chunk objects that the
// head then lists.
// It fails with ErrConflict, storing nothing, when the head moved since
// this store last read or wrote it.
func (s *KubeStore) Commit(ctx context.Context, changes map[string][]byte) error {
	changes = cloneChanges(changes)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.commit(ctx, changes); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

func (s *KubeStore) ready() error {
	if err := s.phase.refuseCommit(); err != nil {
		return err
	}
	if s.broken != nil {
		return s.broken
	}
	if s.stale {
		return fmt.Errorf("%w: an earlier write lost a race: Load again", ErrConflict)
	}
	return nil
}

func (s *KubeStore) commit(ctx context.Context, changes map[string][]byte) error {
	if err := s.ready(); err != nil {
		return err
	}
	if len(changes) == 0 {
		return nil
	}
	if s.phase == phaseEmpty {
		key, err := newDataKey()
		if err != nil {
			return err
		}
		state := make(map[string][]byte, len(changes))
		applyChanges(state, changes)
		if err := s.writeState(ctx, key, s.defaultMode, nil, state, false, true); err != nil {
			return err
		}
		s.phase = phaseOpen
		return nil
	}
	gen := s.nextGen()
	sealed, err := sealSegment(s.aead, s.name, s.head.keyCheck, segDelta, gen, encodeEntries(changes))
	if err != nil {
		return err
	}
	// A small delta is kept in the head, so that the commit is the head
	// update alone; once the head's inline bytes would exceed the budget,
	// those already there are first moved to one chunk object (a spill).
	delta := segment{kind: segDelta, id: gen}
	var pieces [][]byte
	spill := 0
	if len(sealed) <= min(s.inlineMax, s.inlineBudget) {
		delta.inline = sealed
		if s.head.inlineBytes()+len(sealed) > s.inlineBudget {
			spill = s.head.inlineSegments()
		}
	} else {
		pieces = cut(sealed, s.pieceSize)
	}
	if len(s.head.segments)+1 > maxHeadSegments || s.head.chunkCount()+len(pieces)+spill > maxHeadChunks {
		// No room for another delta: write the new state as a base.
		state := withChanges(s.state, changes)
		return s.writeState(ctx, s.key, s.mode, s.recovery, state, true, false)
	}
	ks, err := s.prepareKEK(ctx, s.key, s.mode, false)
	if err != nil {
		return err
	}
	segs := slices.Clone(s.head.segments)
	var created []chunkRef
	switch {
	case spill > 0:
		if created, err = s.spillInline(ctx, gen, segs); err != nil {
			return err
		}
	case pieces != nil:
		if delta.pieces, err = s.putChunks(ctx, gen, pieces); err != nil {
			return err
		}
		created = delta.pieces
	}
	h := s.head
	h.generation = gen
	h.segments = append(segs, delta)
	ks.apply(&h)
	if err := s.swapHead(ctx, h, s.aead, created, true); err != nil {
		s.abandonKEK(ctx, ks, err)
		return err
	}
	s.finishKEK(ctx, ks)
	applyChanges(s.state, changes)
	s.maybeCompact(ctx)
	return nil
}

// withChanges returns a shallow copy of state with changes applied.
func withChanges(state, changes map[string][]byte) map[string][]byte {
	out := maps.Clone(state)
	applyChanges(out, changes)
	return out
}

// nextGen is the generation of the next head: above every one seen.
func (s *KubeStore) nextGen() uint64 {
	return max(s.head.generation, s.maxGen) + 1
}

// putChunks creates one chunk object per piece, labelled with gen, the
// generation of the head that is to list them. On failure it deletes what
// it created.
func (s *KubeStore) putChunks(ctx context.Context, gen uint64, pieces [][]byte) ([]chunkRef, error) {
	refs := make([]chunkRef, 0, len(pieces))
	for i, p := range pieces {
		sum := sha256.Sum256(p)
		r := chunkRef{name: fmt.Sprintf("%s-%d-%x-%d", s.name, gen, sum[:6], i), size: uint32(len(p)), sum: sum} //nolint:gosec // G115: pieces are at most pieceSize
		immutable := true
		_, err := s.secrets().Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: r.name, Labels: s.labels(objectChunk, gen)},
			Immutable:  &immutable,
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{chunkDataKey: p},
		}, metav1.CreateOptions{})
		if err != nil {
			s.deleteChunks(ctx, refs)
			return nil, fmt.Errorf("create chunk %s: %w", r.name, unavailable(err))
		}
		refs = append(refs, r)
		if err := s.at("chunk-created"); err != nil {
			return nil, err
		}
	}
	return refs, nil
}

// spillInline moves the segments that segs keeps in the head into one
// chunk object, labelled with gen, each under the data key segmentKey of
// its id, and changes segs to refer to them there (placePacked). The
// sealed bytes stay as they were, so a store holding a head that kept
// them inline still recognises its segments (segment.sameAs). It returns
// the object created.
func (s *KubeStore) spillInline(ctx context.Context, gen uint64, segs []segment) ([]chunkRef, error) {
	data := map[string][]byte{}
	for _, g := range segs {
		if g.place() == placeInline {
			data[segmentKey(g.id)] = g.inline
		}
	}
	// The segments' bytes are the same in every spill of this head, by
	// this store after a write of unknown outcome or by another racing
	// it: a random part keeps the object each write's own, so that a
	// write that lost the race deletes only what it created.
	var tag [6]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return nil, fmt.Errorf("name a chunk: %w", err)
	}
	name := fmt.Sprintf("%s-%d-%x-p", s.name, gen, tag)
	immutable := true
	_, err := s.secrets().Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: s.labels(objectChunk, gen)},
		Immutable:  &immutable,
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create chunk %s: %w", name, unavailable(err))
	}
	for i, g := range segs {
		if g.place() == placeInline {
			r := chunkRef{name: name, key: segmentKey(g.id), size: uint32(len(g.inline)), sum: sha256.Sum256(g.inline)} //nolint:gosec // G115: at most maxInlineSegment
			segs[i] = segment{kind: g.kind, id: g.id, pieces: []chunkRef{r}}
		}
	}
	created := []chunkRef{{name: name}}
	s.log.Debug("store: moved the deltas kept in the head to a chunk", "chunk", name, "segments", len(data))
	if err := s.at("spill-created"); err != nil {
		return nil, err
	}
	return created, nil
}

// deleteChunks deletes chunk objects, logging failures: a leftover is
// harmless and removed by a later sweep.
func (s *KubeStore) deleteChunks(ctx context.Context, refs []chunkRef) {
	for _, r := range refs {
		err := s.secrets().Delete(ctx, r.name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			s.log.Warn("store: could not delete a chunk no longer needed; a later sweep retries", "chunk", r.name, "err", err)
		}
	}
}

// swapHead writes h as the new head if the head is still the one this
// store last read or wrote (or, if there was none, still absent). created
// lists the chunks written for h, deleted again if the swap is refused.
// With dropOld, chunks of the previous head that h no longer lists are
// deleted after the swap. On success the store adopts h.
func (s *KubeStore) swapHead(ctx context.Context, h kubeHead, aead cipher.AEAD, created []chunkRef, dropOld bool) error {
	if !s.headKnown {
		return errors.New("the head was not read")
	}
	data, err := encodeHead(h, aead, s.name)
	if err != nil {
		s.deleteChunks(ctx, created)
		return err
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: s.name, Labels: s.labels(objectHead, 0), ResourceVersion: s.rv},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{headDataKey: data},
	}
	var out *corev1.Secret
	if !s.exists {
		out, err = s.secrets().Create(ctx, sec, metav1.CreateOptions{})
	} else {
		out, err = s.secrets().Update(ctx, sec, metav1.UpdateOptions{})
	}
	switch {
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || (s.exists && apierrors.IsNotFound(err)):
		s.deleteChunks(ctx, created)
		s.stale = true
		s.conflicts.Inc()
		return fmt.Errorf("%w: %s/%s moved since generation %d was read", ErrConflict, s.ns, s.name, s.head.generation)
	case err != nil:
		// The write may or may not have happened: keep its chunks and
		// refuse further writes until Load tells.
		s.broken = fmt.Errorf("%w: write head: %w", ErrBroken, err)
		return s.broken
	}
	old := s.head
	oldOK := s.headOK
	s.exists, s.rv, s.head, s.headOK, s.headRaw = true, out.ResourceVersion, h, true, data
	s.maxGen = max(s.maxGen, h.generation)
	s.seenGen = max(s.seenGen, h.generation)
	s.gen.Store(h.generation)
	s.wrote(out.ResourceVersion)
	if err := s.at("head-written"); err != nil {
		// Stopped before the caller brought the state up to h.
		s.unsynced = true
		return err
	}
	// The caller brings the state up to h without further failure.
	s.unsynced = false
	if dropOld && oldOK {
		keep := h.chunks()
		var gone []chunkRef
		for name := range old.chunks() {
			if !keep[name] {
				gone = append(gone, chunkRef{name: name})
			}
		}
		s.deleteChunks(ctx, gone)
	}
	return nil
}

// writeState writes state as a new base under key, in seal mode mode,
// with recovery data, and swaps the head to it. dropOld deletes the
// previous head's chunks afterwards; without it they are kept (state that
// was not opened is kept aside). rotate puts the key under a new
// key-encryption key (see prepareKEK). On success the store adopts the
// new state.
func (s *KubeStore) writeState(ctx context.Context, key []byte, mode seal.Mode, recovery []byte, state map[string][]byte, dropOld, rotate bool) error {
	aead, err := newAEAD(key)
	if err != nil {
		return err
	}
	kc := keyCheckOf(key)
	ks, err := s.prepareKEK(ctx, key, mode, rotate)
	if err != nil {
		return err
	}
	gen := s.nextGen()
	sealed, err := sealSegment(aead, s.name, kc, segBase, gen, encodeEntries(state))
	if err != nil {
		return err
	}
	pieces := cut(sealed, s.pieceSize)
	h := kubeHead{keyCheck: kc, generation: gen, mode: mode, recoverySize: uint32(len(recovery))} //nolint:gosec // G115: at most maxRecoveryDataSize
	ks.apply(&h)
	var created []chunkRef
	if len(recovery) > 0 && bytes.Equal(recovery, s.recovery) && s.headOK && s.phase == phaseOpen {
		h.recovery = s.head.recovery
	} else if len(recovery) > 0 {
		if h.recovery, err = s.putChunks(ctx, gen, cut(recovery, s.pieceSize)); err != nil {
			return err
		}
		created = append(created, h.recovery...)
	}
	refs, err := s.putChunks(ctx, gen, pieces)
	if err != nil {
		s.deleteChunks(ctx, created)
		return err
	}
	created = append(created, refs...)
	h.segments = []segment{{kind: segBase, id: gen, pieces: refs}}
	if err := s.swapHead(ctx, h, aead, created, dropOld); err != nil {
		s.abandonKEK(ctx, ks, err)
		return err
	}
	s.key, s.aead, s.state, s.recovery, s.mode = key, aead, state, recovery, mode
	s.finishKEK(ctx, ks)
	return nil
}

// kekSet is the key-encryption key of a head about to be written and
// the head's fields that hold it.
type kekSet struct {
	kek        []byte
	mode       seal.Mode
	rotated    bool
	added      bool
	kekCheck   [keyCheckSize]byte
	wrappedKey []byte
	wrappedKEK []byte
	// entryMode is the seal mode of this platform's entry of the KEK map
	// that prepareKEK wrote or found for kek; empty if it did not.
	entryMode seal.Mode
	// replaced names the key-encryption key of the head the write
	// replaces, when replacedKnown (a version 2 head was read).
	replaced      [keyCheckSize]byte
	replacedKnown bool
}

func (ks kekSet) apply(h *kubeHead) {
	h.version, h.entries = headVersion, nil
	h.kekCheck, h.wrappedKey, h.wrappedKEK = ks.kekCheck, ks.wrappedKey, ks.wrappedKEK
}

// prepareKEK returns the key-encryption key of a head about to be written
// with dataKey in mode: the open state's, or a new random one when rotate
// is set, when there is none (nothing open, or a version 1 head), or when
// mode is not the open state's (so that no platform keeps the key sealed
// in a mode the state has left). Before the head is written, the key is
// sealed for this platform into the KEK map (unless mode is Disabled), as
// an entry of its own beside every other: a crash between the two leaves
// the head in force with the entries that open it, and an entry for a key
// no head uses (see the package documentation).
func (s *KubeStore) prepareKEK(ctx context.Context, dataKey []byte, mode seal.Mode, rotate bool) (kekSet, error) {
	rotate = rotate || s.kek == nil || !s.head.hasKEK() || mode != s.mode
	if !rotate && bytes.Equal(dataKey, s.key) {
		h := s.head
		return kekSet{kek: s.kek, mode: mode, kekCheck: h.kekCheck, wrappedKey: h.wrappedKey, wrappedKEK: h.wrappedKEK}, nil
	}
	ks := kekSet{kek: s.kek, mode: mode, rotated: rotate}
	if s.exists && s.headOK && s.head.hasKEK() {
		ks.replaced, ks.replacedKnown = s.head.kekCheck, true
	}
	if rotate {
		var err error
		if ks.kek, err = newDataKey(); err != nil {
			return ks, fmt.Errorf("key-encryption key: %w", err)
		}
	}
	ks.kekCheck = kekCheckOf(ks.kek)
	var err error
	if ks.wrappedKey, ks.wrappedKEK, err = wrapKeys(s.name, dataKey, ks.kek); err != nil {
		return ks, fmt.Errorf("wrap the data key: %w", err)
	}
	var inForce *[keyCheckSize]byte
	if ks.replacedKnown {
		inForce = &ks.replaced
	}
	if ks.added, err = s.putKEKEntry(ctx, ks.kek, mode, inForce); err != nil {
		return ks, err
	}
	if mode.Seals() {
		ks.entryMode = mode
	}
	if err := s.at("kek-entry-written"); err != nil {
		return ks, err
	}
	return ks, nil
}

// abandonKEK removes this platform's entry of a new key-encryption key
// whose head write was refused because it lost a race (ErrConflict): no
// head uses the key, and it is never used again. The entry of a key the
// state already had stays, and so does any entry after another failure:
// the head may have been written.
func (s *KubeStore) abandonKEK(ctx context.Context, ks kekSet, err error) {
	if errors.Is(err, ErrConflict) && ks.rotated && ks.added {
		s.dropOwnKEKEntry(ctx, ks.kekCheck, ks.mode)
	}
}

// finishKEK adopts the key-encryption key of a head just written; after a
// new one it removes from the KEK map the entries of the key it replaced
// and entries that cannot be read. A failure there is logged: those
// entries open no head and only take room.
func (s *KubeStore) finishKEK(ctx context.Context, ks kekSet) {
	s.kek, s.hintKey, s.hintKEK = ks.kek, s.key, ks.kek
	if ks.entryMode != "" {
		s.entryKEK, s.entryMode = ks.kek, ks.entryMode
	}
	if !ks.rotated {
		return
	}
	if err := s.at("kek-cleanup"); err != nil {
		s.log.Warn("store: cleanup of the key-encryption key map stopped", "map", s.kekMap, "err", err)
		return
	}
	if err := s.dropReplacedKEK(ctx, ks.replaced, ks.replacedKnown && ks.replaced != ks.kekCheck); err != nil {
		s.log.Warn("store: could not remove the entries of the replaced key-encryption key", "map", s.kekMap, "err", err)
	}
}

// maybeCompact writes the state as a new base once the deltas are larger
// than both compactMin and the base, or too many. A failure is logged:
// the commit before it is stored either way.
func (s *KubeStore) maybeCompact(ctx context.Context) {
	var deltaBytes int64
	for _, g := range s.head.segments[1:] {
		deltaBytes += g.size()
	}
	if deltaBytes <= max(s.compactMin, s.head.segments[0].size()) && len(s.head.segments)-1 < s.maxDeltas {
		return
	}
	if err := s.writeState(ctx, s.key, s.mode, s.recovery, s.state, true, false); err != nil {
		s.log.Warn("store: compaction failed", "generation", s.head.generation, "err", err)
		return
	}
	s.log.Info("store: compacted deltas into a new base", "generation", s.head.generation, "delta_bytes", deltaBytes)
	s.sweep(ctx)
}

// sweep deletes chunk objects of this state that no head lists, the
// current one or one kept aside, and that were written for a generation
// the head has reached: leftovers of crashed or lost writes. Chunks
// written for a later generation may belong to a write in progress.
func (s *KubeStore) sweep(ctx context.Context) {
	keep := s.head.chunks()
	var unlisted []corev1.Secret
	opts := metav1.ListOptions{LabelSelector: LabelState + "=" + s.name, Limit: 64}
	for {
		list, err := s.secrets().List(ctx, opts)
		if err != nil {
			s.log.Warn("store: sweep: list objects", "err", err)
			return
		}
		for _, sec := range list.Items {
			switch sec.Labels[LabelObject] {
			case objectDiscarded:
				h, _, _, err := parseHead(sec.Data[headDataKey])
				if err != nil {
					s.log.Info("store: sweep skipped: a head kept aside cannot be read", "object", sec.Name)
					return
				}
				maps.Copy(keep, h.chunks())
			case objectChunk:
				unlisted = append(unlisted, sec)
			}
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	var gone []chunkRef
	for _, sec := range unlisted {
		gen, err := strconv.ParseUint(sec.Labels[LabelGeneration], 10, 64)
		if keep[sec.Name] || err != nil || gen > s.head.generation {
			continue
		}
		gone = append(gone, chunkRef{name: sec.Name})
	}
	if len(gone) > 0 {
		s.log.Info("store: deleting chunks no head lists", "count", len(gone))
		s.deleteChunks(ctx, gone)
	}
}

// Reset stores state under a new data key, sealed in the default mode,
// without recovery data; see ResetWith.
func (s *KubeStore) Reset(ctx context.Context, state map[string][]byte) ([]byte, error) {
	return s.ResetWith(ctx, state, ResetOptions{})
}

// ResetWith stores state under a new data key sealed in opts.Mode,
// together with the recovery data computed from that key, by one swap of
// the head. A head that this store has not opened is first copied aside
// (its chunks are kept); one it has opened is replaced and its chunks
// deleted.
func (s *KubeStore) ResetWith(ctx context.Context, state map[string][]byte, opts ResetOptions) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseClosed {
		return nil, fmt.Errorf("store: reset: %w", ErrClosed)
	}
	mode, key, recovery, err := opts.prepare(s.defaultMode, s.sealers)
	if err != nil {
		return nil, err
	}
	opened := s.phase == phaseOpen && s.broken == nil
	if !s.headKnown || s.broken != nil {
		if err := s.reread(ctx); err != nil {
			return nil, fmt.Errorf("store: reset: %w", err)
		}
	}
	if !opened && s.exists {
		if err := s.discard(ctx); err != nil {
			return nil, fmt.Errorf("store: reset: %w", err)
		}
	}
	s.broken = nil
	if err := s.writeState(ctx, key, mode, recovery, cloneState(state), opened, !opened); err != nil {
		return nil, fmt.Errorf("store: reset: %w", err)
	}
	s.phase, s.stale = phaseOpen, false
	s.sweep(ctx)
	return cloneValue(key), nil
}

// reread reads the head's resourceVersion and raw data, and parses it if
// it can, for a write that replaces whatever is there.
func (s *KubeStore) reread(ctx context.Context) error {
	sec, err := s.secrets().Get(ctx, s.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		s.headKnown, s.exists, s.rv, s.headRaw, s.headOK, s.unsynced = true, false, "", nil, false, true
		return nil
	case err != nil:
		return fmt.Errorf("read head: %w", err)
	}
	s.headKnown, s.exists, s.rv, s.headRaw = true, true, sec.ResourceVersion, sec.Data[headDataKey]
	// The head read here is not the one the held state is of.
	s.unsynced = true
	if h, _, _, err := parseHead(s.headRaw); err == nil {
		s.head, s.headOK = h, true
	} else {
		s.headOK = false
	}
	return nil
}

// discard copies the head this store could not open aside, as an object
// named <name>-discarded-<UTC time>, which keeps its chunks from sweeps.
func (s *KubeStore) discard(ctx context.Context) error {
	name := s.name + "-discarded-" + strings.ToLower(time.Now().UTC().Format("20060102t150405.000000000z"))
	name = strings.ReplaceAll(name, ".", "-")
	_, err := s.secrets().Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: s.labels(objectDiscarded, 0)},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{headDataKey: s.headRaw},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("keep the head aside: %w", err)
	}
	s.log.Warn("store: kept stored state that could not be opened aside", "object", name)
	return s.at("discarded")
}

// Unlock opens the stored state with a data key supplied by the owners,
// puts it under a new key-encryption key, seals that for this platform in
// the state's seal mode and swaps the head to one that holds it. A wrong
// key (ErrWrongDataKey) or unreadable objects change nothing.
func (s *KubeStore) Unlock(ctx context.Context, dataKey []byte) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseClosed {
		return nil, fmt.Errorf("store: unlock: %w", ErrClosed)
	}
	if len(dataKey) != dataKeySize {
		return nil, fmt.Errorf("store: unlock: key is %d bytes, want %d: %w", len(dataKey), dataKeySize, ErrWrongDataKey)
	}
	var d kubeRead
	var err error
	for range maxLoadAttempts {
		if d, err = s.read(ctx, readKeys{dataKey: dataKey}, nil); !errors.Is(err, errHeadMoved) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: unlock %s/%s: %w", s.ns, s.name, err)
	}
	s.broken, s.stale = nil, false
	s.headKnown, s.exists, s.rv, s.headRaw, s.head, s.headOK = true, true, d.rv, d.raw, d.head, true
	s.key, s.aead, s.recovery, s.mode, s.kek = d.key, d.aead, d.recovery, d.head.mode, nil
	ks, err := s.prepareKEK(ctx, d.key, d.head.mode, true)
	if err != nil {
		return nil, fmt.Errorf("store: unlock: %w", err)
	}
	h := d.head
	h.generation = s.nextGen()
	ks.apply(&h)
	if err := s.swapHead(ctx, h, d.aead, nil, false); err != nil {
		s.abandonKEK(ctx, ks, err)
		return nil, fmt.Errorf("store: unlock: %w", err)
	}
	s.finishKEK(ctx, ks)
	s.state, s.phase = d.state, phaseOpen
	s.log.Info("store: unlocked stored state under a new key-encryption key sealed for this platform", "generation", h.generation)
	return cloneState(s.state), nil
}

// RecoveryData returns a copy of the recovery data of the head last read
// or written, nil if none.
func (s *KubeStore) RecoveryData() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneValue(s.recovery)
}

// SetRecoveryData stores data (at most 1 MiB) in chunk objects and swaps
// the head to list them.
func (s *KubeStore) SetRecoveryData(ctx context.Context, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ready(); err != nil {
		return fmt.Errorf("store: set recovery data: %w", err)
	}
	if s.phase != phaseOpen {
		return fmt.Errorf("store: set recovery data: %w", ErrNotOpen)
	}
	if len(data) > maxRecoveryDataSize {
		return fmt.Errorf("store: set recovery data: %d bytes exceeds the limit %d", len(data), maxRecoveryDataSize)
	}
	ks, err := s.prepareKEK(ctx, s.key, s.mode, false)
	if err != nil {
		return fmt.Errorf("store: set recovery data: %w", err)
	}
	gen := s.nextGen()
	h := s.head
	h.generation, h.recoverySize, h.recovery = gen, uint32(len(data)), nil //nolint:gosec // G115: at most maxRecoveryDataSize
	ks.apply(&h)
	if len(data) > 0 {
		refs, err := s.putChunks(ctx, gen, cut(cloneValue(data), s.pieceSize))
		if err != nil {
			return fmt.Errorf("store: set recovery data: %w", err)
		}
		h.recovery = refs
	}
	if err := s.swapHead(ctx, h, s.aead, h.recovery, true); err != nil {
		s.abandonKEK(ctx, ks, err)
		return fmt.Errorf("store: set recovery data: %w", err)
	}
	s.finishKEK(ctx, ks)
	s.recovery = cloneValue(data)
	return nil
}

// CanSeal reports whether the store has a sealer for mode.
func (s *KubeStore) CanSeal(mode seal.Mode) bool {
	return !mode.Seals() || s.sealers[mode] != nil
}

// SealMode returns the seal mode of the head last read or written, the
// default mode before there is one.
func (s *KubeStore) SealMode() seal.Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

// SetSealMode swaps the head to one in seal mode mode, with the data key
// under a new key-encryption key sealed for this platform in that mode
// (none in Disabled); the entries of the former key are removed. Other
// Coordinators that have the state open follow with the data key they
// hold and add their own entries. When nothing would change it writes
// nothing.
func (s *KubeStore) SetSealMode(ctx context.Context, mode seal.Mode) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := mode.Code(); err != nil {
		return fmt.Errorf("store: set seal mode: %w", err)
	}
	if err := s.ready(); err != nil {
		return fmt.Errorf("store: set seal mode: %w", err)
	}
	if s.phase != phaseOpen {
		return fmt.Errorf("store: set seal mode: %w", ErrNotOpen)
	}
	if s.mode == mode && s.head.hasKEK() {
		return nil
	}
	if !s.CanSeal(mode) {
		return fmt.Errorf("store: set seal mode %s: this Coordinator has no sealer for it", mode)
	}
	ks, err := s.prepareKEK(ctx, s.key, mode, false)
	if err != nil {
		return fmt.Errorf("store: set seal mode %s: %w", mode, err)
	}
	h := s.head
	h.generation, h.mode = s.nextGen(), mode
	ks.apply(&h)
	if err := s.swapHead(ctx, h, s.aead, nil, false); err != nil {
		s.abandonKEK(ctx, ks, err)
		return fmt.Errorf("store: set seal mode %s: %w", mode, err)
	}
	s.mode = mode
	s.finishKEK(ctx, ks)
	return nil
}

// Close makes every later call fail with ErrClosed. Stored objects stay.
func (s *KubeStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forget()
	s.hintKey, s.hintKEK, s.entryKEK = nil, nil, nil
	s.phase = phaseClosed
	return nil
}

// unavailable marks err, an error of the Kubernetes API, with
// ErrUnavailable when it says that the API could not be reached or could
// not serve the request for now (no connection, overloaded, timed out,
// shutting down), rather than that the request was refused.
func unavailable(err error) error {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		// No answer from the API server: the connection failed.
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if apierrors.IsServiceUnavailable(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
