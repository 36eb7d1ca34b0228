package main

import (
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"fmt"
	"github.com/marblemesh/marblemesh/test/testsupport"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/meshapi"
	"github.com/marblemesh/marblemesh/internal/coordinator/pki"
	"github.com/marblemesh/marblemesh/rpc"
	"github.com/marblemesh/marblemesh/test/coordtest"
)

// A floor server does only part of what a Coordinator does for an
// activation, with the same libraries (crypto/tls, grpc-go), so its CPU
// time per connection bounds from below what a Coordinator built on them
// can reach on this machine.
type floorServer struct {
	name string // -floor-serve value
	desc string // row label in the report
	mesh bool   // gRPC mesh API (else a bare TLS handshake)
	kex  string // "default" (Go's preference, hybrid post-quantum first) or "x25519"
}

var floorServers = []floorServer{
	{name: "tls", desc: "TLS 1.3 handshake with a client certificate, nothing else; default key exchange (X25519MLKEM768)", kex: "default"},
	{name: "tls-x25519", desc: "the same handshake with classical X25519 key exchange", kex: "x25519"},
	{name: "mesh", desc: "the Coordinator's mesh API transport (TLS + gRPC, same options) answering Activate with a canned response of the real size", mesh: true, kex: "default"},
	{name: "mesh-x25519", desc: "the same transport with classical X25519 key exchange", mesh: true, kex: "x25519"},
}

func findFloorServer(name string) (floorServer, error) {
	for _, f := range floorServers {
		if f.name == name {
			return f, nil
		}
	}
	return floorServer{}, fmt.Errorf("unknown floor server %q", name)
}

// serveFloor runs a floor server on ln until ctx ends.
func serveFloor(ctx context.Context, name string, ln net.Listener, responseBytes int) error {
	f, err := findFloorServer(name)
	if err != nil {
		return err
	}
	cert, err := floorCertificate()
	if err != nil {
		return err
	}
	cfg := meshapi.TLSConfig(func() (*tls.Certificate, error) { return cert, nil })
	if f.kex == "x25519" {
		cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	if f.mesh {
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		srv := meshapi.NewServer(meshapi.NewService(cannedActivator(responseBytes), log), cfg, prometheus.NewRegistry(), meshapi.Timeouts{})
		defer srv.Stop()
		if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
			return err
		}
		return nil
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			tc := tls.Server(conn, cfg)
			_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
			_ = tc.Handshake()
			tc.Close()
		}()
	}
}

// serveFloorUntilEOF runs a floor server on addr until stdin ends (its
// parent, the benchmark, closed it or exited).
func serveFloorUntilEOF(name, addr string, responseBytes int) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	return serveFloor(ctx, name, ln, responseBytes)
}

// cannedActivator answers every activation with the same parameters,
// about responseBytes long when encoded.
type cannedActivator int

func (n cannedActivator) Activate(context.Context, core.ActivationRequest) (*core.Parameters, error) {
	return &core.Parameters{Env: map[string][]byte{"PAYLOAD": make([]byte, max(int(n)-16, 0))}}, nil
}

// floorCertificate is what the Coordinator's mesh API presents: the
// marble root certificate with the intermediate CA's key, made by pki.
func floorCertificate() (*tls.Certificate, error) {
	now := time.Now()
	root, err := pki.NewRoot([]string{"localhost"}, nil, now)
	if err != nil {
		return nil, err
	}
	intermediate, marbleRoot, err := pki.NewIntermediate(root, []string{"localhost"}, nil, now)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{marbleRoot.Raw}, PrivateKey: intermediate.Key, Leaf: marbleRoot}, nil
}

// responseSize activates one marble at mesh and returns the encoded size
// of the response.
func responseSize(mesh, marbleType string) (int, error) {
	id, err := coordtest.NewMarbleIdentity(elliptic.P256(), marbleType)
	if err != nil {
		return 0, err
	}
	params, err := activate(mesh, id, marbleType, uuid.NewString())
	if err != nil {
		return 0, fmt.Errorf("sizing the activation response: %w", err)
	}
	return proto.Size(&rpc.ActivationResp{Parameters: params}), nil
}

// runningFloor is a floor server started as a subprocess.
type runningFloor struct {
	floorServer
	addr  string
	cmd   *exec.Cmd
	stdin io.Closer
}

// startFloors starts every floor server, each in its own process; stop
// ends them.
func startFloors(responseBytes int) (floors []*runningFloor, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	stop = func() {
		for _, f := range floors {
			f.stdin.Close()
			_ = f.cmd.Wait()
		}
	}
	addrs, err := testsupport.PickAddrs(len(floorServers))
	if err != nil {
		return nil, nil, err
	}
	for i, f := range floorServers {
		addr := addrs[i]
		cmd := exec.Command(self, "-floor-serve", f.name, "-floor-addr", addr, "-floor-response", strconv.Itoa(responseBytes))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			stop()
			return nil, nil, err
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			stop()
			return nil, nil, fmt.Errorf("starting floor server %s: %w", f.name, err)
		}
		floors = append(floors, &runningFloor{floorServer: f, addr: addr, cmd: cmd, stdin: stdin})
		if err := waitListening(addr); err != nil {
			stop()
			return nil, nil, fmt.Errorf("floor server %s: %w", f.name, err)
		}
	}
	return floors, stop, nil
}

// measure runs one round against the floor server with P-256 marbles.
func (f *runningFloor) measure(o options) (result, error) {
	r, err := measure(f.cmd.Process.Pid, o.marbleType, elliptic.P256(), o.n, o.concurrency, func(id *coordtest.MarbleIdentity, uid string) error {
		if f.mesh {
			return activateOnce(f.addr, id, o.marbleType, uid)
		}
		return handshakeOnce(f.addr, id)
	})
	if err != nil {
		return result{}, fmt.Errorf("floor server %s: %w", f.name, err)
	}
	return r, nil
}

func (f *runningFloor) print(w io.Writer, r result) {
	fmt.Fprintf(w, "| %s | %.0f | %.2f | %.2f | %s |\n", f.desc, float64(r.n)/r.elapsed.Seconds(), ms(r.p50), ms(r.p99), cpuText(r))
}

func handshakeOnce(addr string, id *coordtest.MarbleIdentity) error {
	conn, err := tls.Dial("tcp", addr, id.ClientTLS())
	if err != nil {
		return err
	}
	return conn.Close()
}

func waitListening(addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
