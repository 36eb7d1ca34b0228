// Command injector measures the marble injector's admission throughput and
// prints a markdown section.
//
// It starts the injector's HTTPS server in this process on 127.0.0.1 with a
// freshly generated certificate, then sends the AdmissionReview of a
// Deployment's Pod (two containers, env, resources, labels) from -c
// concurrent keep-alive TLS connections until -n admissions are done or
// -duration has passed. The server and the load generator share the
// process, so the CPU time per admission covers both.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/marblemesh/marblemesh/internal/injector"
	"github.com/marblemesh/marblemesh/test/testpki"
)

type options struct {
	client     string
	n          int
	c          int
	warmup     int
	duration   time.Duration
	cpuProfile string
	out        string
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 200000, "admissions to measure")
	flag.StringVar(&o.client, "client", "raw", "load generator: raw (one goroutine per TLS connection writing HTTP/1.1 itself) or net/http (http.Client)")
	flag.IntVar(&o.c, "c", 16, "concurrent TLS connections")
	flag.IntVar(&o.warmup, "warmup", 5000, "admissions sent before measuring")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "stop measuring after this long even if -n is not reached")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured phase to this file")
	flag.StringVar(&o.out, "out", "", "also write the markdown to this file")
	flag.Parse()
	if o.n <= 0 || o.c <= 0 || o.duration <= 0 || (o.client != "raw" && o.client != "net/http") {
		fmt.Fprintln(os.Stderr, "bench: -n, -c and -duration must be positive, -client raw or net/http")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	loadBefore := loadAverage()
	dir, err := os.MkdirTemp("", "injector-bench-")
	if err != nil {
		return fmt.Errorf("temporary folder: %w", err)
	}
	defer os.RemoveAll(dir)
	ca, err := testpki.NewCA("injector bench CA")
	if err != nil {
		return err
	}
	leaf, err := ca.Issue("marble-injector")
	if err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := leaf.WriteFiles(certFile, keyFile); err != nil {
		return err
	}
	cfg := injector.Config{
		CoordAddr:     injector.DefaultCoordAddr,
		ClusterDomain: injector.DefaultClusterDomain,
		SGXResource:   injector.DefaultSGXResource,
	}
	// Logs are formatted as in production (JSON, info level) and dropped,
	// so the figure includes logging but not a terminal's speed.
	srv, err := injector.NewServer(injector.Options{
		CertFile: certFile, KeyFile: keyFile, Config: cfg,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, nil) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			fmt.Fprintln(os.Stderr, "injector:", err)
		}
	}()
	url := "https://" + ln.Addr().String() + injector.PathMutate

	body, err := reviewBody()
	if err != nil {
		return err
	}
	check := injector.Review(body, cfg)
	if check.Decision.Outcome != injector.Mutated {
		return fmt.Errorf("the benchmark Pod is not mutated: %s %s", check.Decision.Reason, check.Decision.Message)
	}

	addr := ln.Addr().String()
	tlsConfig := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	senders := make([]sender, o.c)
	for i := range senders {
		if o.client == "raw" {
			senders[i] = &rawSender{addr: addr, tls: tlsConfig, request: rawRequest(addr, body)}
		} else {
			senders[i] = &httpSender{url: url, body: body, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				TLSClientConfig: tlsConfig, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute,
			}}}
		}
		defer senders[i].close()
	}

	if _, err := load(senders, o.warmup, o.duration); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	runtime.GC()

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
	}
	cpu0 := cpuTime()
	r, err := load(senders, o.n, o.duration)
	cpu := cpuTime() - cpu0
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return err
	}
	core := reviewCost(body, cfg)

	var md strings.Builder
	r.print(&md, o, cpu, core, len(body), len(check.Body), loadBefore)
	fmt.Print(md.String())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md.String()), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", o.out, err)
		}
	}
	return nil
}

type result struct {
	done      int
	failed    int
	firstErr  error
	elapsed   time.Duration
	latencies []time.Duration
}

// sender sends admissions over one keep-alive TLS connection.
type sender interface {
	admit() error
	close()
}

// load sends up to n admissions from one goroutine per sender and stops
// early when limit has passed.
func load(senders []sender, n int, limit time.Duration) (*result, error) {
	var next atomic.Int64
	var mu sync.Mutex
	r := &result{latencies: make([]time.Duration, 0, n)}
	deadline := time.Now().Add(limit)
	start := time.Now()
	var wg sync.WaitGroup
	for _, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, n/len(senders)+1)
			var failed int
			var firstErr error
			for next.Add(1) <= int64(n) && time.Now().Before(deadline) {
				t0 := time.Now()
				err := s.admit()
				lat = append(lat, time.Since(t0))
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				}
			}
			mu.Lock()
			r.latencies = append(r.latencies, lat...)
			r.failed += failed
			if r.firstErr == nil {
				r.firstErr = firstErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	r.done = len(r.latencies)
	if r.done == 0 {
		return nil, errors.New("no admission was sent")
	}
	if r.failed == r.done {
		return nil, fmt.Errorf("every admission failed, first: %w", r.firstErr)
	}
	slices.Sort(r.latencies)
	return r, nil
}

