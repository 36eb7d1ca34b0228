package hatest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/test/testsupport"
)

// startNamed serves on a loopback port, writing name to every connection
// and then echoing what the connection sends.
func startNamed(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.WriteString(c, name+"\n"); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// via connects through the balancer and returns the backend's name.
func via(t *testing.T, b *Balancer) (string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("reading through the balancer: %v", err)
	}
	return strings.TrimSpace(line), c
}

// TestBalancerOrder: backends take connections in turn, and a backend
// that refuses the connection passes its turn to the next.
func TestBalancerOrder(t *testing.T) {
	dead := testsupport.FreeAddr(t)
	for _, tc := range []struct {
		name     string
		backends []string
		want     string
	}{
		{"round robin", []string{startNamed(t, "a"), startNamed(t, "b"), startNamed(t, "c")}, "abcabc"},
		{"a refusing backend is skipped", []string{startNamed(t, "a"), dead, startNamed(t, "c")}, "accacc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := StartBalancer(tc.backends...)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			var got []string
			for range 6 {
				name, c := via(t, b)
				c.Close()
				got = append(got, name)
			}
			if strings.Join(got, "") != tc.want {
				t.Errorf("backends in turn = %v, want %s", got, tc.want)
			}
		})
	}
}

func TestBalancerForwardsBothWays(t *testing.T) {
	b, err := StartBalancer(startNamed(t, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, c := via(t, b)
	defer c.Close()
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != "ping\n" {
		t.Errorf("echo after a half-close = %q, want %q", rest, "ping\n")
	}
}

func TestBalancerClose(t *testing.T) {
	b, err := StartBalancer(startNamed(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	_, c := via(t, b)
	defer c.Close()
	b.Close()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("a forwarded connection did not end cleanly at Close: %v", err)
	}
	if c, err := net.DialTimeout("tcp", b.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("the balancer accepts connections after Close")
	}
	if _, err := StartBalancer(); err == nil {
		t.Error("a balancer without backends started")
	}
}

func TestBalancerAllRefuse(t *testing.T) {
	b, err := StartBalancer(testsupport.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := net.DialTimeout("tcp", b.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("read through a balancer whose backends all refuse: %d bytes, %v; want the connection closed", n, err)
	}
}
