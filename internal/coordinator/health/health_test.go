package health

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/internal/coordinator/core"
)

func TestModelVerdict(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	ev := func(k Kind, s float64, reason string) Event { return Event{Kind: k, At: at(s), Reason: reason} }
	loadOK := func(started, s float64) Event { return Event{Kind: LoadOK, At: at(s), Started: at(started)} }
	loaded := Serving{Loaded: true}
	// up is a replica whose watch came up right after the start.
	up := []Event{ev(Started, 0, ""), ev(WatchUp, 0.1, "")}
	with := func(evs ...Event) []Event { return append(append([]Event(nil), up...), evs...) }
	// contacts returns a successful round trip every second from a to b.
	contacts := func(a, b float64) []Event {
		var out []Event
		for s := a; s <= b; s++ {
			out = append(out, ev(ContactOK, s, ""))
		}
		return out
	}

	tests := []struct {
		name    string
		shared  bool
		events  []Event
		now     float64
		serving Serving
		ready   bool
		current bool
		reload  bool
		reason  string // a part of the reason; "" when ready
	}{
		{name: "file store always current", events: nil, now: 3600, serving: loaded, ready: true, current: true},
		{name: "file store not serving", events: nil, now: 1, serving: Serving{Reason: "starting"}, current: true, reason: "starting"},
		{name: "before the start", shared: true, events: []Event{ev(LoadFailed, 1, "x")}, now: 100, serving: loaded, ready: true, current: true},
		{name: "fresh start, watch coming up", shared: true, events: []Event{ev(Started, 0, "")}, now: 1, serving: loaded, ready: true, current: true},
		{name: "watch never up", shared: true, events: append([]Event{ev(Started, 0, "")}, contacts(1, 10)...), now: 10, serving: loaded,
			reason: "watch of the stored state has been down"},
		{name: "no contact since the start", shared: true, events: []Event{ev(Started, 0, "")}, now: 4, serving: loaded,
			reason: "no round trip to the store has succeeded for 4s"},
		{name: "watch up, contacts", shared: true, events: with(contacts(1, 10)...), now: 10.5, serving: loaded, ready: true, current: true},
		{name: "waiting for a peer's key on a shared store", shared: true, events: with(contacts(1, 10)...), now: 10.5,
			serving: ServingOf(core.StateRecovery, true, false), current: true, reason: "waits for the key from a peer"},
		{name: "in recovery on a shared store, no peer holds the key", shared: true, events: with(contacts(1, 10)...), now: 10.5,
			serving: ServingOf(core.StateRecovery, true, true), current: true, reason: "waits for the owners' recovery secrets"},
		{name: "one failed round trip does not flip", shared: true,
			events: with(ev(ContactOK, 1, ""), ev(ContactFailed, 2, "timeout"), ev(ContactOK, 3, "")), now: 3.5, serving: loaded, ready: true, current: true},
		{name: "one failed round trip, not yet past the bound", shared: true,
			events: with(ev(ContactOK, 1, ""), ev(ContactFailed, 2, "timeout")), now: 3.9, serving: loaded, ready: true, current: true},
		{name: "API server lost", shared: true,
			events: with(ev(ContactOK, 1, ""), ev(ContactFailed, 2, "connection refused"), ev(WatchDown, 2, "EOF"), ev(ContactFailed, 3, "connection refused")),
			now:    4.5, serving: loaded, reason: "no round trip to the store has succeeded for 4s: connection refused"},
		{name: "API server silent (no failure reported)", shared: true, events: with(ev(ContactOK, 1, "")), now: 4.5, serving: loaded,
			reason: "no round trip to the store has succeeded"},
		{name: "API server back", shared: true,
			events: with(ev(ContactOK, 1, ""), ev(WatchDown, 2, "EOF"), ev(ContactFailed, 3, "refused"), ev(ContactOK, 9, ""), ev(WatchUp, 9.1, "")),
			now:    9.5, serving: loaded, ready: true, current: true},
		{name: "watch reconnected within the grace", shared: true,
			events: with(append(contacts(1, 10), ev(WatchDown, 5, "EOF"), ev(WatchUp, 9, ""))...), now: 10.5, serving: loaded, ready: true, current: true},
		{name: "watch down past the grace", shared: true,
			events: with(append(contacts(1, 12), ev(WatchDown, 5, "forbidden"))...), now: 12, serving: loaded, reason: "down for 7s: forbidden"},
		{name: "change seen, read pending within the grace", shared: true,
			events: with(ev(ContactOK, 1, ""), ev(ChangeSeen, 1.5, "")), now: 2, serving: loaded, ready: true, current: true, reload: true},
		{name: "change seen, never read", shared: true,
			events: with(append(contacts(1, 10), ev(ChangeSeen, 2, ""))...), now: 10, serving: loaded, reload: true, reason: "has not been read for 8s"},
		{name: "change seen on reconnecting, not yet read", shared: true,
			events: with(ev(ContactOK, 1, ""), ev(WatchDown, 2, "EOF"), ev(ContactFailed, 3, "refused"), ev(ChangeSeen, 9, ""), ev(WatchUp, 9.1, "")),
			now:    9.2, serving: loaded, reload: true, reason: "made while this one was not current has not been read yet"},
		{name: "change seen on reconnecting, read", shared: true,
			events: with(ev(ContactOK, 1, ""), ev(WatchDown, 2, "EOF"), ev(ChangeSeen, 9, ""), ev(WatchUp, 9.1, ""), loadOK(9.1, 9.3)),
			now:    9.5, serving: loaded, ready: true, current: true},
		{name: "change read", shared: true,
			events: with(append(contacts(1, 10), ev(ChangeSeen, 2, ""), loadOK(2, 2.5))...), now: 10, serving: loaded, ready: true, current: true},
		{name: "read that began before the change does not count", shared: true,
			events: with(append(contacts(1, 10), ev(ChangeSeen, 2, ""), loadOK(1.9, 2.5))...), now: 10, serving: loaded, reload: true, reason: "has not been read"},
		{name: "reload after a change fails", shared: true,
			events: with(append(contacts(1, 10), ev(ChangeSeen, 2, ""), ev(LoadFailed, 2.5, "chunk missing"))...), now: 3, serving: loaded, reload: true,
			reason: "reading the stored state failed: chunk missing"},
		{name: "rollback refused", shared: true,
			events: with(ev(ContactOK, 1, ""), ev(LoadFailed, 1.5, "the stored state is older than state seen before")), now: 2, serving: loaded, reload: true,
			reason: "older than state seen before"},
		{name: "unknown write outcome, read failed", shared: true,
			events: with(ev(ContactOK, 1, ""), ev(LoadFailed, 1.2, "")), now: 1.5, serving: loaded, reload: true, reason: "unknown error"},
		{name: "read succeeds after a failed one", shared: true,
			events: with(append(contacts(1, 10), ev(ChangeSeen, 2, ""), ev(LoadFailed, 2.5, "x"), loadOK(3, 3.5))...), now: 10, serving: loaded, ready: true, current: true},
		{name: "failure of a file store read is ignored", events: []Event{ev(LoadFailed, 1, "x")}, now: 2, serving: loaded, ready: true, current: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Config{Shared: tc.shared})
			for _, e := range tc.events {
				m.Apply(e)
			}
			v := m.Verdict(at(tc.now), tc.serving)
			if v.Ready != tc.ready || v.Current != tc.current || v.NeedsReload != tc.reload {
				t.Fatalf("verdict %+v, want ready %v current %v reload %v", v, tc.ready, tc.current, tc.reload)
			}
			if tc.reason == "" && v.Reason != "" || !strings.Contains(v.Reason, tc.reason) {
				t.Fatalf("reason %q, want one with %q", v.Reason, tc.reason)
			}
			if v.Degraded(tc.serving) != (tc.serving.Loaded && !tc.current) {
				t.Fatalf("degraded %v", v.Degraded(tc.serving))
			}
		})
	}
}

