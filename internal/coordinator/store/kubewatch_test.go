package store

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestKubeWatch: Watch reports another store's commit to the state, not
// the store's own, and returns once its context is done.
func TestKubeWatch(t *testing.T) {
	ns := kubeEnv(t).Namespace(t)
	sealer := sealerWith(t, 1)
	a, b := openKube(t, ns, sealer), openKube(t, ns, sealer)
	if _, err := a.Reset(t.Context(), kv("manifest/raw", "{}")); err != nil {
		t.Fatal(err)
	}
	loadOK(t, b)

	changed := make(chan struct{}, 16)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	watched := make(chan error, 1)
	go func() { watched <- b.Watch(ctx, func() { changed <- struct{}{} }) }()
	quiet := func(what string) {
		t.Helper()
		select {
		case <-changed:
			t.Fatalf("%s: changed was called", what)
		case <-time.After(time.Second):
		}
	}
	quiet("no write")

	// The store's own writes are no change.
	for i := range 3 {
		if err := b.Commit(t.Context(), kv("own", string(rune('0'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	quiet("the store's own commits")

	// Another store's write is.
	loadOK(t, a)
	if err := a.Commit(t.Context(), kv("other", "1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("another store's commit: changed was not called within 10 s")
	}
	// Once read, the change is known: no further call for it.
	requireState(t, loadOK(t, b), kv("manifest/raw", "{}", "own", "2", "other", "1"))
	for len(changed) > 0 {
		<-changed
	}
	quiet("after Load")

	cancel()
	select {
	case err := <-watched:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Watch returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after its context was cancelled")
	}
}

// TestKubeWatchRelistsWhenTooOld: a watch whose resourceVersion is too old
// to watch from is established again after a list, and a change that the
// list shows is reported.
func TestKubeWatchRelistsWhenTooOld(t *testing.T) {
	client := fake.NewClientset()
	var lists, watches atomic.Int32
	client.PrependReactor("list", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		rv := "5"
		if lists.Add(1) > 1 {
			rv = "7" // another store wrote meanwhile
		}
		return true, &corev1.SecretList{
			ListMeta: metav1.ListMeta{ResourceVersion: rv},
			Items:    []corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Name: DefaultKubeStateName, ResourceVersion: rv}}},
		}, nil
	})
	open := watch.NewFake()
	client.PrependWatchReactor("secrets", func(k8stesting.Action) (bool, watch.Interface, error) {
		if watches.Add(1) > 1 {
			return true, open, nil
		}
		expired := watch.NewFakeWithChanSize(1, false)
		expired.Error(&apierrors.NewResourceExpired("too old resource version").ErrStatus)
		return true, expired, nil
	})
	s, err := OpenKube(KubeOptions{Client: client, Namespace: "ns", Sealers: kubeSealers(sealerWith(t, 1))})
	if err != nil {
		t.Fatal(err)
	}
	s.headKnown, s.exists, s.rv = true, true, "5"

	var calls atomic.Int32
	ctx, cancel := context.WithCancel(t.Context())
	watched := make(chan error, 1)
	go func() { watched <- s.Watch(ctx, func() { calls.Add(1) }) }()
	deadline := time.Now().Add(10 * time.Second)
	for watches.Load() < 2 || calls.Load() < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %d lists, %d watches, %d calls", lists.Load(), watches.Load(), calls.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-watched; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v", err)
	}
	if lists.Load() != 2 || watches.Load() != 2 || calls.Load() != 1 {
		t.Fatalf("%d lists, %d watches, %d calls; want 2, 2, 1", lists.Load(), watches.Load(), calls.Load())
	}
}

// TestKubeWatchWithReportsUpAndDown: WatchWith tells when a watch could
// not be established (with the error), when one is established, and when
// one ends (without an error).
func TestKubeWatchWithReportsUpAndDown(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, &corev1.SecretList{ListMeta: metav1.ListMeta{ResourceVersion: "5"}}, nil
	})
	var watches atomic.Int32
	open := watch.NewFake()
	client.PrependWatchReactor("secrets", func(k8stesting.Action) (bool, watch.Interface, error) {
		switch watches.Add(1) {
		case 1:
			return true, nil, apierrors.NewForbidden(corev1.Resource("secrets"), "", errors.New("no watch allowed"))
		case 2:
			return true, open, nil
		default:
			return true, watch.NewFake(), nil
		}
	})
	s, err := OpenKube(KubeOptions{Client: client, Namespace: "ns", Sealers: kubeSealers(sealerWith(t, 1))})
	if err != nil {
		t.Fatal(err)
	}
	s.headKnown = true // nothing stored, and known to be so

	events := make(chan string, 16)
	ctx, cancel := context.WithCancel(t.Context())
	watched := make(chan error, 1)
	go func() {
		watched <- s.WatchWith(ctx, WatchEvents{
			Up: func() { events <- "up" },
			Down: func(err error) {
				if err != nil {
					events <- "down: " + err.Error()
					return
				}
				events <- "down"
			},
		})
	}()
	next := func() string {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			t.Fatal("no watch event within 10 s")
			return ""
		}
	}
	if e := next(); e != "down: watching the head: secrets is forbidden: no watch allowed" {
		t.Fatalf("first event %q", e)
	}
	if e := next(); e != "up" {
		t.Fatalf("second event %q", e)
	}
	open.Stop()
	if e := next(); e != "down" {
		t.Fatalf("third event %q", e)
	}
	if e := next(); e != "up" {
		t.Fatalf("fourth event %q", e)
	}
	cancel()
	if err := <-watched; !errors.Is(err, context.Canceled) {
		t.Fatalf("WatchWith returned %v", err)
	}
}

// TestKubeCheck: Check reads the head once and tells whether it differs
// from what the store knows; a failed read is an error.
func TestKubeCheck(t *testing.T) {
	client := fake.NewClientset()
	var answer atomic.Value // the head's resourceVersion, or an error
	client.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		switch v := answer.Load().(type) {
		case error:
			return true, nil, v
		case string:
			return true, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: DefaultKubeStateName, ResourceVersion: v}}, nil
		}
		return true, nil, apierrors.NewNotFound(corev1.Resource("secrets"), DefaultKubeStateName)
	})
	s, err := OpenKube(KubeOptions{Client: client, Namespace: "ns", Sealers: kubeSealers(sealerWith(t, 1))})
	if err != nil {
		t.Fatal(err)
	}
	s.headKnown, s.exists, s.rv = true, true, "5"
	for _, tc := range []struct {
		answer  any
		changed bool
		err     bool
	}{
		{"5", false, false},
		{"6", true, false},
		{nil, true, false}, // deleted
		{errors.New("connection refused"), false, true},
	} {
		if tc.answer != nil {
			answer.Store(tc.answer)
		} else {
			answer = atomic.Value{}
		}
		changed, err := s.Check(t.Context())
		if changed != tc.changed || (err != nil) != tc.err {
			t.Errorf("head %v: changed %v, error %v", tc.answer, changed, err)
		}
	}
}
