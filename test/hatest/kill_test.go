package hatest_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/test/hatest"
)

// killLoad is how long TestSIGKILLUnderLoad keeps the load and the kills
// going.
const killLoad = 30 * time.Second

// TestSIGKILLUnderLoad runs three Coordinators behind one client address
// under a load of activations (of a type without MaxActivations, of one
// with a limit far off and of one with a limit the load reaches), writes
// of a user-defined secret and package updates, while a random replica is
// killed with SIGKILL at random points and started again after a short
// pause. Afterwards every replica serves every acknowledged write, the
// stored activation counts hold every acknowledged activation and never
// exceed MaxActivations, and activations went on through the other
// replicas during each kill.
func TestSIGKILLUnderLoad(t *testing.T) {
	began := time.Now()
	kube := controlPlane.Env(t)
	bin := coordinatorBin.Path(t)
	t.Logf("control plane and binary ready after %s", time.Since(began).Round(time.Millisecond))
	cl := hatest.New(t, hatest.Config{Bin: bin, Kube: kube, Namespace: kube.Namespace(t)})
	cl.Start(t)
	root, err := cl.Replicas[0].Root(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	u := newUsers(t)
	l := &load{limitedMax: 100000, scarceMax: 8}
	setManifest(t, hatest.NewClient(cl.Client.Addr(), root), testManifest(t, u, l.limitedMax, l.scarceMax, 1))

	t.Logf("cluster serving a manifest after %s", time.Since(began).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), killLoad)
	defer cancel()
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	mesh := cl.Mesh.Addr()
	for range 2 {
		run(func() { activateLoop(ctx, t, mesh, typeFree, 10*time.Millisecond, &l.free) })
	}
	run(func() { activateLoop(ctx, t, mesh, typeLimited, 20*time.Millisecond, &l.limited) })
	run(func() { activateLoop(ctx, t, mesh, typeScarce, 100*time.Millisecond, &l.scarce) })
	run(func() {
		writeLoop(ctx, 0, &l.notes, noteWriter(t, hatest.NewClient(cl.Client.Addr(), root, u.writer.TLS)), nil)
	})
	run(func() {
		writeLoop(ctx, 1500*time.Millisecond, &l.svns, svnUpdater(t, hatest.NewClient(cl.Client.Addr(), root, u.updater.TLS)), nil)
	})

	// The kills: one replica at a time, down for 0.3 to 1.5 s, then up
	// again; the next kill 1 to 3 s after it is back.
	type outage struct{ from, to time.Time }
	var outages []outage
	start := time.Now()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(time.Second + rand.N(2*time.Second)): //nolint:gosec // test timing, not security
		}
		if ctx.Err() != nil {
			break
		}
		r := cl.Replicas[rand.IntN(len(cl.Replicas))] //nolint:gosec // test choice, not security
		o := outage{from: time.Now()}
		if err := r.Kill(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300*time.Millisecond + rand.N(1200*time.Millisecond)) //nolint:gosec // test timing, not security
		// The restart gets its own deadline: the load may end meanwhile.
		if err := r.Start(context.WithoutCancel(ctx)); err != nil {
			t.Fatal(err)
		}
		o.to = time.Now()
		outages = append(outages, o)
	}
	end := time.Now()
	wg.Wait()

	for _, err := range cl.Exits() {
		t.Errorf("a Coordinator exited by itself: %v", err)
	}
	checkNothingLost(t, cl, root, u, l)
	t.Logf("checks done %s after the load", time.Since(end).Round(time.Millisecond))
	if l.scarce.exhausted.Load() == 0 {
		t.Errorf("%s never reached its MaxActivations %d: the test did not exercise the limit", typeScarce, l.scarceMax)
	}

	times := l.free.ackTimes()
	gap := longestGap(times, start, end)
	covered := 0
	for _, o := range outages {
		for _, at := range times {
			if at.After(o.from) && at.Before(o.to) {
				covered++
				break
			}
		}
	}
	retries := 0
	for _, r := range cl.Replicas {
		retries += strings.Count(r.Log(), "a write lost a race with another Coordinator")
	}
	t.Logf("%s of load: %d kills; %s: %s; secret writes: %s; package updates: %s; "+
		"store write retries after a lost race: %d; connections passed over by the balancers: %d client, %d mesh; "+
		"longest time without an activation of %s: %s; kills with activations while the replica was down: %d of %d",
		end.Sub(start).Round(time.Millisecond), len(outages), typeFree, l.free.String(), l.notes.String(), l.svns.String(),
		retries, cl.Client.Skipped(), cl.Mesh.Skipped(), typeFree, gap.Round(time.Millisecond), covered, len(outages))
	if len(outages) < 3 {
		t.Errorf("only %d kills in %s: the test did not exercise failover", len(outages), killLoad)
	}
	if covered < len(outages) {
		t.Errorf("activations stopped during %d of %d kills", len(outages)-covered, len(outages))
	}
	if gap > 5*time.Second {
		t.Errorf("no activation of %s for %s", typeFree, gap)
	}
	_, acked, _, _ := l.notes.snapshot()
	_, svnAcked, _, _ := l.svns.snapshot()
	if len(acked) == 0 || len(svnAcked) == 0 {
		t.Errorf("no secret write (%d) or no package update (%d) was acknowledged", len(acked), len(svnAcked))
	}
}
