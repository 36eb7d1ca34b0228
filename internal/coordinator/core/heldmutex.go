package core

import (
	"sync"
	"sync/atomic"
	"time"
)

// heldMutex is a mutex that knows since when its holder holds it, so
// that a liveness check can tell a core wedged behind one operation
// (Core.Held) from one that is merely busy.
type heldMutex struct {
	mu    sync.Mutex
	now   func() time.Time
	since atomic.Pointer[time.Time]
}

func (m *heldMutex) Lock() {
	m.mu.Lock()
	t := m.now()
	m.since.Store(&t)
}

func (m *heldMutex) Unlock() {
	m.since.Store(nil)
	m.mu.Unlock()
}

// held returns how long the current holder has held m, 0 if m is free.
func (m *heldMutex) held() time.Duration {
	t := m.since.Load()
	if t == nil {
		return 0
	}
	return m.now().Sub(*t)
}

// Held returns how long the operation that holds the core's lock (every
// change of state and every store write takes it) has held it; 0 when
// none does. Reads do not take the lock.
func (c *Core) Held() time.Duration { return c.mu.held() }
