package health

import (
	"sync"
	"time"
)

// Monitor is a Model safe for concurrent use, fed with the times of its
// own clock. It is what the core asks before each write (core.Freshness).
type Monitor struct {
	now func() time.Time

	mu sync.Mutex
	m  *Model
}

// NewMonitor returns a Monitor of a replica that has not started yet
// (see Started); now defaults to time.Now.
func NewMonitor(cfg Config, now func() time.Time) *Monitor {
	if now == nil {
		now = time.Now
	}
	return &Monitor{now: now, m: New(cfg)}
}

// Shared tells whether the replica shares its store.
func (mo *Monitor) Shared() bool { return mo.m.Shared() }

// Observe applies an event of kind k that happens now.
func (mo *Monitor) Observe(k Kind, reason string) {
	mo.apply(Event{Kind: k, At: mo.now(), Reason: reason})
}

func (mo *Monitor) apply(e Event) {
	mo.mu.Lock()
	defer mo.mu.Unlock()
	mo.m.Apply(e)
}

// BeginLoad notes that a read of the stored state begins; the returned
// function is called with the read's outcome.
func (mo *Monitor) BeginLoad() func(error) {
	started := mo.now()
	return func(err error) {
		if err != nil {
			mo.apply(Event{Kind: LoadFailed, At: mo.now(), Reason: err.Error()})
			return
		}
		mo.apply(Event{Kind: LoadOK, At: mo.now(), Started: started})
	}
}

// Current tells whether the served state is current now, and if not why.
func (mo *Monitor) Current() (bool, string) {
	v := mo.Verdict(Serving{Loaded: true})
	return v.Current, v.Reason
}

// Verdict returns the replica's health now, given what its core serves.
func (mo *Monitor) Verdict(s Serving) Verdict {
	now := mo.now()
	mo.mu.Lock()
	defer mo.mu.Unlock()
	return mo.m.Verdict(now, s)
}
