package coordinator_test

import (
	"crypto/elliptic"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/test/coordtest"
)

// idleConn is a connection the test opened and left doing nothing.
type idleConn struct {
	kind string
	conn net.Conn
}

// TestIdleConnectionsAreBoundedAndHarmless opens hundreds of connections
// that never finish their handshake, or finish it and then send nothing,
// to both APIs. Real requests are served promptly meanwhile, and the
// Coordinator closes every idle connection once its timeout has passed.
func TestIdleConnectionsAreBoundedAndHarmless(t *testing.T) {
	const (
		handshake = 1 * time.Second
		idle      = 2 * time.Second
		perKind   = 60 // 6 kinds: 360 idle connections
	)
	c := coordtest.Start(t, func(cfg *coordinator.Config) {
		cfg.HandshakeTimeout = handshake
		cfg.IdleTimeout = idle
	})
	c.SetManifest(t, readManifest(t))

	insecure := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the test checks connection handling, not identity
	openers := map[string]func(t *testing.T) net.Conn{
		// TCP connections that never start a TLS handshake.
		"mesh tcp":   func(t *testing.T) net.Conn { return dialTCP(t, c.MeshAddr()) },
		"client tcp": func(t *testing.T) net.Conn { return dialTCP(t, c.ClientAddr()) },
		// TLS connections that never send the HTTP/2 preface or a request.
		"mesh tls": func(t *testing.T) net.Conn {
			id, err := coordtest.NewMarbleIdentity(elliptic.P256())
			if err != nil {
				t.Fatal(err)
			}
			cfg := id.ClientTLS()
			cfg.NextProtos = []string{"h2"}
			return dialTLS(t, c.MeshAddr(), cfg)
		},
		"client tls": func(t *testing.T) net.Conn { return dialTLS(t, c.ClientAddr(), insecure) },
		// HTTP/2 connections that finished their preface and stay idle.
		"mesh h2": func(t *testing.T) net.Conn {
			id, err := coordtest.NewMarbleIdentity(elliptic.P256())
			if err != nil {
				t.Fatal(err)
			}
			cfg := id.ClientTLS()
			cfg.NextProtos = []string{"h2"}
			return startHTTP2(t, dialTLS(t, c.MeshAddr(), cfg))
		},
		"client h2": func(t *testing.T) net.Conn {
			cfg := insecure.Clone()
			cfg.NextProtos = []string{"h2"}
			return startHTTP2(t, dialTLS(t, c.ClientAddr(), cfg))
		},
	}
	var conns []idleConn
	t.Cleanup(func() {
		for _, ic := range conns {
			ic.conn.Close()
		}
	})
	opened := time.Now()
	for kind, open := range openers {
		for range perKind {
			conns = append(conns, idleConn{kind, open(t)})
		}
	}
	t.Logf("opened %d idle connections in %v", len(conns), time.Since(opened).Round(time.Millisecond))

	// Real work goes on while they sit there.
	for i := range 5 {
		start := time.Now()
		if got := statusCode(t, c); got != 3 {
			t.Fatalf("status = %d", got)
		}
		if _, err := activate(t, c, "backend", uuidA); err != nil {
			t.Fatalf("activation %d beside idle connections: %v", i, err)
		}
		if d := time.Since(start); d > handshake {
			t.Errorf("status and activation took %v beside %d idle connections", d, len(conns))
		}
	}

	// Every idle connection is closed by the Coordinator, within its
	// timeout and some slack; none outlives it. gRPC closes an idle HTTP/2
	// connection gracefully: GOAWAY and a PING, then up to 5 s for the
	// acknowledgement (which this client never sends), then the close.
	const grpcDrainGrace = 5 * time.Second
	deadline := opened.Add(idle + grpcDrainGrace + handshake + 3*time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	stillOpen := map[string]int{}
	for _, ic := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !closedByPeer(ic.conn, deadline) {
				mu.Lock()
				stillOpen[ic.kind]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for kind, n := range stillOpen {
		t.Errorf("%d of %d %q connections were still open %v after they were opened", n, perKind, kind, deadline.Sub(opened))
	}
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func dialTLS(t *testing.T, addr string, cfg *tls.Config) net.Conn {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	return conn
}

// startHTTP2 sends the client preface and an empty SETTINGS frame and
// reads the server's SETTINGS, so that the connection is an established,
// idle HTTP/2 connection.
func startHTTP2(t *testing.T, conn net.Conn) net.Conn {
	t.Helper()
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatalf("reading the server's first HTTP/2 frame: %v", err)
	}
	if _, ok := f.(*http2.SettingsFrame); !ok {
		t.Fatalf("the server's first HTTP/2 frame is %T, want SETTINGS", f)
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	return conn
}

// closedByPeer reads (and discards, e.g. SETTINGS acknowledgements and
// GOAWAY) until the peer closes the connection or deadline passes.
func closedByPeer(conn net.Conn, deadline time.Time) bool {
	if err := conn.SetReadDeadline(deadline); err != nil {
		return false
	}
	buf := make([]byte, 4096)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		return !errors.Is(err, os.ErrDeadlineExceeded)
	}
}
