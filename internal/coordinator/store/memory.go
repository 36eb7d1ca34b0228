package store

import (
	"crypto/subtle"
	"fmt"
	"sync"
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
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{}
}

// Load returns a copy of the stored state.
func (m *Memory) Load() (map[string][]byte, error) {
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
	}
	m.phase = phaseOpen
	return cloneState(m.state), nil
}

// Commit applies a copy of changes; nil values delete.
func (m *Memory) Commit(changes map[string][]byte) error {
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
		m.state, m.dataKey, m.recovery, m.phase = map[string][]byte{}, key, nil, phaseOpen
	}
	applyChanges(m.state, changes)
	return nil
}

// Reset replaces the stored state with a copy of state under a new data
// key, which it returns. Nil values in state are left out.
func (m *Memory) Reset(state map[string][]byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.phase == phaseClosed {
		return nil, fmt.Errorf("store: reset: %w", ErrClosed)
	}
	key, err := newDataKey()
	if err != nil {
		return nil, fmt.Errorf("store: reset: %w", err)
	}
	m.state, m.dataKey, m.recovery, m.keyLost, m.phase = cloneState(state), key, nil, false, phaseOpen
	return cloneValue(key), nil
}

// Unlock opens the stored state with dataKey.
func (m *Memory) Unlock(dataKey []byte) (map[string][]byte, error) {
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
func (m *Memory) SetRecoveryData(data []byte) error {
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
