package core

import (
	"sync"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
)

// TestHeld: Held is 0 while nobody holds the core, tells how long the
// operation that holds it has held it on the core's clock, and is 0 again
// once it lets go; a second operation waiting for the lock does not
// count until it takes it.
func TestHeld(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	c, err := New(Config{Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: store.NewMemory(), Now: clock, RecoveryKeyBits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Held(); h != 0 {
		t.Fatalf("Held() = %s on an idle core", h)
	}
	c.mu.Lock()
	advance(7 * time.Minute)
	if h := c.Held(); h != 7*time.Minute {
		t.Fatalf("Held() = %s after 7m, want 7m", h)
	}
	taken := make(chan struct{})
	go func() {
		c.mu.Lock()
		close(taken)
	}()
	advance(time.Minute)
	if h := c.Held(); h != 8*time.Minute {
		t.Fatalf("Held() = %s with a waiter, want the holder's 8m", h)
	}
	c.mu.Unlock()
	<-taken
	if h := c.Held(); h != 0 {
		t.Fatalf("Held() = %s just after the waiter took the lock, want 0", h)
	}
	advance(time.Second)
	if h := c.Held(); h != time.Second {
		t.Fatalf("Held() = %s, want the new holder's 1s", h)
	}
	c.mu.Unlock()
	if h := c.Held(); h != 0 {
		t.Fatalf("Held() = %s after the last unlock", h)
	}
}