// checkResponse accepts only an AdmissionReview with a patch.
func checkResponse(code int, body []byte) error {
	if code != http.StatusOK || !bytes.Contains(body, []byte(`"patch":"`)) {
		return fmt.Errorf("HTTP %d: %.200s", code, body)
	}
	return nil
}

// httpSender uses net/http's client.
type httpSender struct {
	url    string
	body   []byte
	client *http.Client
	buf    bytes.Buffer
}

func (s *httpSender) admit() error {
	req, err := http.NewRequest(http.MethodPost, s.url, bytes.NewReader(s.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	s.buf.Reset()
	if _, err := s.buf.ReadFrom(resp.Body); err != nil {
		return err
	}
	return checkResponse(resp.StatusCode, s.buf.Bytes())
}

func (s *httpSender) close() { s.client.CloseIdleConnections() }

// rawSender writes each HTTP/1.1 request with one TLS write and parses the
// response with net/http, on a connection it dials once and redials after
// an error.
type rawSender struct {
	addr    string
	tls     *tls.Config
	request []byte
	conn    *tls.Conn
	br      *bufio.Reader
	buf     []byte
}

func rawRequest(addr string, body []byte) []byte {
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: injector-bench\r\nContent-Type: application/json\r\n"+
		"Accept: application/json\r\nContent-Length: %d\r\n\r\n", injector.PathMutate, addr, len(body))
	return append([]byte(head), body...)
}

func (s *rawSender) admit() error {
	if s.conn == nil {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.addr, s.tls)
		if err != nil {
			return err
		}
		s.conn, s.br = conn, bufio.NewReaderSize(conn, 8192)
	}
	err := s.exchange()
	if err != nil {
		s.close()
	}
	return err
}

func (s *rawSender) exchange() error {
	if err := s.conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := s.conn.Write(s.request); err != nil {
		return err
	}
	resp, err := http.ReadResponse(s.br, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.ContentLength < 0 || resp.ContentLength > 1<<20 {
		return fmt.Errorf("response without a usable Content-Length: %d", resp.ContentLength)
	}
	if cap(s.buf) < int(resp.ContentLength) {
		s.buf = make([]byte, resp.ContentLength)
	}
	b := s.buf[:resp.ContentLength]
	if _, err := io.ReadFull(resp.Body, b); err != nil {
		return err
	}
	return checkResponse(resp.StatusCode, b)
}

func (s *rawSender) close() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn, s.br = nil, nil
	}
}

// reviewCost is the CPU time of Review alone (decode, rules, encode) on one
// goroutine, garbage collection included.
func reviewCost(body []byte, cfg injector.Config) time.Duration {
	const n = 20000
	start := cpuTime()
	for i := 0; i < n; i++ {
		injector.Review(body, cfg)
	}
	return (cpuTime() - start) / n
}

