// Command coordinator benchmarks marble activation against a Coordinator
// over real gRPC+TLS and prints a markdown report.
//
// Without -mesh it builds ./cmd/coordinator, starts it in simulation with a
// temporary seal folder, sets a benchmark manifest and runs every scenario,
// reading the Coordinator's CPU time and memory from /proc. With -mesh it
// measures the Coordinator at that address (any implementation of the wire
// protocol, already holding a manifest with the -type marble); -pid adds
// its CPU time.
//
// With -ha it runs only the section on several Coordinators in
// distributed mode instead: it starts a kube-apiserver with etcd on
// loopback (test/kubetest), one Coordinator and -ha-replicas replicas
// behind loopback round-robin balancers on states in Secrets, and
// compares them in alternating rounds (activations with and without
// MaxActivations, secret sets), measures failover after SIGKILL and the
// memory of each replica.
package main

import (
	"context"
	"crypto/elliptic"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/marblemesh/marblemesh/rpc"
	"github.com/marblemesh/marblemesh/test/coordtest"
)

type options struct {
	ha          haOptions
	runHA       bool
	mesh        string
	pid         int
	marbleType  string
	n           int
	concurrency int
	steadyN     int
	rssMarbles  int
	rounds      int
	curves      []elliptic.Curve
	out         io.Writer
}

func main() {
	var o options
	flag.StringVar(&o.mesh, "mesh", "", "mesh API address of a running Coordinator (default: start one)")
	flag.IntVar(&o.pid, "pid", 0, "process ID of the Coordinator at -mesh, to measure its CPU time")
	flag.StringVar(&o.marbleType, "type", "bench", "marble type to activate")
	flag.IntVar(&o.n, "n", 3000, "activations per curve")
	flag.IntVar(&o.concurrency, "c", 16, "concurrent marbles")
	flag.IntVar(&o.steadyN, "steady", 100000, "activations for the steady-cost run (0 skips it)")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds per curve; the report shows the median round by Coordinator CPU time")
	flag.IntVar(&o.rssMarbles, "rss-marbles", 10000, "distinct marbles activated before measuring memory")
	floorServe := flag.String("floor-serve", "", "internal: run the named floor server instead of benchmarking")
	floorAddr := flag.String("floor-addr", "127.0.0.1:0", "internal: the floor server's address")
	floorResponse := flag.Int("floor-response", 4096, "internal: encoded size of the floor mesh server's response")
	cpuProfile := flag.String("cpuprofile", "", "write the load generator's CPU profile to this file")
	curves := flag.String("curves", "P-256,P-384", "comma-separated marble key curves for the activation runs")
	flag.BoolVar(&o.runHA, "ha", false, "run only the section on several Coordinators in distributed mode (starts a Kubernetes API server); it uses -c, -rounds, -rss-marbles and -type")
	flag.IntVar(&o.ha.replicas, "ha-replicas", 3, "with -ha: Coordinators of the replicated configuration (at least 2)")
	flag.IntVar(&o.ha.n, "ha-n", 1000, "with -ha: activations without MaxActivations per round (0 skips them)")
	flag.IntVar(&o.ha.limited, "ha-limited", 200, "with -ha: activations with MaxActivations per round (0 skips them)")
	flag.IntVar(&o.ha.secrets, "ha-secrets", 100, "with -ha: secret sets per round (0 skips them)")
	flag.IntVar(&o.ha.writeC, "ha-write-c", 4, "with -ha: concurrent clients of limited activations and secret sets")
	flag.DurationVar(&o.ha.limit, "ha-limit", 8*time.Second, "with -ha: no operation of a measured run starts after this time (0: no limit)")
	flag.IntVar(&o.ha.kills, "ha-kills", 5, "with -ha: replicas killed with SIGKILL under load (0 skips failover)")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if err := checkModeFlags(o.runHA, set); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	o.out = os.Stdout
	if o.ha.replicas < 2 || o.ha.writeC < 1 || o.concurrency < 1 {
		fmt.Fprintln(os.Stderr, "bench: -ha-replicas must be at least 2, -ha-write-c and -c at least 1")
		os.Exit(2)
	}
	if *floorServe != "" {
		if err := serveFloorUntilEOF(*floorServe, *floorAddr, *floorResponse); err != nil {
			fmt.Fprintln(os.Stderr, "floor server:", err)
			os.Exit(1)
		}
		return
	}
	var err error
	if o.curves, err = parseCurves(*curves); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer stop()
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1) //nolint:gocritic // the profile of a failed run is of no use
	}
}

