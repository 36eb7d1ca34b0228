package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"github.com/marblemesh/marblemesh/test/testsupport"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/hatest"
	"github.com/marblemesh/marblemesh/test/kubetest"
)

// haOptions size the section on several Coordinators.
type haOptions struct {
	replicas int // Coordinators of the replicated configuration
	n        int // activations without MaxActivations per round
	limited  int // limited activations per round
	secrets  int // secret sets per round
	writeC   int // concurrent clients of limited activations and secret sets
	kills    int // SIGKILLs in the failover run
	// limit ends each measured run of one kind early: no operation
	// starts after it.
	limit time.Duration
}

const (
	// haNamespace holds the states of both configurations.
	haNamespace = "coordinator-bench"
	// haUser is the manifest user who sets the secret.
	haUser = "bench-user"
	// failoverWarmUp is how long the load runs before a kill.
	failoverWarmUp = 500 * time.Millisecond
	// failoverSettle is how long the load runs after a kill at least.
	failoverSettle = 200 * time.Millisecond
	// failoverTimeout bounds the wait for every marble to activate after
	// a kill, and for a restarted replica to serve.
	failoverTimeout = 60 * time.Second
	// marbleRetryPause is how long a marble whose activation failed waits
	// before it tries again.
	marbleRetryPause = 10 * time.Millisecond
)

// haSetup is one configuration under test: Coordinators in distributed
// mode on one state, and the addresses marbles and users reach them at
// (the balancers' when there are several).
type haSetup struct {
	name     string
	bin      string
	env      []string // store settings of every replica
	meshAddr []string // per replica
	client   []string // per replica
	keyAPI   []string // per replica
	replicas []*coordinatorProc
	mesh     string
	base     string
	user     *http.Client
	lbs      []*hatest.Balancer
}

func (s *haSetup) pids() []int {
	out := make([]int, len(s.replicas))
	for i, r := range s.replicas {
		out[i] = r.cmd.Process.Pid
	}
	return out
}

func (s *haSetup) stop() {
	for _, lb := range s.lbs {
		lb.Close()
	}
	for _, r := range s.replicas {
		r.stop()
	}
}

// replicaEnv is the environment of replica i: the setup's and its own
// key API address on loopback, kept across restarts.
func (s *haSetup) replicaEnv(i int) []string {
	return append(slices.Clone(s.env), coordinator.EnvKeyAPIAddr+"="+s.keyAPI[i])
}

// startHASetup starts n Coordinators on the state stateName: the first
// sets the manifest, the others then join the stored state. With n > 1
// the replicas are reached through a balancer per API.
func startHASetup(bin, name string, n int, kubeconfig, stateName, marbleType string, manifest []byte, user tls.Certificate) (*haSetup, error) {
	s := &haSetup{name: name, bin: bin, env: []string{
		coordinator.EnvDistributed + "=1",
		coordinator.EnvStoreBackend + "=" + coordinator.StoreK8sSecret,
		coordinator.EnvK8sNamespace + "=" + haNamespace,
		coordinator.EnvK8sStateName + "=" + stateName,
		coordinator.EnvKubeconfig + "=" + kubeconfig,
	}}
	addrs, err := testsupport.PickAddrs(3 * n)
	if err != nil {
		return nil, err
	}
	for i := range n {
		s.meshAddr = append(s.meshAddr, addrs[3*i])
		s.client = append(s.client, addrs[3*i+1])
		s.keyAPI = append(s.keyAPI, addrs[3*i+2])
	}
	for i := range n {
		c, err := startCoordinatorAt(bin, s.meshAddr[i], s.client[i], s.replicaEnv(i)...)
		if err != nil {
			s.stop()
			return nil, fmt.Errorf("%s, replica %d: %w", name, i+1, err)
		}
		s.replicas = append(s.replicas, c)
		if i == 0 {
			if err := c.setManifest(manifest); err != nil {
				s.stop()
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		if _, err := waitActivation(c.mesh, marbleType, failoverTimeout); err != nil {
			s.stop()
			return nil, fmt.Errorf("%s, replica %d: %w", name, i+1, err)
		}
	}
	s.mesh, s.base = s.meshAddr[0], "https://"+s.client[0]
	if n > 1 {
		for _, addrs := range [][]string{s.meshAddr, s.client} {
			lb, err := hatest.StartBalancer(addrs...)
			if err != nil {
				s.stop()
				return nil, err
			}
			s.lbs = append(s.lbs, lb)
		}
		s.mesh, s.base = s.lbs[0].Addr(), "https://"+s.lbs[1].Addr()
	}
	s.user = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		// One connection per request, as a CLI command opens it, so that
		// the balancer spreads requests over the replicas.
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: s.replicas[0].roots, ServerName: "localhost", Certificates: []tls.Certificate{user}},
	}}
	return s, nil
}