func (r *result) print(w io.Writer, o options, cpu, core time.Duration, reqSize, respSize int, loadBefore string) {
	q := func(p float64) time.Duration {
		i := int(p * float64(len(r.latencies)-1))
		return r.latencies[i]
	}
	rate := float64(r.done) / r.elapsed.Seconds()
	fmt.Fprintf(w, "### Marble injector: admissions over TLS\n\n")
	fmt.Fprintf(w, "In-process HTTPS server on 127.0.0.1 and load generator (client %s) in one process; %d keep-alive TLS connections (HTTP/1.1), "+
		"one AdmissionReview of a Deployment's Pod with two containers.\n\n", o.client, o.c)
	fmt.Fprintf(w, "| measure | value |\n|---|---|\n")
	fmt.Fprintf(w, "| admissions | %d in %.2f s (%d failed) |\n", r.done, r.elapsed.Seconds(), r.failed)
	fmt.Fprintf(w, "| admissions/s | %.0f |\n", rate)
	fmt.Fprintf(w, "| latency p50 / p90 / p99 / max | %s / %s / %s / %s |\n", ms(q(.50)), ms(q(.90)), ms(q(.99)), ms(r.latencies[len(r.latencies)-1]))
	fmt.Fprintf(w, "| CPU per admission (server + load generator) | %.1f µs (%.2f CPU s in total) |\n",
		float64(cpu.Microseconds())/float64(r.done), cpu.Seconds())
	fmt.Fprintf(w, "| share of the machine's CPU the process got | %.0f %% of %d CPUs (the rest went to other processes or idle) |\n",
		100*cpu.Seconds()/(r.elapsed.Seconds()*float64(runtime.NumCPU())), runtime.NumCPU())
	fmt.Fprintf(w, "| CPU per Review alone (decode, rules, patch, encode; GC included), one goroutine | %.1f µs |\n", float64(core.Nanoseconds())/1000)
	fmt.Fprintf(w, "| request / response body | %d / %d bytes |\n", reqSize, respSize)
	fmt.Fprintf(w, "| machine | %d CPUs (%s), GOMAXPROCS %d, %s %s/%s, load average before the run %s |\n\n",
		runtime.NumCPU(), cpuModel(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, loadBefore)
	if r.failed > 0 {
		fmt.Fprintf(w, "First failure: %v\n\n", r.firstErr)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// reviewBody is the AdmissionReview the API server sends for a Pod that a
// ReplicaSet creates from a Deployment: generateName, owner reference,
// managed fields, two containers with env, probes and resources.
func reviewBody() ([]byte, error) {
	res := func(cpu, mem string) corev1.ResourceList {
		return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}
	}
	probe := &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
		PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3,
	}
	ctr := func(name, image string, port int32) corev1.Container {
		return corev1.Container{
			Name: name, Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
			Args:  []string{"--listen=:" + fmt.Sprint(port), "--log-format=json"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port, Protocol: corev1.ProtocolTCP}},
			Env: []corev1.EnvVar{
				{Name: "WEB_PORT", Value: fmt.Sprint(port)},
				{Name: "EMOJISVC_HOST", Value: "emoji-svc.emojivoto:8080"},
				{Name: "VOTINGSVC_HOST", Value: "voting-svc.emojivoto:8080"},
				{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
				{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "status.podIP"}}},
			},
			Resources:                corev1.ResourceRequirements{Requests: res("100m", "64Mi"), Limits: res("500m", "256Mi")},
			LivenessProbe:            probe,
			ReadinessProbe:           probe,
			TerminationMessagePath:   "/dev/termination-log",
			TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			VolumeMounts:             []corev1.VolumeMount{{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
		}
	}
	ctrl := true
	grace := int64(30)
	pod := corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "web-7c9d8b6f5d-",
			Namespace:    "emojivoto",
			Labels: map[string]string{
				"app.kubernetes.io/name": "web", "app.kubernetes.io/part-of": "emojivoto", "version": "v11",
				"pod-template-hash": "7c9d8b6f5d", injector.LabelMarbleType: "web",
			},
			Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-11-02T10:00:00Z"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7c9d8b6f5d",
				UID: "0f6b7c7e-5d1a-4c1e-9a52-1f3c2d4e5f60", Controller: &ctrl, BlockOwnerDeletion: &ctrl,
			}},
			ManagedFields: []metav1.ManagedFieldsEntry{{
				Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1",
				FieldsType: "FieldsV1",
				FieldsV1: metav1.NewFieldsV1(`{"f:metadata":{"f:generateName":{},"f:labels":{".":{},"f:app.kubernetes.io/name":{},` +
					`"f:marblerun/marbletype":{},"f:pod-template-hash":{},"f:version":{}},"f:ownerReferences":{".":{},` +
					`"k:{\"uid\":\"0f6b7c7e-5d1a-4c1e-9a52-1f3c2d4e5f60\"}":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},` +
					`"f:env":{},"f:image":{},"f:name":{},"f:ports":{},"f:resources":{}},"k:{\"name\":\"envoy\"}":{".":{},"f:image":{},"f:name":{}}},` +
					`"f:dnsPolicy":{},"f:restartPolicy":{},"f:schedulerName":{},"f:terminationGracePeriodSeconds":{}}}`),
			}},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{
				ctr("web", "ghcr.io/edgelesssys/emojivoto/web:v0.8.0", 4433),
				ctr("envoy", "envoyproxy/envoy:v1.31.0", 9901),
			},
			Volumes: []corev1.Volume{{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}},
			}}}},
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: &grace,
			DNSPolicy:                     corev1.DNSClusterFirst,
			ServiceAccountName:            "web",
			SchedulerName:                 "default-scheduler",
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
			},
		},
	}
	object, err := json.Marshal(pod)
	if err != nil {
		return nil, fmt.Errorf("encoding the Pod: %w", err)
	}
	rev := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "2b7a3c1d-8e9f-4a0b-b1c2-d3e4f5a6b7c8",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "emojivoto",
			Operation: admissionv1.Create,
			Object:    kruntime.RawExtension{Raw: object},
			Options:   kruntime.RawExtension{Raw: []byte(`{"apiVersion":"meta.k8s.io/v1","kind":"CreateOptions"}`)},
		},
	}
	b, err := json.Marshal(rev)
	if err != nil {
		return nil, fmt.Errorf("encoding the AdmissionReview: %w", err)
	}
	return b, nil
}
