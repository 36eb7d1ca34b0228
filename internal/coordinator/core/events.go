package core

import (
	"sync"
	"time"
)

// Event records one successful activation.
type Event struct {
	Time       time.Time       `json:"time"`
	Activation ActivationEvent `json:"activation"`
}

// ActivationEvent describes the activated marble.
type ActivationEvent struct {
	MarbleType string `json:"marbleType"`
	UUID       string `json:"uuid"`
	Quote      []byte `json:"quote"`
}

// eventLog keeps the most recent events in a ring of fixed size, so memory
// stays bounded however many marbles activate.
type eventLog struct {
	mu    sync.Mutex
	ring  []Event
	next  int
	count int
}

func newEventLog(size int) *eventLog {
	return &eventLog{ring: make([]Event, size)}
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.ring[l.next] = e
	l.next = (l.next + 1) % len(l.ring)
	if l.count < len(l.ring) {
		l.count++
	}
	l.mu.Unlock()
}

func (l *eventLog) list() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Event, 0, l.count)
	start := (l.next - l.count + len(l.ring)) % len(l.ring)
	for i := 0; i < l.count; i++ {
		out = append(out, l.ring[(start+i)%len(l.ring)])
	}
	return out
}
