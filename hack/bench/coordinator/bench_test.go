package main

import (
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/marblemesh/marblemesh/rpc"
	"github.com/marblemesh/marblemesh/test/coordtest"
)

// TestMain lets the test binary stand in for the benchmark when it starts
// itself as a floor server.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-floor-serve" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestStartFloors starts every floor server as a subprocess, measures a
// short round against each and checks that stop ends them.
func TestStartFloors(t *testing.T) {
	floors, stop, err := startFloors(4280)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if len(floors) != len(floorServers) {
		t.Fatalf("started %d floor servers, want %d", len(floors), len(floorServers))
	}
	o := options{marbleType: "bench", n: 4, concurrency: 2}
	for _, f := range floors {
		r, err := f.measure(o)
		if err != nil {
			t.Fatal(err)
		}
		if r.n != 4 || r.errors != 0 || !r.cpuMeasure {
			t.Errorf("%s: %d connections, %d errors, CPU measured %v; want 4, 0, true", f.name, r.n, r.errors, r.cpuMeasure)
		}
	}
	stop()
	for _, f := range floors {
		if f.cmd.ProcessState == nil {
			t.Errorf("floor server %s still runs after stop", f.name)
		}
	}
}

func TestParseCurves(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: "P-256,P-384", want: []string{"P-256", "P-384"}},
		{in: " P-521 ", want: []string{"P-521"}},
		{in: "P-256,X25519", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseCurves(tt.in)
		if (err != nil) != tt.wantErr {
			t.Fatalf("parseCurves(%q) error = %v, want error: %v", tt.in, err, tt.wantErr)
		}
		if tt.wantErr {
			continue
		}
		if len(got) != len(tt.want) {
			t.Fatalf("parseCurves(%q) = %d curves, want %d", tt.in, len(got), len(tt.want))
		}
		for i, c := range got {
			if c.Params().Name != tt.want[i] {
				t.Errorf("parseCurves(%q)[%d] = %s, want %s", tt.in, i, c.Params().Name, tt.want[i])
			}
		}
	}
}

// startFloor runs a floor server in this process until the test ends.
func startFloor(t *testing.T, name string, responseBytes int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveFloor(ctx, name, ln, responseBytes) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("floor server %s: %v", name, err)
		}
	})
	return ln.Addr().String()
}

// TestFloorServers checks that each floor server does what its row in the
// report says: the key exchange it negotiates with a marble's TLS client,
// and for the mesh servers an Activate answer of the requested size.
func TestFloorServers(t *testing.T) {
	id, err := coordtest.NewMarbleIdentity(elliptic.P256(), "bench")
	if err != nil {
		t.Fatal(err)
	}
	const size = 4280
	for _, f := range floorServers {
		t.Run(f.name, func(t *testing.T) {
			addr := startFloor(t, f.name, size)
			conn, err := tls.Dial("tcp", addr, id.ClientTLS())
			if err != nil {
				t.Fatal(err)
			}
			want := tls.X25519MLKEM768
			if f.kex == "x25519" {
				want = tls.X25519
			}
			if got := conn.ConnectionState().CurveID; got != want {
				t.Errorf("key exchange = %v, want %v", got, want)
			}
			conn.Close()

			if f.mesh {
				params, err := activate(addr, id, "bench", uuid.NewString())
				if err != nil {
					t.Fatal(err)
				}
				if got := proto.Size(&rpc.ActivationResp{Parameters: params}); got < size-8 || got > size+8 {
					t.Errorf("response size = %d bytes, want about %d", got, size)
				}
			}

			r, err := measure(os.Getpid(), "bench", elliptic.P256(), 8, 2, func(id *coordtest.MarbleIdentity, uid string) error {
				if f.mesh {
					return activateOnce(addr, id, "bench", uid)
				}
				return handshakeOnce(addr, id)
			})
			if err != nil {
				t.Fatal(err)
			}
			if r.n != 8 || r.errors != 0 || !r.cpuMeasure {
				t.Errorf("measure = %d connections, %d errors, CPU measured %v; want 8, 0, true", r.n, r.errors, r.cpuMeasure)
			}
		})
	}
}

func TestFloorServerUnknown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := serveFloor(context.Background(), "quic", ln, 10); err == nil {
		t.Fatal("an unknown floor server started")
	}
}

func TestOwnWork(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a one-second benchmark")
	}
	r, err := ownWork("bench")
	if err != nil {
		t.Fatal(err)
	}
	if r.N == 0 || r.NsPerOp() <= 0 || r.AllocsPerOp() == 0 {
		t.Errorf("ownWork = %d activations, %d ns each, %d allocations; want some of each", r.N, r.NsPerOp(), r.AllocsPerOp())
	}
}

func TestMedianRound(t *testing.T) {
	cpu := []time.Duration{5, 1, 9, 3, 7}
	i := 0
	r, err := medianRound(len(cpu), func() (result, error) {
		r := result{n: i, cpuMeasure: true, cpuPerAct: cpu[i]}
		i++
		return r, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if i != len(cpu) || r.cpuPerAct != 5 {
		t.Errorf("medianRound ran %d rounds and chose CPU %v, want 5 rounds and 5", i, r.cpuPerAct)
	}
	if _, err := medianRound(3, func() (result, error) { return result{}, os.ErrClosed }); err == nil {
		t.Error("medianRound hid a failed round")
	}
	r, _ = medianRound(0, func() (result, error) { return result{p50: 4}, nil })
	if r.p50 != 4 {
		t.Errorf("medianRound(0) = %+v, want one round", r)
	}
}

func TestSignatureCosts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two one-second benchmarks")
	}
	sign, verify, err := signatureCosts(elliptic.P256())
	if err != nil {
		t.Fatal(err)
	}
	if sign <= 0 || verify <= 0 {
		t.Errorf("signatureCosts = %v, %v; want both positive", sign, verify)
	}
}