func TestServingOf(t *testing.T) {
	for _, tc := range []struct {
		state             core.State
		shared, noPeerKey bool
		check             string // the failing check; "" when loaded
	}{
		{core.StateUninitialized, false, false, CheckStarted},
		{core.StateUninitialized, true, true, CheckStarted},
		{core.StateRecovery, false, false, CheckRecovery},
		{core.StateRecovery, true, false, CheckKey},
		{core.StateRecovery, true, true, CheckRecovery},
		{core.StateAcceptingManifest, true, false, ""},
		{core.StateAcceptingMarbles, true, true, ""},
		{core.StateAcceptingMarbles, false, false, ""},
	} {
		got := ServingOf(tc.state, tc.shared, tc.noPeerKey)
		if got.Loaded != (tc.check == "") || got.Check != tc.check || (!got.Loaded && got.Reason == "") {
			t.Errorf("ServingOf(%s, %v, %v) = %+v, want the failing check %q", tc.state, tc.shared, tc.noPeerKey, got, tc.check)
		}
	}
}

// TestVerdictFailures: every failing check is listed, and ReadyExcept
// leaves out only those named.
func TestVerdictFailures(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// A replica on a shared store that lost the store after its start.
	behind := New(Config{Shared: true})
	behind.Apply(Event{Kind: Started, At: t0})
	behind.Apply(Event{Kind: WatchUp, At: t0})
	later := t0.Add(time.Minute)
	for _, tc := range []struct {
		name    string
		m       *Model
		serving Serving
		checks  []string
		exclude []string
		ready   bool
		reason  string
	}{
		{name: "file store in recovery", m: New(Config{}), serving: ServingOf(core.StateRecovery, false, false),
			checks: []string{CheckRecovery}, reason: "recovery secrets"},
		{name: "file store in recovery, recovery left out", m: New(Config{}), serving: ServingOf(core.StateRecovery, false, false),
			checks: []string{CheckRecovery}, exclude: []string{CheckRecovery}, ready: true},
		{name: "file store serving", m: New(Config{}), serving: ServingOf(core.StateAcceptingMarbles, false, false), ready: true},
		{name: "shared, in recovery and behind", m: behind, serving: ServingOf(core.StateRecovery, true, true),
			checks: []string{CheckRecovery, CheckCurrent}, exclude: []string{CheckRecovery}, reason: "no round trip"},
		{name: "shared, waiting for a peer's key, recovery left out", m: behind, serving: ServingOf(core.StateRecovery, true, false),
			checks: []string{CheckKey, CheckCurrent}, exclude: []string{CheckRecovery}, reason: "waits for the key from a peer"},
		{name: "shared, behind, current left out", m: behind, serving: ServingOf(core.StateAcceptingMarbles, true, false),
			checks: []string{CheckCurrent}, exclude: []string{CheckCurrent}, ready: true},
		{name: "starting", m: New(Config{}), serving: ServingOf(core.StateUninitialized, false, false),
			checks: []string{CheckStarted}, exclude: []string{CheckRecovery}, reason: "starting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.m.Verdict(later, tc.serving)
			var checks []string
			for _, f := range v.Failures {
				if f.Reason == "" {
					t.Errorf("failure %s without a reason", f.Check)
				}
				checks = append(checks, f.Check)
			}
			if !slices.Equal(checks, tc.checks) {
				t.Fatalf("failing checks %v, want %v", checks, tc.checks)
			}
			if v.Ready != (len(tc.checks) == 0) {
				t.Fatalf("Ready %v with failures %v", v.Ready, checks)
			}
			ready, reason := v.ReadyExcept(tc.exclude)
			if ready != tc.ready || (tc.ready && reason != "") || !strings.Contains(reason, tc.reason) {
				t.Fatalf("ReadyExcept(%v) = %v %q, want %v with %q", tc.exclude, ready, reason, tc.ready, tc.reason)
			}
		})
	}
}

