package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// balancerDialTimeout bounds the connection to one backend.
const balancerDialTimeout = time.Second

// balancer stands for a Kubernetes Service in front of several
// Coordinators: it forwards each TCP connection it accepts on loopback to
// the next backend in turn. A backend that refuses the connection (its
// process is gone) is skipped for the next one, as a Service does once the
// endpoints controller has removed a dead Pod; the connection fails only
// when every backend refuses it.
type balancer struct {
	ln       net.Listener
	backends []string

	mu     sync.Mutex
	next   int
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startBalancer listens on a free loopback port and forwards to backends.
func startBalancer(backends []string) (*balancer, error) {
	if len(backends) == 0 {
		return nil, errors.New("a balancer needs at least one backend")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("balancer: %w", err)
	}
	b := &balancer{ln: ln, backends: append([]string(nil), backends...), conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.serve()
	return b, nil
}

// Addr is the address clients connect to.
func (b *balancer) Addr() string { return b.ln.Addr().String() }

// Close stops accepting, ends every forwarded connection and waits for
// the forwarding goroutines.
func (b *balancer) Close() {
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.ln.Close()
	b.wg.Wait()
}

func (b *balancer) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return // closed
		}
		if !b.track(c) {
			c.Close()
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer b.untrack(c)
			b.forward(c)
		}()
	}
}

// track records an open connection, unless the balancer is closed.
func (b *balancer) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *balancer) untrack(c net.Conn) {
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
	c.Close()
}

// order returns the backends in the order the next connection tries them.
func (b *balancer) order() []string {
	b.mu.Lock()
	first := b.next
	b.next = (b.next + 1) % len(b.backends)
	b.mu.Unlock()
	out := make([]string, 0, len(b.backends))
	for i := range b.backends {
		out = append(out, b.backends[(first+i)%len(b.backends)])
	}
	return out
}

// forward connects client to the first backend that accepts and copies
// both ways until either side ends.
func (b *balancer) forward(client net.Conn) {
	var backend net.Conn
	for _, addr := range b.order() {
		c, err := net.DialTimeout("tcp", addr, balancerDialTimeout)
		if err == nil {
			backend = c
			break
		}
	}
	if backend == nil || !b.track(backend) {
		if backend != nil {
			backend.Close()
		}
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
	client.Close()
	backend.Close()
	<-up
}
