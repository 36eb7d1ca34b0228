package store

import (
	"context"
	"crypto/subtle"
	"fmt"
	"sync"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// phase is where a store is in its life cycle.
type phase int

const (
	// phaseUnloaded: Load has not succeeded yet (or failed with an I/O
	// error); Commit is refused.
	phaseUnloaded phase = iota
	// phaseEmpty: Load found no state; the first Commit creates it under a
	// fresh data key.
	phaseEmpty
	// phaseSealed: Load found state it could not unseal; only Unlock or
	// Reset open it.
	phaseSealed
	// phaseOpen: state is loaded and Commit appends to it.
	phaseOpen
	// phaseClosed: Close was called.
	phaseClosed
)

// refuseCommit returns the error for committing in phase p, or nil.
func (p phase) refuseCommit() error {
	switch p {
	case phaseUnloaded:
		return ErrNotOpen
	case phaseSealed:
		return fmt.Errorf("%w: %w", ErrNotOpen, ErrUnseal)
	case phaseClosed:
		return ErrClosed
	}
	return nil
}

// Memory is a Store that keeps everything in memory, for tests. It follows
// the same life cycle as FileStore: Commit needs a prior Load (or Reset or
// Unlock); after Load reports ErrNoState the first Commit creates the
// state. Values are copied on the way in and out, so callers can't change
// what is stored. LoseSealKey simulates a restart on a machine that cannot
// unseal the data key. Memory keeps nothing aside on Reset.
type Memory struct {
	mu       sync.Mutex
	phase    phase
	state    map[string][]byte // nil while nothing is stored
	dataKey  []byte
	recovery []byte
	keyLost  bool
	mode     seal.Mode
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store whose default seal mode is
// ProductKey.
func NewMemory() *Memory {
	return &Memory{mode: seal.ModeProductKey}
}

// Load returns a copy of the stored state.
func (m *Memory) Load(context.Context) (map[string][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.phase == phaseClosed:
		return nil, fmt.Errorf("store: load: %w", ErrClosed)
	case m.state == nil:
		m.phase = phaseEmpty
		return nil, fmt.Errorf("store: load: %w", ErrNoState)
	case m.keyLost:
		m.phase = phaseSealed
		return nil, fmt.Errorf("store: load: %w: the data key cannot be unsealed on this machine", ErrUnseal)
	case !m.mode.Seals():
		m.phase = phaseSealed
		return nil, fmt.Errorf("store: load: %w: the state's seal mode is %s", ErrUnseal, m.mode)
	}
	m.phase = phaseOpen
	return cloneState(m.state), nil
}

// Commit applies a copy of changes; nil values delete.
func (m *Memory) Commit(_ context.Context, changes map[string][]byte) error {
	changes = cloneChanges(changes)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.phase.refuseCommit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	if m.phase == phaseEmpty {
		if len(changes) == 0 {
			return nil
		}
		key, err := newDataKey()
		if err != nil {
			return fmt.Errorf("store: commit: %w", err)
		}
		m.state, m.dataKey, m.recovery, m.phase, m.mode = map[string][]byte{}, key, nil, phaseOpen, seal.ModeProductKey
	}
	applyChanges(m.state, changes)
	return nil
}

// Reset replaces the stored state with a copy of state under a new data
// key, which it returns, in seal mode ProductKey. Nil values in state are
// left out.
func (m *Memory) Reset(ctx context.Context, state map[string][]byte) ([]byte, error) {
	return m.ResetWith(ctx, state, ResetOptions{})
}

// ResetWith is Reset with a seal mode and recovery data.
func (m *Memory) ResetWith(_ context.Context, state map[string][]byte, opts ResetOptions) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.phase == phaseClosed {
		return nil, fmt.Errorf("store: reset: %w", ErrClosed)
	}
	mode, key, recovery, err := opts.prepare(seal.ModeProductKey, nil)
	if err != nil {
		return nil, err
	}
	m.state, m.dataKey, m.recovery, m.keyLost, m.phase, m.mode = cloneState(state), key, recovery, false, phaseOpen, mode
	return cloneValue(key), nil
}

// CanSeal reports true: the in-memory store seals nothing, in every mode.
func (m *Memory) CanSeal(seal.Mode) bool { return true }

// SealMode returns the seal mode of the stored state.
func (m *Memory) SealMode() seal.Mode {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mode
}

// SetSealMode records mode as the open state's seal mode; in Disabled,
// Load reports ErrUnseal.
func (m *Memory) SetSealMode(_ context.Context, mode seal.Mode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := mode.Code(); err != nil {
		return fmt.Errorf("store: set seal mode: %w", err)
	}
	if m.phase != phaseOpen {
		if err := m.phase.refuseCommit(); err != nil {
			return fmt.Errorf("store: set seal mode: %w", err)
		}
		return fmt.Errorf("store: set seal mode: %w", ErrNotOpen)
	}
	m.mode = mode
	return nil
}

// Unlock opens the stored state with dataKey.
func (m *Memory) Unlock(_ context.Context, dataKey []byte) (map[string][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.phase == phaseClosed:
		return nil, fmt.Errorf("store: unlock: %w", ErrClosed)
	case m.state == nil:
		return nil, fmt.Errorf("store: unlock: %w", ErrNoState)
	case len(dataKey) != dataKeySize || subtle.ConstantTimeCompare(dataKey, m.dataKey) != 1:
		return nil, fmt.Errorf("store: unlock: %w", ErrWrongDataKey)
	}
	m.keyLost, m.phase = false, phaseOpen
	return cloneState(m.state), nil
}

// Close makes every later call fail with ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phase = phaseClosed
	return nil
}

// LoseSealKey simulates a restart on a machine that cannot unseal the data
// key: the next Load reports ErrUnseal until Unlock or Reset.
func (m *Memory) LoseSealKey() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.phase != phaseClosed {
		m.keyLost, m.phase = true, phaseUnloaded
	}
}

// RecoveryData returns a copy of the recovery data stored beside the
// state, nil if none.
func (m *Memory) RecoveryData() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneValue(m.recovery)
}

// SetRecoveryData stores a copy of data as the recovery data; Reset clears
// it.
func (m *Memory) SetRecoveryData(_ context.Context, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.phase != phaseOpen {
		if err := m.phase.refuseCommit(); err != nil {
			return fmt.Errorf("store: set recovery data: %w", err)
		}
		return fmt.Errorf("store: set recovery data: %w", ErrNotOpen)
	}
	if len(data) > maxRecoveryDataSize {
		return fmt.Errorf("store: set recovery data: %d bytes exceeds the limit %d", len(data), maxRecoveryDataSize)
	}
	m.recovery = cloneValue(data)
	return nil
}
