package install

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/marblemesh/marblemesh/internal/coordinator/health"
	"github.com/marblemesh/marblemesh/internal/injector"
	"github.com/marblemesh/marblemesh/internal/sgxresource"
	"github.com/marblemesh/marblemesh/test/coordtest"
	"github.com/marblemesh/marblemesh/test/testpki"
)

// probesOf returns the HTTP probes of a container by kind.
func probesOf(t *testing.T, c corev1.Container) map[string]*corev1.HTTPGetAction {
	t.Helper()
	out := map[string]*corev1.HTTPGetAction{}
	for kind, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p != nil {
			if p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS {
				t.Fatalf("%s probe of %s: %+v, want an HTTPS GET", kind, c.Name, p)
			}
			out[kind] = p.HTTPGet
		}
	}
	return out
}

// kubeletGet asks path over HTTPS without verifying the certificate, as
// the kubelet's probes do.
func kubeletGet(t *testing.T, base, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // G402: the kubelet does not verify probes' certificates either
	}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestChartProbesServed asks a running Coordinator and marble-injector
// the paths the chart's probes ask: each answers 200 (no unknown path,
// no unknown readiness check), a single Coordinator's readiness leaves
// out exactly the recovery check in both modes, and the
// injector's readiness fails once it begins to shut down.
func TestChartProbesServed(t *testing.T) {
	coord := coordtest.Start(t)
	cases := chartCases(t)
	for _, name := range []string{"default", "cli-distributed"} {
		t.Run(name, func(t *testing.T) {
			got, err := render(t, "mr", cases[name])
			if err != nil {
				t.Fatal(err)
			}
			objs, _ := decodeAll(t, got)
			probes := probesOf(t, coordinatorDeployment(t, objs).Spec.Template.Spec.Containers[0])
			if len(probes) != 3 {
				t.Fatalf("the Coordinator has the probes %v, want start-up, readiness and liveness", probes)
			}
			for kind, p := range probes {
				if code, body := kubeletGet(t, "https://"+coord.ClientAddr(), p.Path); code != http.StatusOK {
					t.Errorf("%s probe %s: %d %q", kind, p.Path, code, body)
				}
			}
			u, err := url.Parse(probes["readiness"].Path)
			if err != nil {
				t.Fatal(err)
			}
			// Both modes leave out the recovery check alone: a replica that
			// waits for a peer's key fails the check "key" instead.
			want := []string{health.CheckRecovery}
			if got := u.Query()["exclude"]; !slices.Equal(got, want) {
				t.Errorf("the readiness probe %s leaves out %v, want %v", u, got, want)
			}
		})
	}

	got, err := render(t, "mr", cases["cli-sgx-intel"])
	if err != nil {
		t.Fatal(err)
	}
	objs, _ := decodeAll(t, got)
	var inj *appsv1.Deployment
	for _, o := range objs {
		if d, ok := o.(*appsv1.Deployment); ok && d.Name == "marble-injector" {
			inj = d
		}
	}
	if inj == nil {
		t.Fatal("no Deployment marble-injector")
	}
	probes := probesOf(t, inj.Spec.Template.Spec.Containers[0])
	if len(probes) != 2 || probes["readiness"].Path != injector.PathReadyz || probes["liveness"].Path != injector.PathHealthz {
		t.Fatalf("the injector's probes %+v", probes)
	}
	_, certFile, keyFile := testpki.ServingFiles(t)
	srv, err := injector.NewServer(injector.Options{CertFile: certFile, KeyFile: keyFile, ShutdownDelay: time.Second,
		Config: injector.Config{CoordAddr: "coordinator-mesh-api.mr:2001", ClusterDomain: "cluster.local", SGXResource: sgxresource.IntelEPC}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, nil) }()
	base := "https://" + ln.Addr().String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := kubeletGet(t, base, probes["readiness"].Path)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the injector's readiness probe answers %d", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := kubeletGet(t, base, probes["liveness"].Path); code != http.StatusOK {
		t.Fatalf("the injector's liveness probe answers %d", code)
	}
	cancel()
	deadline = time.Now().Add(time.Second)
	for {
		// During the shutdown delay the server still answers, and its
		// readiness fails.
		code, _ := kubeletGet(t, base, probes["readiness"].Path)
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the injector's readiness probe still answers %d while it shuts down", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