// Flags that only one mode reads: those of the section on several
// Coordinators (-ha), and those of the other sections.
var (
	haOnlyFlags    = []string{"ha-replicas", "ha-n", "ha-limited", "ha-secrets", "ha-write-c", "ha-kills", "ha-limit"}
	nonHAOnlyFlags = []string{"mesh", "pid", "n", "steady", "curves"}
)

// checkModeFlags refuses a flag set on the command line (set) that the
// chosen mode would ignore.
func checkModeFlags(ha bool, set map[string]bool) error {
	unread, mode := haOnlyFlags, "without -ha"
	if ha {
		unread, mode = nonHAOnlyFlags, "with -ha"
	}
	for _, name := range unread {
		if set[name] {
			return fmt.Errorf("-%s has no effect %s", name, mode)
		}
	}
	return nil
}

// startCPUProfile profiles the load generator until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating the CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting the CPU profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func run(o options) error {
	if o.runHA {
		return runHA(o)
	}
	if o.mesh != "" {
		fmt.Fprintf(o.out, "### Coordinator at %s\n\n", o.mesh)
		for _, curve := range o.curves {
			r, err := medianRound(o.rounds, func() (result, error) {
				return activations(o.mesh, o.pid, o.marbleType, curve, o.n, o.concurrency)
			})
			if err != nil {
				return err
			}
			r.print(o.out, curve)
		}
		return nil
	}
	return runOwn(o)
}

// medianRound runs a measurement rounds times and returns the median
// round: on a shared machine single rounds vary by ±10 %.
func medianRound(rounds int, run func() (result, error)) (result, error) {
	rs := make([]result, 0, max(rounds, 1))
	for range max(rounds, 1) {
		r, err := run()
		if err != nil {
			return result{}, err
		}
		rs = append(rs, r)
	}
	return median(rs), nil
}

// median returns the round with the median CPU time per activation (the
// median latency round when CPU time is not measured).
func median(rs []result) result {
	rs = slices.Clone(rs)
	sort.Slice(rs, func(a, b int) bool {
		if rs[a].cpuMeasure && rs[b].cpuMeasure {
			return rs[a].cpuPerAct < rs[b].cpuPerAct
		}
		return rs[a].p50 < rs[b].p50
	})
	return rs[len(rs)/2]
}

// parseCurves reads a list such as "P-256,P-384".
func parseCurves(list string) ([]elliptic.Curve, error) {
	var out []elliptic.Curve
	for _, name := range strings.Split(list, ",") {
		switch strings.TrimSpace(name) {
		case "P-256":
			out = append(out, elliptic.P256())
		case "P-384":
			out = append(out, elliptic.P384())
		case "P-521":
			out = append(out, elliptic.P521())
		default:
			return nil, fmt.Errorf("unknown curve %q in -curves (want P-256, P-384 or P-521)", name)
		}
	}
	return out, nil
}

// result of one activation run.
type result struct {
	n      int
	errors int
	// firstErr is the first error of an operation, when any failed.
	firstErr   error
	elapsed    time.Duration
	p50, p99   time.Duration
	cpuPerAct  time.Duration
	cpuMeasure bool
	// apiPerOp is the CPU time of the Kubernetes API server and etcd per
	// operation, when measured.
	apiPerOp   time.Duration
	apiMeasure bool
}

func (r result) print(w io.Writer, curve elliptic.Curve) {
	fmt.Fprintf(w, "| %s | %d | %d | %.0f | %.2f | %.2f | %s |\n",
		curve.Params().Name, r.n, r.errors, float64(r.n)/r.elapsed.Seconds(),
		ms(r.p50), ms(r.p99), cpuText(r))
}

