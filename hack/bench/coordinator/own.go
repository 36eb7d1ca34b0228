package main

import (
	"bytes"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/marblemesh/marblemesh/test/testsupport"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/internal/coordinator"
)

// coordinatorProc is a Coordinator started as a subprocess.
type coordinatorProc struct {
	cmd    *exec.Cmd
	mesh   string
	client *http.Client
	base   string
	// roots holds the Coordinator's root certificate, once pinned.
	roots *x509.CertPool
}

func runOwn(o options) error {
	tmp, err := os.MkdirTemp("", "coordinator-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err := buildCoordinator(tmp)
	if err != nil {
		return err
	}
	w := o.out
	manifest := benchManifest(o.marbleType)

	var speed []string
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		sign, verify, err := signatureCosts(curve)
		if err != nil {
			return err
		}
		speed = append(speed, fmt.Sprintf("%s signature %.3f ms, verification %.3f ms", curve.Params().Name, ms(sign), ms(verify)))
	}
	fmt.Fprintf(w, "The machine's speed during this run, one goroutine, ECDSA: %s.\n\n", strings.Join(speed, "; "))

	c, err := startWithManifest(bin, filepath.Join(tmp, "a"), manifest)
	if err != nil {
		return err
	}
	defer c.stop()
	pid := c.cmd.Process.Pid
	size, err := responseSize(c.mesh, o.marbleType)
	if err != nil {
		return err
	}
	floors, stopFloors, err := startFloors(size)
	if err != nil {
		return err
	}
	defer stopFloors()
	// Rounds alternate between the Coordinator and the floor servers, so
	// that a change in the machine's speed during the run (it shares its
	// host) affects all of them alike.
	coordRounds := make([][]result, len(o.curves))
	floorRounds := make([][]result, len(floors))
	for range max(o.rounds, 1) {
		for i, curve := range o.curves {
			r, err := activations(c.mesh, pid, o.marbleType, curve, o.n, o.concurrency)
			if err != nil {
				return err
			}
			coordRounds[i] = append(coordRounds[i], r)
		}
		for i, f := range floors {
			r, err := f.measure(o)
			if err != nil {
				return err
			}
			floorRounds[i] = append(floorRounds[i], r)
		}
	}
	stopFloors()

	fmt.Fprintf(w, "### Marble activation (%d concurrent marbles, one TLS connection per activation)\n\n", o.concurrency)
	if o.rounds > 1 {
		fmt.Fprintf(w, "Each row is the median of %d rounds by CPU time; the rounds alternate with those of the servers in the next table.\n\n", o.rounds)
	}
	fmt.Fprintln(w, "| marble key | activations | errors | activations/s | p50 ms | p99 ms | Coordinator CPU ms/activation |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for i, curve := range o.curves {
		median(coordRounds[i]).print(w, curve)
	}
	fmt.Fprintln(w)

	own, err := ownWork(o.marbleType)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "### Where the Coordinator's CPU time goes (P-256 marbles, %d concurrent)\n\n", o.concurrency)
	fmt.Fprintf(w, "Its own work, without TLS and gRPC (the core activating one marble after another in one goroutine, logging and metrics included): %.3f ms, %d allocations, %d bytes per activation.\n\n",
		ms(time.Duration(own.NsPerOp())), own.AllocsPerOp(), own.AllocedBytesPerOp())
	fmt.Fprintf(w, "The rest is the transport. The servers below do only part of a Coordinator's work, each in its own process, measured like the Coordinator above (same load generator, same marble identities, median round); their CPU time per connection bounds from below what a Coordinator built on Go's crypto/tls and grpc-go can reach on this machine. The canned response is %d bytes, the size of the Coordinator's answer.\n\n", size)
	fmt.Fprintln(w, "| server | connections/s | p50 ms | p99 ms | server CPU ms/connection |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for i, f := range floors {
		f.print(w, median(floorRounds[i]))
	}
	fmt.Fprintln(w)

	if o.steadyN > 0 {
		// The Coordinator above has activated the marbles of every round
		// and one more; it now activates steadyN more, untimed, and is
		// then compared with a freshly started one in alternating rounds,
		// so that the machine's drift affects both alike.
		const window = 2000
		aged := 1 // responseSize's
		for _, rounds := range coordRounds {
			for _, r := range rounds {
				aged += r.n
			}
		}
		for done := 0; done < o.steadyN; done += window {
			n := min(window, o.steadyN-done)
			if _, err := activations(c.mesh, 0, o.marbleType, elliptic.P256(), n, o.concurrency); err != nil {
				return err
			}
			aged += n
		}
		fresh, err := startWithManifest(bin, filepath.Join(tmp, "fresh"), manifest)
		if err != nil {
			return err
		}
		defer fresh.stop()
		const warmUp = 10
		if _, err := activations(fresh.mesh, 0, o.marbleType, elliptic.P256(), warmUp, 1); err != nil {
			return err
		}
		var agedRounds, freshRounds []result
		for range max(o.rounds, 1) {
			r, err := activations(c.mesh, pid, o.marbleType, elliptic.P256(), window, o.concurrency)
			if err != nil {
				return err
			}
			agedRounds = append(agedRounds, r)
			if r, err = activations(fresh.mesh, fresh.cmd.Process.Pid, o.marbleType, elliptic.P256(), window, o.concurrency); err != nil {
				return err
			}
			freshRounds = append(freshRounds, r)
		}
		fresh.stop()
		fmt.Fprintf(w, "### Cost per activation after %d activations (P-256 marbles)\n\n", aged)
		fmt.Fprintf(w, "The Coordinator of the rounds above, after %d activations, and a freshly started one, after its first %d, measured in alternating rounds of %d activations; each row is the median of %d rounds.\n\n", aged, warmUp, window, max(o.rounds, 1))
		fmt.Fprintln(w, "| Coordinator | activations/s | p99 ms | Coordinator CPU ms/activation |")
		fmt.Fprintln(w, "|---|---:|---:|---:|")
		for _, row := range []struct {
			name   string
			rounds []result
		}{{fmt.Sprintf("after %d activations", aged), agedRounds}, {fmt.Sprintf("fresh, after %d", warmUp), freshRounds}} {
			r := median(row.rounds)
			fmt.Fprintf(w, "| %s | %.0f | %.2f | %s |\n", row.name, float64(r.n)/r.elapsed.Seconds(), ms(r.p99), cpuText(r))
		}
		fmt.Fprintln(w)
	}
	c.stop()

	fmt.Fprintln(w, "### Memory")
	fmt.Fprintln(w)
	c2, err := startWithManifest(bin, filepath.Join(tmp, "b"), manifest)
	if err != nil {
		return err
	}
	defer c2.stop()
	before, err := rss(c2.cmd.Process.Pid)
	if err != nil {
		return err
	}
	if _, err := activations(c2.mesh, 0, o.marbleType, elliptic.P256(), o.rssMarbles, o.concurrency); err != nil {
		return err
	}
	after, err := rss(c2.cmd.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Coordinator RSS after the manifest: %.1f MB; after activating %d distinct marbles: %.1f MB.\n\n", mb(before), o.rssMarbles, mb(after))
	c2.stop()

	fmt.Fprintln(w, "### Setting a large manifest")
	fmt.Fprintln(w)
	c3, err := startCoordinator(bin, filepath.Join(tmp, "c"))
	if err != nil {
		return err
	}
	defer c3.stop()
	large := largeManifest(1000, 1000)
	t0 := time.Now()
	if err := c3.setManifest(large); err != nil {
		return err
	}
	fmt.Fprintf(w, "A manifest with 1,000 marbles and 1,000 secrets (%d KiB; 400 shared symmetric keys, 400 per-marble symmetric keys, 100 shared ECDSA P-256 certificates, 100 user-defined) is set in %.0f ms, request included.\n\n",
		len(large)/1024, ms(time.Since(t0)))
	return nil
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// buildCoordinator builds ./cmd/coordinator into dir.
func buildCoordinator(dir string) (string, error) {
	bin := filepath.Join(dir, "coordinator")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/coordinator")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building the Coordinator: %w", err)
	}
	return bin, nil
}

