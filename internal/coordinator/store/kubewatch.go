package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

// Bounds of KubeStore.Watch.
const (
	// watchMinBackoff and watchMaxBackoff bound the wait before a watch
	// is established again: the wait doubles after each failure and is
	// reset by a watch that delivered an event.
	watchMinBackoff = 200 * time.Millisecond
	watchMaxBackoff = 30 * time.Second
	// watchTimeout asks the API server to end each watch request after
	// this long; it is then established again from where it ended.
	watchTimeout = 5 * time.Minute
	// maxWrittenRVs bounds how many of its own writes a KubeStore
	// remembers for Watch.
	maxWrittenRVs = 32
)

// Watch calls changed whenever the head Secret changes in the API server
// other than by this store's own writes: when its resourceVersion (or its
// existence) differs from the one this store last read or wrote. Such a
// change is another store's write (another Coordinator sharing the state);
// changed should Load again. changed is called from Watch's goroutine, one
// call at a time, and should return soon.
//
// Watch watches the head alone (a field selector on its name). When a
// watch ends it is established again from the last resourceVersion seen,
// after a wait that doubles up to watchMaxBackoff while it keeps failing;
// when that resourceVersion is too old to watch from, the head is read
// again first (a list), and changed is called if it differs. It returns
// ctx's error when ctx is done, and nothing runs after it returns.
//
// Watch uses KubeOptions.WatchClient when set, else Client; the client
// must allow long requests: a client-side request timeout shorter than
// watchTimeout ends every watch early.
func (s *KubeStore) Watch(ctx context.Context, changed func()) error {
	return s.WatchWith(ctx, WatchEvents{Changed: changed})
}

// WatchEvents are the calls of KubeStore.WatchWith, each from its
// goroutine, one at a time; each should return soon. Nil ones are not
// called.
type WatchEvents struct {
	// Changed: as Watch's changed.
	Changed func()
	// Up: a watch request is established.
	Up func()
	// Down: a watch ended, or could not be established or listed; err is
	// nil when it ended without an error (the API server's timeout or a
	// closed connection).
	Down func(err error)
}

// WatchWith is Watch that also reports when the watch is established and
// when it ends, so that its caller can tell how current it is.
func (s *KubeStore) WatchWith(ctx context.Context, ev WatchEvents) error {
	changed := ev.Changed
	if changed == nil {
		changed = func() {}
	}
	sel := fields.OneTermEqualSelector("metadata.name", s.name).String()
	backoff := watchMinBackoff
	from := "" // the resourceVersion to watch from; "" lists first
	for {
		var err error
		delivered := false
		if from == "" {
			from, err = s.relist(ctx, sel, changed)
		}
		if err == nil {
			from, delivered, err = s.watchOnce(ctx, sel, from, changed, ev.Up)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ev.Down != nil {
			ev.Down(err)
		}
		switch {
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
			// Too old to watch from: list again, without waiting long.
			s.log.Debug("store: the watch of the head must start over", "namespace", s.ns, "name", s.name)
			from, backoff = "", watchMinBackoff
		case err != nil:
			s.log.Warn("store: watching the head failed; trying again", "namespace", s.ns, "name", s.name, "error", err, "retryIn", backoff)
		}
		if delivered && err == nil {
			backoff = watchMinBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if err != nil {
			backoff = min(2*backoff, watchMaxBackoff)
		}
	}
}

// relist reads the head through a list, calls changed if it differs from
// what this store knows, and returns the list's resourceVersion.
func (s *KubeStore) relist(ctx context.Context, sel string, changed func()) (string, error) {
	list, err := s.watchSecrets().List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return "", fmt.Errorf("listing the head: %w", err)
	}
	exists, rv := false, ""
	for i := range list.Items {
		if list.Items[i].Name == s.name {
			exists, rv = true, list.Items[i].ResourceVersion
		}
	}
	if s.differs(exists, rv) {
		changed()
	}
	return list.ResourceVersion, nil
}

// watchOnce watches the head from resourceVersion from until the watch
// ends, calling changed for each change that is not this store's own. It
// returns the resourceVersion to watch from next and whether any event
// came.
func (s *KubeStore) watchOnce(ctx context.Context, sel, from string, changed, up func()) (string, bool, error) {
	timeout := int64(watchTimeout / time.Second)
	w, err := s.watchSecrets().Watch(ctx, metav1.ListOptions{
		FieldSelector: sel, ResourceVersion: from, AllowWatchBookmarks: true, TimeoutSeconds: &timeout,
	})
	if err != nil {
		return from, false, fmt.Errorf("watching the head: %w", err)
	}
	defer w.Stop()
	if up != nil {
		up()
	}
	delivered := false
	for {
		select {
		case <-ctx.Done():
			return from, delivered, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return from, delivered, nil
			}
			delivered = true
			if ev.Type == watch.Error {
				return from, delivered, apierrors.FromObject(ev.Object)
			}
			sec, ok := ev.Object.(*corev1.Secret)
			if !ok {
				return from, delivered, fmt.Errorf("watching the head: an event of type %s holds a %T", ev.Type, ev.Object)
			}
			from = sec.ResourceVersion
			switch ev.Type {
			case watch.Added, watch.Modified:
				if sec.Name == s.name && s.differs(true, sec.ResourceVersion) {
					changed()
				}
			case watch.Deleted:
				if sec.Name == s.name && s.differs(false, "") {
					changed()
				}
			case watch.Bookmark:
			default:
				return from, delivered, errors.New("watching the head: an event of unknown type " + string(ev.Type))
			}
		}
	}
}

// Check reads the head once, within ctx, and tells whether it differs
// from what this store last read or wrote (as Watch's changed would):
// one round trip that proves the API server reachable and catches a
// change a watch missed.
func (s *KubeStore) Check(ctx context.Context) (changed bool, err error) {
	exists, rv := true, ""
	h, err := s.secrets().Get(ctx, s.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		exists = false
	case err != nil:
		return false, fmt.Errorf("reading the head %s/%s: %w", s.ns, s.name, err)
	default:
		rv = h.ResourceVersion
	}
	return s.differs(exists, rv), nil
}

// Generation returns the generation of the state this store last read or
// wrote, 0 if none.
func (s *KubeStore) Generation() uint64 { return s.gen.Load() }

// differs tells whether a head that exists (with resourceVersion rv) or
// not differs from the one this store last read or wrote and is not one of
// this store's recent writes (whose event may come after a later write).
// It waits for a write in progress, so that the write's own change is
// known when it is seen.
func (s *KubeStore) differs(exists bool, rv string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseClosed {
		return false
	}
	if exists && slices.Contains(s.written, rv) {
		return false
	}
	return !s.headKnown || s.exists != exists || (exists && s.rv != rv)
}

// wrote remembers that this store wrote the head at resourceVersion rv.
// s.mu must be held.
func (s *KubeStore) wrote(rv string) {
	if len(s.written) == maxWrittenRVs {
		s.written = append(s.written[:0], s.written[1:]...)
	}
	s.written = append(s.written, rv)
}

func (s *KubeStore) watchSecrets() typedcorev1.SecretInterface {
	if s.watchClient != nil {
		return s.watchClient.CoreV1().Secrets(s.ns)
	}
	return s.secrets()
}