func cpuText(r result) string {
	if !r.cpuMeasure {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", ms(r.cpuPerAct))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// activations runs n activations from c concurrent marbles, each with its
// own TLS connection, identities and UUIDs prepared beforehand.
func activations(mesh string, pid int, marbleType string, curve elliptic.Curve, n, c int) (result, error) {
	return measure(pid, marbleType, curve, n, c, func(id *coordtest.MarbleIdentity, uid string) error {
		return activateOnce(mesh, id, marbleType, uid)
	})
}

// measure runs op n times from c concurrent workers, each call with an
// identity prepared beforehand and a fresh UUID, and reads the CPU time
// the process pid used meanwhile.
func measure(pid int, marbleType string, curve elliptic.Curve, n, c int, op func(id *coordtest.MarbleIdentity, uid string) error) (result, error) {
	l := load{n: n, c: c}
	if pid > 0 {
		l.pids = []int{pid}
	}
	return measureMarbles(l, marbleType, curve, op)
}

// load is a measured run: n operations from c concurrent workers.
type load struct {
	n, c int
	// pids are the processes whose CPU time is measured, apiPids those
	// whose CPU time is measured apart (the Kubernetes API server's).
	pids, apiPids []int
	// limit, if not 0, ends the run early: no operation starts after it.
	limit time.Duration
}

// measureMarbles is measure for the load l.
func measureMarbles(l load, marbleType string, curve elliptic.Curve, op func(id *coordtest.MarbleIdentity, uid string) error) (result, error) {
	ids := make([]*coordtest.MarbleIdentity, 64)
	for i := range ids {
		id, err := coordtest.NewMarbleIdentity(curve, marbleType)
		if err != nil {
			return result{}, err
		}
		ids[i] = id
	}
	uuids := make([]string, l.n)
	for i := range uuids {
		uuids[i] = uuid.NewString()
	}
	return measureOps(l, func(i int) error { return op(ids[i%len(ids)], uuids[i]) })
}

// measureOps runs op(i) for i in [0, l.n) from l.c concurrent workers,
// or fewer when l.limit ends the run, and reads the CPU time of l.pids
// and l.apiPids meanwhile.
func measureOps(l load, op func(i int) error) (result, error) {
	if l.n <= 0 {
		return result{}, fmt.Errorf("nothing to measure: %d operations", l.n)
	}
	lat := make([]time.Duration, l.n)
	var next, done, failures atomic.Int64
	var firstErr atomic.Value
	cpu0, cpuOK := cpuSum(l.pids)
	api0, apiOK := cpuSum(l.apiPids)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < l.c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if l.limit > 0 && time.Since(start) > l.limit {
					return
				}
				i := int(next.Add(1)) - 1
				if i >= l.n {
					return
				}
				t0 := time.Now()
				err := op(i)
				lat[i] = time.Since(t0)
				done.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, cpu1OK := cpuSum(l.pids)
	api1, api1OK := cpuSum(l.apiPids)
	// Operations are taken in order, so the first n ran.
	n := int(done.Load())
	if e := firstErr.Load(); e != nil && failures.Load() == int64(n) {
		return result{}, fmt.Errorf("every operation failed, first error: %v", e)
	}
	lat = lat[:n]
	slices.Sort(lat)
	r := result{n: n, errors: int(failures.Load()), elapsed: elapsed, p50: percentile(lat, 50), p99: percentile(lat, 99)}
	if e, ok := firstErr.Load().(error); ok {
		r.firstErr = e
	}
	if cpuOK && cpu1OK {
		r.cpuMeasure = true
		r.cpuPerAct = (cpu1 - cpu0) / time.Duration(n)
	}
	if apiOK && api1OK {
		r.apiMeasure = true
		r.apiPerOp = (api1 - api0) / time.Duration(n)
	}
	return r, nil
}

// percentile returns the latency below which percent per cent of sorted
// (ascending, not empty) lie: the element at index len*percent/100.
func percentile(sorted []time.Duration, percent int) time.Duration {
	return sorted[min(len(sorted)*percent/100, len(sorted)-1)]
}

// cpuSum returns the CPU time the processes pids have used so far
// together; false when pids is empty or one cannot be read.
func cpuSum(pids []int) (time.Duration, bool) {
	if len(pids) == 0 {
		return 0, false
	}
	var sum time.Duration
	for _, pid := range pids {
		t, ok := cpuTime(pid)
		if !ok {
			return 0, false
		}
		sum += t
	}
	return sum, true
}

func activateOnce(mesh string, id *coordtest.MarbleIdentity, marbleType, uid string) error {
	_, err := activate(mesh, id, marbleType, uid)
	return err
}

// activate activates one marble over its own connection, as a marble does.
func activate(mesh string, id *coordtest.MarbleIdentity, marbleType, uid string) (*rpc.Parameters, error) {
	conn, err := coordtest.Dial(mesh, id)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return coordtest.Activate(ctx, conn, id, marbleType, uid)
}

// cpuTime returns the CPU time a process has used so far.
func cpuTime(pid int) (time.Duration, bool) {
	if pid <= 0 {
		return 0, false
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields after the command name, which is in parentheses.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	var utime, stime int64
	if len(fields) < 13 {
		return 0, false
	}
	if _, err := fmt.Sscan(fields[11], &utime); err != nil {
		return 0, false
	}
	if _, err := fmt.Sscan(fields[12], &stime); err != nil {
		return 0, false
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, true
}

// rss returns a process's resident memory in bytes.
func rss(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int64
			if _, err := fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(line, "VmRSS:"), "kB")), &kb); err != nil {
				return 0, fmt.Errorf("VmRSS of process %d: %w", pid, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
