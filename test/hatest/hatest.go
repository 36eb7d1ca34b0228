// Package hatest runs several Coordinator processes in distributed mode
// (the k8s-secret store) on one kube-apiserver of test/kubetest, in
// simulation, behind one client address: a Balancer in front of their
// client APIs and one in front of their mesh APIs. Tests kill and restart
// the processes under load and check what clients were told against what
// the shared state holds.
package hatest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/internal/coordinator/core"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/kubetest"
	"github.com/marblemesh/marblemesh/test/testsupport"
)

// Timeouts of the harness.
const (
	// StartTimeout bounds the start of one Coordinator process until its
	// client API answers.
	StartTimeout = 60 * time.Second
	// requestTimeout bounds one client API request.
	requestTimeout = 30 * time.Second
	// logTail is how many lines of each replica's log a failed test shows.
	logTail = 30
)

// Binary builds cmd/coordinator once for all the tests of a package.
type Binary struct {
	once sync.Once
	path string
	err  error
}

// Path returns the Coordinator binary, building it on first use. It skips
// t in -short mode, like the kube tests.
func (b *Binary) Path(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("hatest: skipping a test that runs Coordinators on a Kubernetes control plane in -short mode")
	}
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "hatest-bin-")
		if err != nil {
			b.err = err
			return
		}
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "github.com/marblemesh/marblemesh/cmd/coordinator")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build cmd/coordinator: %w\n%s", err, out)
			return
		}
		b.path = filepath.Join(dir, "coordinator")
	})
	if b.err != nil {
		t.Fatalf("hatest: %v", b.err)
	}
	return b.path
}

// Remove deletes the binary built by Path; call it from TestMain after
// m.Run.
func (b *Binary) Remove() {
	if b.path != "" {
		_ = os.RemoveAll(filepath.Dir(b.path))
	}
}

// Config describes a cluster of Coordinators.
type Config struct {
	// Bin is the Coordinator binary (Binary.Path).
	Bin string
	// Kube is the control plane; Namespace holds the state.
	Kube      *kubetest.Env
	Namespace string
	// StateName is the head Secret's name; empty means the default.
	StateName string
	// Replicas is the number of Coordinators; 0 means 3.
	Replicas int
	// StartupManifest, if set, is a manifest file every replica applies
	// at start.
	StartupManifest string
}

// Cluster is a set of Coordinator processes on one state.
type Cluster struct {
	Replicas []*Replica
	// Client balances the client APIs, Mesh the mesh APIs.
	Client, Mesh *Balancer
	cfg          Config
}

// New prepares the replicas, each with fixed loopback addresses it keeps
// across restarts, and the balancers in front of them. No process runs
// yet: see Start. Every process still running is killed when t ends.
func New(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.Replicas == 0 {
		cfg.Replicas = 3
	}
	if cfg.StateName == "" {
		cfg.StateName = store.DefaultKubeStateName
	}
	c := &Cluster{cfg: cfg}
	dir := t.TempDir()
	var clients, meshes []string
	// The replicas' ports stay held until the balancers listen, so that
	// no two of all these sockets share a port.
	addrs, release := testsupport.ReserveAddrs(t, 3*cfg.Replicas)
	for i := range cfg.Replicas {
		r := &Replica{
			Name:       fmt.Sprintf("coordinator-%d", i),
			ClientAddr: addrs[3*i],
			MeshAddr:   addrs[3*i+1],
			KeyAPIAddr: addrs[3*i+2],
			bin:        cfg.Bin,
			logPath:    filepath.Join(dir, fmt.Sprintf("coordinator-%d.log", i)),
		}
		r.env = []string{
			coordinator.EnvSimulation + "=1",
			coordinator.EnvDistributed + "=1",
			coordinator.EnvStoreBackend + "=" + coordinator.StoreK8sSecret,
			coordinator.EnvK8sNamespace + "=" + cfg.Namespace,
			coordinator.EnvK8sStateName + "=" + cfg.StateName,
			coordinator.EnvKubeconfig + "=" + cfg.Kube.Kubeconfig,
			coordinator.EnvClientAddr + "=" + r.ClientAddr,
			coordinator.EnvMeshAddr + "=" + r.MeshAddr,
			coordinator.EnvKeyAPIAddr + "=" + r.KeyAPIAddr,
			coordinator.EnvDNSNames + "=localhost,127.0.0.1",
		}
		if cfg.StartupManifest != "" {
			r.env = append(r.env, coordinator.EnvStartupManifest+"="+cfg.StartupManifest)
		}
		c.Replicas = append(c.Replicas, r)
		clients, meshes = append(clients, r.ClientAddr), append(meshes, r.MeshAddr)
	}
	c.Client = NewBalancer(t, clients...)
	c.Mesh = NewBalancer(t, meshes...)
	release()
	t.Cleanup(func() {
		for _, r := range c.Replicas {
			_ = r.Kill()
		}
		if t.Failed() {
			for _, r := range c.Replicas {
				t.Logf("hatest: last %d lines of %s:\n%s", logTail, r.Name, r.LogTail(logTail))
			}
		}
	})
	return c
}

// Start starts every replica at once and waits until each answers.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	errs := make(chan error, len(c.Replicas))
	for _, r := range c.Replicas {
		go func() { errs <- r.Start(t.Context()) }()
	}
	for range c.Replicas {
		if err := <-errs; err != nil {
			t.Fatalf("hatest: %v", err)
		}
	}
}

// Exits returns every exit of a replica that the test did not cause.
func (c *Cluster) Exits() []error {
	var out []error
	for _, r := range c.Replicas {
		out = append(out, r.Exits()...)
	}
	return out
}