// setSecret sets the user-defined secret to a value derived from i.
func (s *haSetup) setSecret(i int) error {
	key := make([]byte, 32)
	copy(key, strconv.Itoa(i))
	body, _ := json.Marshal(map[string]any{"secrets": map[string]any{haUserSecret: map[string]any{"Key": key}}})
	resp, err := s.user.Post(s.base+"/api/v2/secrets", "application/json", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("setting the secret: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("setting the secret: %s: %s", resp.Status, msg)
	}
	return nil
}

// waitActivation activates a marble of type marbleType at mesh every
// 20 ms until one succeeds, and returns how long that took.
func waitActivation(mesh, marbleType string, timeout time.Duration) (time.Duration, error) {
	id, err := coordtest.NewMarbleIdentity(elliptic.P256(), marbleType)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	for {
		err := activateOnce(mesh, id, marbleType, uuid.NewString())
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("no activation at %s within %s: %w", mesh, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newBenchUser returns a client certificate for the manifest user and its
// PEM for the manifest.
func newBenchUser(name string) (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("creating the user certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

// controlPlanePIDs returns the processes whose command line names dir:
// the API server and etcd of a kubetest control plane in dir.
func controlPlanePIDs(dir string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // ended meanwhile
		}
		for _, arg := range strings.Split(string(raw), "\x00") {
			if strings.Contains(arg, dir) {
				pids = append(pids, pid)
				break
			}
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no process names %s", dir)
	}
	return pids, nil
}

// haRounds holds the rounds of one configuration.
type haRounds struct {
	plain, limited, secrets []result
}

func runHA(o options) error {
	tmp, err := os.MkdirTemp("", "coordinator-ha-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err := buildCoordinator(tmp)
	if err != nil {
		return err
	}
	env, stopKube, err := kubetest.StartCommand()
	if err != nil {
		return fmt.Errorf("starting the Kubernetes control plane: %w", err)
	}
	defer stopKube()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := env.Clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: haNamespace}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating namespace %s: %w", haNamespace, err)
	}
	apiPids, err := controlPlanePIDs(env.Dir)
	if err != nil {
		return fmt.Errorf("finding the API server's processes: %w", err)
	}
	user, userPEM, err := newBenchUser(haUser)
	if err != nil {
		return err
	}
	manifest := haManifest(o.marbleType, haUser, userPEM)
	h := o.ha

	single, err := startHASetup(bin, "1 Coordinator", 1, env.Kubeconfig, "single", o.marbleType, manifest, user)
	if err != nil {
		return err
	}
	defer single.stop()
	replicated, err := startHASetup(bin, fmt.Sprintf("%d replicas", h.replicas), h.replicas, env.Kubeconfig, "replicated", o.marbleType, manifest, user)
	if err != nil {
		return err
	}
	defer replicated.stop()
	setups := []*haSetup{single, replicated}
	w := o.out

	fmt.Fprintf(w, "### %d Coordinators against 1 (distributed mode)\n\n", h.replicas)
	fmt.Fprintf(w, "go run ./hack/bench/coordinator -ha. One kube-apiserver with etcd on loopback (test/kubetest, etcd without fsync) holds two states in Secrets, each served by Coordinators built from ./cmd/coordinator in simulation with %s=1 and the %s store: 1 Coordinator, and %d replicas behind two loopback round-robin TCP balancers (one for the mesh API, one for the client API) that stand for the Services. A balancer skips a replica that refuses the connection, like a Service whose endpoints no longer list a dead Pod; the time Kubernetes takes to notice a dead Pod is not included. The manifest is the benchmark manifest above plus the same marble type with MaxActivations (never reached) and a user who may write one user-defined secret. Rounds alternate between the two configurations; each row is the median of %d rounds by Coordinator CPU time, summed over the replicas and read from /proc like the API server's (kube-apiserver and etcd together). Activations without MaxActivations come from %d concurrent marbles with P-256 keys, one TLS connection each; limited activations and secret sets (POST /api/v2/secrets by the user, one HTTPS connection each) from %d concurrent clients. A run ends after %d, %d and %d operations of these kinds%s. Each limited activation and secret set commits to the API server (compare-and-swap on the state's head Secret); with several replicas the others read the new state through their watch, and their CPU time counts.\n\n",
		coordinator.EnvDistributed, coordinator.StoreK8sSecret, h.replicas, max(o.rounds, 1), o.concurrency, h.writeC, h.n, h.limited, h.secrets, limitText(h.limit))

	if o.rssMarbles > 0 {
		if err := haMemory(w, bin, filepath.Join(tmp, "file"), manifest, o, setups); err != nil {
			return err
		}
	}

	rounds := make([]haRounds, len(setups))
	for range max(o.rounds, 1) {
		for i, s := range setups {
			r, err := s.round(o, apiPids)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			rounds[i].plain = append(rounds[i].plain, r.plain...)
			rounds[i].limited = append(rounds[i].limited, r.limited...)
			rounds[i].secrets = append(rounds[i].secrets, r.secrets...)
		}
	}
	printHARounds(w, setups, rounds, h)

	if h.kills > 0 {
		var results []failoverResult
		for k := range h.kills {
			r, err := replicated.failover(k%len(replicated.replicas), o.concurrency, o.marbleType)
			if err != nil {
				return fmt.Errorf("failover %d: %w", k+1, err)
			}
			results = append(results, r)
		}
		printFailover(w, results, o.concurrency)
	}
	return nil
}

// round measures each kind of operation once.
func (s *haSetup) round(o options, apiPids []int) (haRounds, error) {
	var out haRounds
	h := o.ha
	if h.n > 0 {
		l := load{n: h.n, c: o.concurrency, pids: s.pids(), apiPids: apiPids, limit: h.limit}
		r, err := measureMarbles(l, o.marbleType, elliptic.P256(), func(id *coordtest.MarbleIdentity, uid string) error {
			return activateOnce(s.mesh, id, o.marbleType, uid)
		})
		if err != nil {
			return out, fmt.Errorf("activations: %w", err)
		}
		out.plain = append(out.plain, r)
	}
	if h.limited > 0 {
		l := load{n: h.limited, c: h.writeC, pids: s.pids(), apiPids: apiPids, limit: h.limit}
		r, err := measureMarbles(l, haLimitedType, elliptic.P256(), func(id *coordtest.MarbleIdentity, uid string) error {
			return activateOnce(s.mesh, id, haLimitedType, uid)
		})
		if err != nil {
			return out, fmt.Errorf("limited activations: %w", err)
		}
		out.limited = append(out.limited, r)
	}
	if h.secrets > 0 {
		l := load{n: h.secrets, c: h.writeC, pids: s.pids(), apiPids: apiPids, limit: h.limit}
		r, err := measureOps(l, s.setSecret)
		if err != nil {
			return out, fmt.Errorf("secret sets: %w", err)
		}
		out.secrets = append(out.secrets, r)
	}
	return out, nil
}

func printHARounds(w io.Writer, setups []*haSetup, rounds []haRounds, h haOptions) {
	fmt.Fprintln(w, "| operation | Coordinators | operations | errors | per s | p50 ms | p99 ms | Coordinator CPU ms/operation | API server CPU ms/operation |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	kinds := []struct {
		name string
		of   func(haRounds) []result
	}{
		{"activation without MaxActivations", func(r haRounds) []result { return r.plain }},
		{"activation with MaxActivations", func(r haRounds) []result { return r.limited }},
		{"secret set", func(r haRounds) []result { return r.secrets }},
	}
	var ratios, failures []string
	for _, k := range kinds {
		var med []result
		for i, s := range setups {
			rs := k.of(rounds[i])
			if len(rs) == 0 {
				continue
			}
			r := median(rs)
			med = append(med, r)
			api := "n/a"
			if r.apiMeasure {
				api = fmt.Sprintf("%.3f", ms(r.apiPerOp))
			}
			fmt.Fprintf(w, "| %s | %s | %d | %d | %.0f | %.2f | %.2f | %s | %s |\n",
				k.name, s.name, r.n, r.errors, float64(r.n)/r.elapsed.Seconds(), ms(r.p50), ms(r.p99), cpuText(r), api)
			if r.firstErr != nil {
				failures = append(failures, fmt.Sprintf("%s, %s: %v", k.name, s.name, r.firstErr))
			}
		}
		if len(med) == 2 {
			one, many := med[0], med[1]
			ratios = append(ratios, fmt.Sprintf("%s: operations/s ×%.2f, Coordinator CPU per operation ×%.2f, p50 ×%.2f, p99 ×%.2f",
				k.name, rate(many)/rate(one), ratio(many.cpuPerAct, one.cpuPerAct), ratio(many.p50, one.p50), ratio(many.p99, one.p99)))
		}
	}
	fmt.Fprintln(w)
	if len(failures) > 0 {
		fmt.Fprintf(w, "First error of each row with errors (of its median round): %s.\n\n", strings.Join(failures, "; "))
	}
	if len(ratios) > 0 {
		fmt.Fprintf(w, "%d replicas against 1: %s.\n\n", h.replicas, strings.Join(ratios, "; "))
	}
}

// limitText completes the sentence on when a run ends.
func limitText(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fmt.Sprintf(", or when %s have passed: no operation starts later, and the operations column shows how many ran", d)
}

func rate(r result) float64 { return float64(r.n) / r.elapsed.Seconds() }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// haMemory measures the resident memory of a Coordinator on the file
// store and of every Coordinator of setups before and after
// o.rssMarbles distinct marbles activated through each configuration.
func haMemory(w io.Writer, bin, sealDir string, manifest []byte, o options, setups []*haSetup) error {
	type row struct {
		name          string
		before, after int64
	}
	var rows []row
	file, err := startWithManifest(bin, sealDir, manifest)
	if err != nil {
		return err
	}
	defer file.stop()
	fill := func(mesh string, procs []*coordinatorProc, names []string) error {
		before := make([]int64, len(procs))
		for i, p := range procs {
			b, err := rss(p.cmd.Process.Pid)
			if err != nil {
				return err
			}
			before[i] = b
		}
		if _, err := activations(mesh, 0, o.marbleType, elliptic.P256(), o.rssMarbles, o.concurrency); err != nil {
			return err
		}
		for i, p := range procs {
			after, err := rss(p.cmd.Process.Pid)
			if err != nil {
				return err
			}
			rows = append(rows, row{names[i], before[i], after})
		}
		return nil
	}
	if err := fill(file.mesh, []*coordinatorProc{file}, []string{"1 Coordinator, file store"}); err != nil {
		return err
	}
	file.stop()
	for _, s := range setups {
		names := []string{s.name + ", " + coordinator.StoreK8sSecret}
		if len(s.replicas) > 1 {
			names = names[:0]
			for i := range s.replicas {
				names = append(names, fmt.Sprintf("%s: replica %d", s.name, i+1))
			}
		}
		if err := fill(s.mesh, s.replicas, names); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	fmt.Fprintf(w, "Resident memory of each Coordinator after the manifest and after %d distinct marbles activated through its configuration (with several replicas the balancer spreads them; every replica holds the whole state), measured first, on freshly started Coordinators:\n\n", o.rssMarbles)
	fmt.Fprintf(w, "| Coordinator | RSS after the manifest MB | RSS after %d marbles MB |\n", o.rssMarbles)
	fmt.Fprintln(w, "|---|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %.1f | %.1f |\n", r.name, mb(r.before), mb(r.after))
	}
	fmt.Fprintln(w)
	return nil
}

// loadEvent is one activation attempt of the failover load.
type loadEvent struct {
	worker     int
	start, end time.Time
	ok         bool
}

// failoverResult is what one kill cost the marbles.
type failoverResult struct {
	// next is the time from the kill to the end of the first successful
	// activation that began after it.
	next time.Duration
	// longest is the time from the kill until every marble had activated
	// once after it: the longest any marble waited.
	longest time.Duration
	// failed counts the activations that failed after the kill.
	failed int
	// restart is the time from starting the killed replica again to its
	// first activation.
	restart time.Duration
}

// summarizeFailover computes a kill's result from the load's attempts,
// and reports whether it is complete: an activation that began after the
// kill succeeded, and each of the workers completed one after the kill.
// A failure before the kill is an error.
func summarizeFailover(kill time.Time, events []loadEvent, workers int) (failoverResult, bool, error) {
	var r failoverResult
	firstOK := make(map[int]time.Time, workers)
	haveNext := false
	for _, e := range events {
		switch {
		case !e.ok && e.end.Before(kill):
			return r, false, fmt.Errorf("an activation failed %s before the kill", kill.Sub(e.end).Round(time.Millisecond))
		case !e.ok:
			r.failed++
		case e.end.After(kill):
			if t, seen := firstOK[e.worker]; !seen || e.end.Before(t) {
				firstOK[e.worker] = e.end
			}
			if !e.start.Before(kill) && (!haveNext || e.end.Sub(kill) < r.next) {
				r.next, haveNext = e.end.Sub(kill), true
			}
		}
	}
	for _, t := range firstOK {
		r.longest = max(r.longest, t.Sub(kill))
	}
	return r, haveNext && len(firstOK) == workers, nil
}

// failover runs c marbles activating through the balancer, kills replica
// victim with SIGKILL, waits until every marble has activated again, and
// then starts the replica again on its addresses.
func (s *haSetup) failover(victim, c int, marbleType string) (failoverResult, error) {
	ids := make([]*coordtest.MarbleIdentity, c)
	for i := range ids {
		var err error
		if ids[i], err = coordtest.NewMarbleIdentity(elliptic.P256(), marbleType); err != nil {
			return failoverResult{}, err
		}
	}
	var mu sync.Mutex
	var events []loadEvent
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for wk := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				uid := uuid.NewString()
				for {
					select {
					case <-stop:
						return
					default:
					}
					t0 := time.Now()
					err := activateOnce(s.mesh, ids[wk], marbleType, uid)
					mu.Lock()
					events = append(events, loadEvent{worker: wk, start: t0, end: time.Now(), ok: err == nil})
					mu.Unlock()
					if err == nil {
						break
					}
					time.Sleep(marbleRetryPause)
				}
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	time.Sleep(failoverWarmUp)
	kill := time.Now()
	if err := s.replicas[victim].cmd.Process.Kill(); err != nil {
		return failoverResult{}, fmt.Errorf("killing replica %d: %w", victim+1, err)
	}
	_ = s.replicas[victim].cmd.Wait() // killed: the error says so
	var r failoverResult
	for {
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		res, done, err := summarizeFailover(kill, events, c)
		mu.Unlock()
		if err != nil {
			return r, err
		}
		if done && time.Since(kill) >= failoverSettle {
			r = res
			break
		}
		if time.Since(kill) > failoverTimeout {
			return r, fmt.Errorf("the marbles did not all activate within %s of the kill", failoverTimeout)
		}
	}
	close(stop)
	wg.Wait()

	start := time.Now()
	p, err := launchCoordinator(s.bin, s.meshAddr[victim], s.client[victim], s.replicaEnv(victim)...)
	if err != nil {
		return r, err
	}
	s.replicas[victim] = p
	if _, err := waitActivation(p.mesh, marbleType, failoverTimeout); err != nil {
		return r, fmt.Errorf("restarted replica %d: %w", victim+1, err)
	}
	r.restart = time.Since(start)
	return r, nil
}

func printFailover(w io.Writer, results []failoverResult, c int) {
	fmt.Fprintf(w, "Failover: %d marbles activate through the balancer without pause (each with a new UUID after a success, the same one again %s after a failure); %s after the load started, one replica gets SIGKILL (replica 1, 2, … in turn, %d kills), and the load runs until every marble has activated once after the kill. The killed replica is then started again on its addresses and measured until its first activation, untimed for the failover.\n\n",
		c, marbleRetryPause, failoverWarmUp, len(results))
	fmt.Fprintln(w, "| failover measure | median | max |")
	fmt.Fprintln(w, "|---|---:|---:|")
	pick := func(f func(failoverResult) float64) (float64, float64) {
		v := make([]float64, len(results))
		for i, r := range results {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2], v[len(v)-1]
	}
	rows := []struct {
		name   string
		format string
		of     func(failoverResult) float64
	}{
		{"kill to the first successful activation begun after it, ms", "%.1f", func(r failoverResult) float64 { return ms(r.next) }},
		{"kill to every marble activated again (the longest wait), ms", "%.1f", func(r failoverResult) float64 { return ms(r.longest) }},
		{"activations failed per kill", "%.0f", func(r failoverResult) float64 { return float64(r.failed) }},
		{"killed replica started again to its first activation, s", "%.2f", func(r failoverResult) float64 { return r.restart.Seconds() }},
	}
	for _, row := range rows {
		med, hi := pick(row.of)
		fmt.Fprintf(w, "| %s | "+row.format+" | "+row.format+" |\n", row.name, med, hi)
	}
	fmt.Fprintln(w)
}
