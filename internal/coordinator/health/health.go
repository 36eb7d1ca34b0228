// Package health decides whether a Coordinator replica is Ready: whether
// it holds the key and the state, and, when it shares its store with other
// Coordinators, whether the state it serves is current. It is a pure
// model: events with their times go in (Model.Apply), a verdict for a
// given time comes out (Model.Verdict); the Coordinator feeds it from the
// store's watch, a periodic round trip to the store and the core's reads
// of the stored state.
//
// A replica on a shared store is current when all of these hold:
//
//   - a round trip to the store succeeded within Config.ContactBound (a
//     single failed round trip does not count against it: only the time
//     since the last success does);
//   - the store's watch is established, or was re-established within
//     Config.WatchGrace of ending;
//   - no read of the stored state failed since the last one that
//     succeeded (a failed read means the replica knows of a state it could
//     not take over: a change by another replica, a write of its own with
//     an unknown outcome, or a stored state refused as a rollback);
//   - every change by another replica it was told of was read within
//     Config.ChangeGrace, or at once when it was told of the change while
//     not current (after it reconnects, it is not current again before it
//     has read what changed meanwhile).
//
// These rules apply from the Started event on, when the replica begins to
// serve and to watch; before it, during the start (its first read of the
// state, a startup manifest), a replica is current: it serves nobody yet
// and its writes are compare-and-swaps on the state it has just read.
// A replica whose store is not shared (one Coordinator on the file store)
// is always current.
package health

import (
	"fmt"
	"slices"
	"time"

	"github.com/marblemesh/marblemesh/internal/coordinator/core"
)

// Defaults of Config.
const (
	DefaultContactBound = 3 * time.Second
	DefaultWatchGrace   = 5 * time.Second
	DefaultChangeGrace  = 5 * time.Second
)

// Config are the bounds of a Model; zero values take the defaults.
type Config struct {
	// Shared tells whether other Coordinators share the store.
	Shared bool
	// ContactBound is the longest time without a successful round trip
	// to the store before the replica is not current.
	ContactBound time.Duration
	// WatchGrace is how long the watch may be down before the replica is
	// not current.
	WatchGrace time.Duration
	// ChangeGrace is how long a change by another replica may wait to be
	// read before the replica is not current.
	ChangeGrace time.Duration
}

// Kind is the kind of an Event.
type Kind int

// Event kinds.
const (
	// Started: the replica begins to serve and to watch the store.
	Started Kind = iota + 1
	// ContactOK: a round trip to the store succeeded.
	ContactOK
	// ContactFailed: a round trip to the store failed (Reason says why).
	ContactFailed
	// WatchUp: the store's watch is established.
	WatchUp
	// WatchDown: the store's watch ended or could not be established.
	WatchDown
	// ChangeSeen: another replica changed the stored state.
	ChangeSeen
	// LoadOK: a read of the stored state that began at Started
	// succeeded; the replica serves what it read.
	LoadOK
	// LoadFailed: a read of the stored state failed (Reason says why).
	LoadFailed
)

// Event is something the replica learnt at time At.
type Event struct {
	Kind Kind
	At   time.Time
	// Started is when a LoadOK's read began.
	Started time.Time
	// Reason describes a failure; it is shown to operators.
	Reason string
}

// Readiness checks, by the names GET /readyz?exclude=<name> takes. A
// replica is Ready when none fails.
const (
	// CheckStarted fails while the Coordinator starts.
	CheckStarted = "started"
	// CheckKey fails while a replica of a shared store cannot open the
	// stored state and waits for the key from its peers: before it has
	// asked them, or while one may hand it over. Such a replica stays out
	// of the Services, whichever checks the probe leaves out.
	CheckKey = "key"
	// CheckRecovery fails while the Coordinator cannot open the stored
	// state and waits for the owners' recovery secrets: alone on the file
	// store, or on a shared store when no peer holds the key either (the
	// whole deployment is in recovery). The chart's probe leaves it out,
	// so that owners reach such a Coordinator through its Services.
	CheckRecovery = "recovery"
	// CheckCurrent fails while the state served may be behind the stored
	// one (a shared store only).
	CheckCurrent = "current"
)

// Checks lists the readiness checks in the order they are reported.
func Checks() []string { return []string{CheckStarted, CheckKey, CheckRecovery, CheckCurrent} }

// Failure is a readiness check that fails, and why.
type Failure struct {
	Check  string
	Reason string
}

// Serving is what the core serves.
type Serving struct {
	// Loaded tells whether the replica holds the key and a state it can
	// serve.
	Loaded bool
	// Check names the readiness check that fails when not Loaded
	// (CheckStarted, CheckKey or CheckRecovery).
	Check string
	// Reason says why not, when not Loaded.
	Reason string
}

// ServingOf tells from the core's state whether a replica serves: it
// must hold the key and the state; a replica in recovery or still
// starting does not, whichever its store. noPeerKey tells, for a replica
// of a shared store, that its peers were asked lately and none handed
// over a key: a replica in recovery then waits for the owners (it fails
// CheckRecovery), else for a peer (CheckKey).
func ServingOf(state core.State, shared, noPeerKey bool) Serving {
	switch state {
	case core.StateUninitialized:
		return Serving{Check: CheckStarted, Reason: "the Coordinator is starting"}
	case core.StateRecovery:
		switch {
		case !shared:
			return Serving{Check: CheckRecovery, Reason: "the Coordinator cannot open the stored state and waits for the owners' recovery secrets"}
		case noPeerKey:
			return Serving{Check: CheckRecovery, Reason: "no replica holds the key of the stored state: the deployment waits for the owners' recovery secrets"}
		default:
			return Serving{Check: CheckKey, Reason: "the Coordinator cannot open the stored state and waits for the key from a peer"}
		}
	}
	return Serving{Loaded: true}
}

