package hatest_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/hatest"
	"github.com/marblemesh/marblemesh/test/kubetest"
)

// Phases of TestAPIServerOutageUnderLoad.
const (
	outageBefore  = 4 * time.Second  // load before the API server stops
	outageLength  = 8 * time.Second  // how long it stays stopped
	outageAfter   = 6 * time.Second  // load after the restart
	outageRecover = 20 * time.Second // bound on the first acknowledged write after the restart
)

// TestAPIServerOutageUnderLoad stops the kube-apiserver under the three
// Coordinators while they are under load, and starts it again. While it
// is stopped every write is answered with a retryable Unavailable (HTTP
// 503, gRPC Unavailable) and activations that need no write go on from
// memory; no Coordinator exits; after the restart writes are acknowledged
// again within outageRecover, and no acknowledged write is lost.
func TestAPIServerOutageUnderLoad(t *testing.T) {
	bin := coordinatorBin.Path(t)
	kube := kubetest.Start(t) // its own: this test stops it
	cl := hatest.New(t, hatest.Config{Bin: bin, Kube: kube, Namespace: kube.Namespace(t)})
	cl.Start(t)
	root, err := cl.Replicas[0].Root(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	u := newUsers(t)
	l := &load{limitedMax: 100000, scarceMax: 100000}
	setManifest(t, hatest.NewClient(cl.Client.Addr(), root), testManifest(t, u, l.limitedMax, l.scarceMax, 1))

	// down is set while the API server is stopped; what is answered
	// meanwhile is checked as it comes.
	var down atomic.Bool
	var mu sync.Mutex
	var freeDuringOutage, writesDuringOutage int
	var wrongAnswers []string
	var firstAckAfter time.Time
	var restarted time.Time
	onNote := func(r coordtest.Response, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case down.Load():
			writesDuringOutage++
			if err != nil || r.Code != http.StatusServiceUnavailable {
				wrongAnswers = append(wrongAnswers, fmt.Sprintf("secret write during the outage: %v %d %s", err, r.Code, r.Message))
			}
		case !restarted.IsZero() && firstAckAfter.IsZero() && err == nil && r.Code == http.StatusOK:
			firstAckAfter = time.Now()
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	mesh := cl.Mesh.Addr()
	run(func() { activateLoop(ctx, t, mesh, typeFree, 20*time.Millisecond, &l.free) })
	run(func() { activateLoop(ctx, t, mesh, typeLimited, 50*time.Millisecond, &l.limited) })
	run(func() {
		writeLoop(ctx, 50*time.Millisecond, &l.notes, noteWriter(t, hatest.NewClient(cl.Client.Addr(), root, u.writer.TLS)), onNote)
	})

	time.Sleep(outageBefore)
	limitedBefore := l.limited.failed.Load()
	kube.StopAPIServer(t)
	down.Store(true)
	from := time.Now()
	time.Sleep(outageLength)
	down.Store(false)
	to := time.Now()
	limitedDuring := l.limited.failed.Load() - limitedBefore
	kube.StartAPIServer(t)
	mu.Lock()
	restarted = time.Now()
	mu.Unlock()
	time.Sleep(outageAfter)
	cancel()
	wg.Wait()

	for _, err := range cl.Exits() {
		t.Errorf("a Coordinator exited: %v", err)
	}
	for _, times := range l.free.ackTimes() {
		if times.After(from) && times.Before(to) {
			freeDuringOutage++
		}
	}
	mu.Lock()
	for _, w := range wrongAnswers {
		t.Error(w)
	}
	t.Logf("outage of %s: %d secret writes answered meanwhile, %d failed activations of %s, %d activations of %s; "+
		"first acknowledged write %s after the restart",
		to.Sub(from).Round(time.Millisecond), writesDuringOutage, limitedDuring, typeLimited, freeDuringOutage, typeFree,
		firstAckAfter.Sub(restarted).Round(time.Millisecond))
	switch {
	case writesDuringOutage == 0:
		t.Error("no secret write was answered during the outage")
	case firstAckAfter.IsZero():
		t.Errorf("no secret write was acknowledged in the %s after the restart", outageAfter)
	case firstAckAfter.Sub(restarted) > outageRecover:
		t.Errorf("the first write after the restart was acknowledged only after %s", firstAckAfter.Sub(restarted))
	}
	mu.Unlock()
	if freeDuringOutage == 0 {
		t.Errorf("no activation of %s during the outage: activations that need no write stopped", typeFree)
	}
	if l.limited.codes[codes.Unavailable] == 0 || len(l.limited.codes) != 1 {
		t.Errorf("activations of %s failed with %v, expected Unavailable only", typeLimited, l.limited.codes)
	}
	t.Logf("secret writes: %s", l.notes.String())
	checkNothingLost(t, cl, root, u, l)
}