func TestAlive(t *testing.T) {
	for _, tc := range []struct {
		held  time.Duration
		alive bool
	}{
		{0, true},
		{time.Minute, true},
		{WedgeBound, true},
		{WedgeBound + time.Second, false},
	} {
		alive, reason := Alive(tc.held)
		if alive != tc.alive || alive != (reason == "") {
			t.Errorf("Alive(%s) = %v %q, want %v", tc.held, alive, reason, tc.alive)
		}
		if !alive && !strings.Contains(reason, "wedged") {
			t.Errorf("Alive(%s) reason %q", tc.held, reason)
		}
	}
}

func TestMonitorLoads(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	mo := NewMonitor(Config{Shared: true}, clock)
	mo.Observe(Started, "")
	mo.Observe(WatchUp, "")
	if ok, r := mo.Current(); !ok {
		t.Fatalf("not current at the start: %s", r)
	}
	mo.Observe(ChangeSeen, "")
	done := mo.BeginLoad()
	now = now.Add(time.Second)
	done(errors.New("the API server is unreachable"))
	if ok, r := mo.Current(); ok || !strings.Contains(r, "unreachable") {
		t.Fatalf("current %v (%s) after a failed reload", ok, r)
	}
	if !mo.Verdict(Serving{Loaded: true}).NeedsReload {
		t.Fatal("a failed reload does not ask for another")
	}
	done = mo.BeginLoad()
	now = now.Add(time.Second)
	done(nil)
	if ok, r := mo.Current(); !ok {
		t.Fatalf("not current after a successful reload: %s", r)
	}
}