// Verdict is the replica's health at one time.
type Verdict struct {
	// Ready: the replica serves and is current.
	Ready bool
	// Current: the state it serves is the stored one as far as it can
	// tell; writes are refused while not.
	Current bool
	// Reason says why the replica is not Ready ("" when it is).
	Reason string
	// NeedsReload: the stored state should be read again (a change was
	// seen and not yet read, or the last read failed).
	NeedsReload bool
	// Failures are the readiness checks that fail, in the order of
	// Checks; empty when Ready.
	Failures []Failure
}

// ReadyExcept tells whether the replica is Ready when the named checks
// are left out, and if not why (the first failure that is not left out).
func (v Verdict) ReadyExcept(exclude []string) (bool, string) {
	for _, f := range v.Failures {
		if !slices.Contains(exclude, f.Check) {
			return false, f.Reason
		}
	}
	return true, ""
}

// Degraded tells whether the replica answers from a state that may be
// behind the stored one: it serves but is not current.
func (v Verdict) Degraded(s Serving) bool { return s.Loaded && !v.Current }

// Model is the health of one replica. Its zero value is not usable: call
// New. A Model is a value without locks; the caller serialises access.
type Model struct {
	cfg     Config
	started bool

	lastContact    time.Time
	lastContactErr string

	watchUp        bool
	watchDownSince time.Time
	watchErr       string

	// changeAt is when the oldest change not yet read was seen (zero if
	// none).
	changeAt time.Time
	// changeNoGrace: that change was seen while not current, so it must
	// be read before the replica is current again.
	changeNoGrace bool
	// loadErr is why the last read failed, "" if it succeeded.
	loadErr string
}

// New returns the model of a replica that has not started yet.
func New(cfg Config) *Model {
	if cfg.ContactBound <= 0 {
		cfg.ContactBound = DefaultContactBound
	}
	if cfg.WatchGrace <= 0 {
		cfg.WatchGrace = DefaultWatchGrace
	}
	if cfg.ChangeGrace <= 0 {
		cfg.ChangeGrace = DefaultChangeGrace
	}
	return &Model{cfg: cfg}
}

// Shared tells whether the model is of a replica on a shared store.
func (m *Model) Shared() bool { return m.cfg.Shared }

// Apply takes an event into account.
func (m *Model) Apply(e Event) {
	switch e.Kind {
	case Started:
		// It has just read the state; its watch is not up yet.
		m.started = true
		m.contact(e.At)
		if !m.watchUp {
			m.watchDownSince = e.At
		}
	case ContactOK:
		m.contact(e.At)
	case ContactFailed:
		m.lastContactErr = e.Reason
	case WatchUp:
		m.contact(e.At)
		m.watchUp, m.watchErr = true, ""
	case WatchDown:
		if m.watchUp {
			m.watchUp, m.watchDownSince = false, e.At
		}
		if e.Reason != "" {
			m.watchErr = e.Reason
		}
	case ChangeSeen:
		if m.changeAt.IsZero() {
			current, _ := m.current(e.At)
			m.changeAt, m.changeNoGrace = e.At, !current
		}
		m.contact(e.At)
	case LoadOK:
		m.contact(e.At)
		m.loadErr = ""
		if !m.changeAt.IsZero() && !e.Started.Before(m.changeAt) {
			m.changeAt = time.Time{}
		}
	case LoadFailed:
		m.loadErr = e.Reason
		if m.loadErr == "" {
			m.loadErr = "unknown error"
		}
	}
}

func (m *Model) contact(at time.Time) {
	if at.After(m.lastContact) {
		m.lastContact = at
	}
	m.lastContactErr = ""
}

// Verdict returns the replica's health at now, given what its core
// serves.
func (m *Model) Verdict(now time.Time, s Serving) Verdict {
	v := Verdict{Current: true}
	if m.cfg.Shared && m.started {
		v.NeedsReload = m.loadErr != "" || !m.changeAt.IsZero()
		v.Current, v.Reason = m.current(now)
	}
	v.Ready = s.Loaded && v.Current
	if !s.Loaded {
		v.Failures = append(v.Failures, Failure{Check: s.Check, Reason: s.Reason})
	}
	if !v.Current {
		v.Failures = append(v.Failures, Failure{Check: CheckCurrent, Reason: v.Reason})
	}
	if !s.Loaded {
		v.Reason = s.Reason
	}
	return v
}

// current tells whether the served state is current at now, and if not
// why.
func (m *Model) current(now time.Time) (bool, string) {
	if gap := now.Sub(m.lastContact); gap > m.cfg.ContactBound {
		r := fmt.Sprintf("no round trip to the store has succeeded for %s", gap.Round(time.Second))
		if m.lastContactErr != "" {
			r += ": " + m.lastContactErr
		}
		return false, r
	}
	if m.loadErr != "" {
		return false, "reading the stored state failed: " + m.loadErr
	}
	if !m.changeAt.IsZero() && m.changeNoGrace {
		return false, "a change by another Coordinator made while this one was not current has not been read yet"
	}
	if !m.changeAt.IsZero() && now.Sub(m.changeAt) > m.cfg.ChangeGrace {
		return false, fmt.Sprintf("a change by another Coordinator has not been read for %s", now.Sub(m.changeAt).Round(time.Second))
	}
	if !m.watchUp && now.Sub(m.watchDownSince) > m.cfg.WatchGrace {
		r := fmt.Sprintf("the watch of the stored state has been down for %s", now.Sub(m.watchDownSince).Round(time.Second))
		if m.watchErr != "" {
			r += ": " + m.watchErr
		}
		return false, r
	}
	return true, ""
}
