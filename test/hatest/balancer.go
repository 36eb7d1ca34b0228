package hatest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// balancerDialTimeout bounds the connection to one backend; a backend that
// does not answer within it is skipped like one that refuses.
const balancerDialTimeout = time.Second

// Balancer is a loopback TCP load balancer: each connection goes to the
// next backend in turn, skipping backends that refuse it (a stopped
// process), like a Kubernetes Service without readiness. It forwards bytes
// and sees nothing of TLS.
type Balancer struct {
	ln       net.Listener
	backends []string
	next     atomic.Uint64
	skipped  atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// StartBalancer listens on a loopback port in front of backends (at least
// one) until Close.
func StartBalancer(backends ...string) (*Balancer, error) {
	if len(backends) == 0 {
		return nil, errors.New("a balancer needs at least one backend")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}
	b := &Balancer{ln: ln, backends: slices.Clone(backends), conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.serve()
	return b, nil
}

// NewBalancer is StartBalancer for a test: it fails t on an error and
// stops when t ends.
func NewBalancer(t testing.TB, backends ...string) *Balancer {
	t.Helper()
	b, err := StartBalancer(backends...)
	if err != nil {
		t.Fatalf("hatest: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// Addr is the address clients connect to.
func (b *Balancer) Addr() string { return b.ln.Addr().String() }

// Skipped counts the backends that refused a connection and were passed
// over.
func (b *Balancer) Skipped() int64 { return b.skipped.Load() }

// Close stops listening and cuts every forwarded connection.
func (b *Balancer) Close() {
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	_ = b.ln.Close()
	b.wg.Wait()
}

func (b *Balancer) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !b.track(c) {
			return
		}
		b.wg.Add(1)
		go b.forward(c)
	}
}

// track registers c for Close; it closes c and returns false once the
// balancer is closed.
func (b *Balancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		_ = c.Close()
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *Balancer) untrack(c net.Conn) {
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
	_ = c.Close()
}

// forward connects client to the first backend that accepts, starting at
// the next one in turn, and copies both ways until either side closes.
func (b *Balancer) forward(client net.Conn) {
	defer b.wg.Done()
	defer b.untrack(client)
	start := b.next.Add(1) - 1 // the first connection goes to the first backend
	var backend net.Conn
	for i := range uint64(len(b.backends)) {
		addr := b.backends[(start+i)%uint64(len(b.backends))]
		c, err := net.DialTimeout("tcp", addr, balancerDialTimeout)
		if err == nil {
			backend = c
			break
		}
		b.skipped.Add(1)
	}
	if backend == nil || !b.track(backend) {
		return
	}
	defer b.untrack(backend)
	// A client that half-closes still gets the answer; once the backend
	// ends its side (or its process is gone), nothing more can come, and
	// both connections close.
	up := make(chan struct{})
	go func() {
		_, _ = io.Copy(backend, client)
		if tc, ok := backend.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		close(up)
	}()
	_, _ = io.Copy(client, backend)
	_ = client.Close()
	_ = backend.Close()
	<-up
}