// startWithManifest starts a Coordinator and sets manifest.
func startWithManifest(bin, sealDir string, manifest []byte) (*coordinatorProc, error) {
	c, err := startCoordinator(bin, sealDir)
	if err != nil {
		return nil, err
	}
	if err := c.setManifest(manifest); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// startCoordinator starts a Coordinator on the file store in sealDir.
func startCoordinator(bin, sealDir string) (*coordinatorProc, error) {
	addrs, err := testsupport.PickAddrs(2)
	if err != nil {
		return nil, err
	}
	return startCoordinatorAt(bin, addrs[0], addrs[1], coordinator.EnvSealDir+"="+sealDir)
}

// startCoordinatorAt starts a Coordinator in simulation with its mesh and
// client APIs on the given addresses and the store settings env, and waits
// for its client API.
func startCoordinatorAt(bin, mesh, client string, env ...string) (*coordinatorProc, error) {
	c, err := launchCoordinator(bin, mesh, client, env...)
	if err != nil {
		return nil, err
	}
	if err := c.pin(); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// launchCoordinator starts the process of startCoordinatorAt without
// waiting for it.
func launchCoordinator(bin, mesh, client string, env ...string) (*coordinatorProc, error) {
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		coordinator.EnvSimulation+"=1",
		coordinator.EnvMeshAddr+"="+mesh,
		coordinator.EnvClientAddr+"="+client,
		coordinator.EnvDNSNames+"=localhost",
		fmt.Sprintf("GOMAXPROCS=%d", runtime.NumCPU()),
	)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout = io.Discard
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the Coordinator: %w", err)
	}
	return &coordinatorProc{cmd: cmd, mesh: mesh, base: "https://" + client}, nil
}

// pin waits for the client API and trusts the root it serves; the
// Coordinator runs in simulation, so there is no quote to verify.
func (c *coordinatorProc) pin() error {
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := insecure.Get(c.base + "/api/v2/quote")
		if err == nil {
			var q struct {
				Data struct {
					Cert string `json:"cert"`
				} `json:"data"`
			}
			err = json.NewDecoder(resp.Body).Decode(&q)
			resp.Body.Close()
			if err == nil {
				root, _, perr := api.ParseCertificateChain([]byte(q.Data.Cert))
				if perr != nil {
					return fmt.Errorf("quote response: %w", perr)
				}
				pool := x509.NewCertPool()
				pool.AddCert(root)
				c.roots = pool
				c.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the Coordinator did not answer: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *coordinatorProc) setManifest(raw []byte) error {
	body, _ := json.Marshal(map[string]string{"manifest": base64.StdEncoding.EncodeToString(raw)})
	resp, err := c.client.Post(c.base+"/api/v2/manifest", "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("setting manifest: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("setting manifest: %s: %s", resp.Status, msg)
	}
	return nil
}

func (c *coordinatorProc) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}