// StoredActivations reads the stored state with the simulation sealer, as
// a Coordinator would, and returns its activation counts per marble type
// with MaxActivations.
func (c *Cluster) StoredActivations(ctx context.Context) (map[string]uint64, error) {
	st, err := store.OpenKube(store.KubeOptions{
		Client: c.cfg.Kube.Clientset, Namespace: c.cfg.Namespace, Name: c.cfg.StateName,
		Sealers: map[seal.Mode]seal.Sealer{seal.ModeProductKey: seal.SimulationSealer{}, seal.ModeUniqueKey: seal.SimulationSealer{}},
	})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	stored, err := st.Load(ctx)
	if err != nil {
		return nil, err
	}
	return core.StoredActivations(stored)
}

// Replica is one Coordinator process, which a test may kill and start
// again on the same addresses.
type Replica struct {
	Name                 string
	ClientAddr, MeshAddr string
	// KeyAPIAddr is where its key API listens (on loopback, like the others).
	KeyAPIAddr string
	bin        string
	env        []string
	logPath    string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current process has exited
	killing bool          // the test kills the current process
	exits   []error       // exits the test did not cause
	starts  int
}

// Start starts the process (it must not be running) and waits up to
// StartTimeout until its client API answers. Safe to call from any
// goroutine.
func (r *Replica) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.cmd != nil {
		r.mu.Unlock()
		return fmt.Errorf("%s is running already", r.Name)
	}
	logFile, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	r.starts++
	fmt.Fprintf(logFile, "--- start %d\n", r.starts)
	cmd := exec.Command(r.bin)
	cmd.Env = r.env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	done := make(chan struct{})
	started := make(chan error, 1)
	// The parent-death signal is tied to the thread that started the
	// process: that thread stays locked until the process has exited.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		logFile.Close()
		r.mu.Lock()
		if !r.killing {
			r.exits = append(r.exits, fmt.Errorf("%s exited by itself: %w", r.Name, err))
		}
		r.cmd, r.killing = nil, false
		r.mu.Unlock()
		close(done)
	}()
	if err := <-started; err != nil {
		logFile.Close()
		r.mu.Unlock()
		return fmt.Errorf("starting %s: %w", r.Name, err)
	}
	r.cmd, r.done = cmd, done
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	for {
		code, err := r.Status(ctx)
		if err == nil && code > 0 {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited before it answered:\n%s", r.Name, r.LogTail(logTail))
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer within %s (last: %w):\n%s", r.Name, StartTimeout, err, r.LogTail(logTail))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL to the process, if it runs, and waits for its exit.
func (r *Replica) Kill() error {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	if cmd == nil {
		r.mu.Unlock()
		return nil
	}
	r.killing = true
	r.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", r.Name, err)
	}
	<-done
	return nil
}

// Running reports whether the process runs.
func (r *Replica) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd != nil
}

// Exits returns the exits of this replica that the test did not cause.
func (r *Replica) Exits() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.exits...)
}

// Log returns everything the replica's processes wrote.
func (r *Replica) Log() string {
	raw, err := os.ReadFile(r.logPath)
	if err != nil {
		return err.Error()
	}
	return string(raw)
}

// LogTail returns the last n lines of Log.
func (r *Replica) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(r.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Status returns the status code the replica's client API answers.
func (r *Replica) Status(ctx context.Context) (int, error) {
	resp, err := NewClient(r.ClientAddr, nil).Do(ctx, http.MethodGet, "/api/v2/status", nil)
	if err != nil {
		return 0, err
	}
	if resp.Code != http.StatusOK {
		return 0, fmt.Errorf("status: %d %s", resp.Code, resp.Message)
	}
	var s struct {
		Code int `json:"code"`
	}
	if err := json.Unmarshal(resp.Data, &s); err != nil {
		return 0, fmt.Errorf("status: %w", err)
	}
	return s.Code, nil
}

// Root returns the root certificate that the replica's client API
// presents (the Coordinator's root CA), trusted on first use.
func (r *Replica) Root(ctx context.Context) (*x509.Certificate, error) {
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // trust on first use: the caller compares the root it gets
	conn, err := d.DialContext(ctx, "tcp", r.ClientAddr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s presented no certificate", r.Name)
	}
	return certs[0], nil
}

// Client sends requests to a client API, one connection per request, so
// that each request through a Balancer reaches the next replica.
type Client struct {
	addr string
	http *http.Client
}

// NewClient returns a client of the client API at addr that trusts root
// (or, if root is nil, any certificate) and presents certs.
func NewClient(addr string, root *x509.Certificate, certs ...tls.Certificate) *Client {
	cfg := &tls.Config{Certificates: certs, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if root == nil {
		cfg.InsecureSkipVerify = true //nolint:gosec // only for status and readiness, which carry nothing secret
	} else {
		cfg.RootCAs = x509.NewCertPool()
		cfg.RootCAs.AddCert(root)
	}
	return &Client{addr: addr, http: &http.Client{
		Timeout:   requestTimeout,
		Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true},
	}}
}

// Do sends a request and decodes the JSend answer. An error means that no
// answer came (the connection failed or broke).
func (c *Client) Do(ctx context.Context, method, path string, body []byte) (coordtest.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "https://"+c.addr+path, bytes.NewReader(body))
	if err != nil {
		return coordtest.Response{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return coordtest.Response{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return coordtest.Response{}, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	out := coordtest.Response{Code: resp.StatusCode}
	if err := json.Unmarshal(raw, &out); err != nil {
		return coordtest.Response{}, fmt.Errorf("%s %s: the answer is not JSON: %q", method, path, raw)
	}
	return out, nil
}
