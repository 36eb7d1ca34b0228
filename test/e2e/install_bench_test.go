//go:build linux

package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// BenchmarkInstallToReady measures `marblerun install --simulation` until
// `marblerun check` reports the Coordinator and the injector ready, on the
// local control plane with the node agent running their Pods (so "ready"
// means their processes serve their probes). Between iterations, untimed,
// the installation is uninstalled and its Pods stopped.
//
// Reported: s/install (the install command alone), s/ready (install until
// check succeeds, the figure the target of 15 s applies to).
func BenchmarkInstallToReady(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the node agent runs containers in namespaces and needs root")
	}
	x := setup(b)
	var installTotal, readyTotal time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		x.mustMarblerun("install", "--simulation", "--domain="+domain)
		installed := time.Now()
		x.mustMarblerun("check", "--timeout=120")
		ready := time.Now()
		installTotal += installed.Sub(start)
		readyTotal += ready.Sub(start)
		x.tl.Addf("iteration %d: install %s, ready %s", i, installed.Sub(start).Round(time.Millisecond), ready.Sub(start).Round(time.Millisecond))

		b.StopTimer()
		if err := x.readyDeployments(); err != nil {
			b.Fatal(err)
		}
		x.mustMarblerun("uninstall")
		err := wait.PollUntilContextTimeout(x.ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			left, err := x.leftovers(ctx)
			return err == nil && len(left) == 0 && x.agent.Processes() == 0, err
		})
		if err != nil {
			left, _ := x.leftovers(x.ctx)
			b.Fatalf("uninstall left %v (%d processes): %v", left, x.agent.Processes(), err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(installTotal.Seconds()/float64(b.N), "s/install")
	b.ReportMetric(readyTotal.Seconds()/float64(b.N), "s/ready")
}

// readyDeployments confirms what check reported: both Deployments have
// their replicas available.
func (x *e2e) readyDeployments() error {
	for _, name := range []string{"marblerun-coordinator", "marble-injector"} {
		d, err := x.cs.AppsV1().Deployments(installNS).Get(x.ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !available(d) {
			return &notReadyError{name: name, status: d.Status}
		}
	}
	return nil
}

func available(d *appsv1.Deployment) bool {
	return d.Status.AvailableReplicas >= 1 && d.Status.ReadyReplicas >= 1
}

type notReadyError struct {
	name   string
	status appsv1.DeploymentStatus
}

func (e *notReadyError) Error() string {
	var b strings.Builder
	b.WriteString("check said ready, but Deployment " + e.name + " is not available: ")
	b.WriteString(e.status.String())
	return b.String()
}
