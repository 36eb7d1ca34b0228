package core

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/marblemesh/marblemesh/hack/kube/kubebin"
	"github.com/marblemesh/marblemesh/test/kubetest"
)

// The package's Kubernetes tests share one control plane, started by the
// first test that needs it and stopped by TestMain.
var kubeShared struct {
	once  sync.Once
	env   *kubetest.Env
	skip  string
	err   error
	owner *controlPlaneTB
}

func TestMain(m *testing.M) {
	code := m.Run()
	if kubeShared.owner != nil {
		kubeShared.owner.cleanup()
	}
	os.Exit(code)
}

// kubeEnv returns the shared control plane, starting it on first use. It
// skips t in -short mode and when the Kubernetes test binaries are absent
// (`go run ./hack/kube/build` builds them).
func kubeEnv(t testing.TB) *kubetest.Env {
	t.Helper()
	if testing.Short() {
		t.Skip("core: skipping a test that runs a Kubernetes control plane in -short mode")
	}
	kubeShared.once.Do(func() {
		cache, err := kubebin.DefaultCacheDir()
		if err != nil {
			kubeShared.skip = fmt.Sprintf("core: no cache folder for the Kubernetes test binaries: %v", err)
			return
		}
		for _, name := range []string{"etcd", "kube-apiserver"} {
			if _, err := os.Stat(filepath.Join(cache, "bin", name)); err != nil {
				kubeShared.skip = fmt.Sprintf("core: the Kubernetes test binary %s is absent (build it with `go run ./hack/kube/build`): %v", name, err)
				return
			}
		}
		kubeShared.owner = newControlPlaneTB()
		kubeShared.env, kubeShared.err = kubeShared.owner.start()
	})
	switch {
	case kubeShared.skip != "":
		t.Skip(kubeShared.skip)
	case kubeShared.err != nil:
		t.Fatalf("core: starting the control plane: %v", kubeShared.err)
	}
	return kubeShared.env
}

// controlPlaneTB is the testing.TB that owns the shared control plane
// until TestMain ends. Its Fatalf and Skip stop kubetest.Start by
// panicking.
type controlPlaneTB struct {
	testing.TB // nil: kubetest uses only the methods below
	mu         sync.Mutex
	ctx        context.Context
	cancel     context.CancelFunc
	cleanups   []func()
	dir        string
	failed     bool
}

type controlPlaneStop struct{ msg string }

func newControlPlaneTB() *controlPlaneTB {
	ctx, cancel := context.WithCancel(context.Background())
	return &controlPlaneTB{ctx: ctx, cancel: cancel}
}

func (p *controlPlaneTB) start() (env *kubetest.Env, err error) {
	defer func() {
		if r := recover(); r != nil {
			stop, ok := r.(controlPlaneStop)
			if !ok {
				panic(r)
			}
			err = errors.New(stop.msg)
		}
	}()
	return kubetest.Start(p), nil
}

func (p *controlPlaneTB) cleanup() {
	p.cancel()
	for i := len(p.cleanups) - 1; i >= 0; i-- {
		p.cleanups[i]()
	}
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
}

func (p *controlPlaneTB) Helper()                      {}
func (p *controlPlaneTB) Context() context.Context     { return p.ctx }
func (p *controlPlaneTB) Cleanup(f func())             { p.cleanups = append(p.cleanups, f) }
func (p *controlPlaneTB) Logf(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
func (p *controlPlaneTB) Name() string                 { return "core-kube" }

func (p *controlPlaneTB) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *controlPlaneTB) Errorf(format string, a ...any) {
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()
	p.Logf(format, a...)
}

func (p *controlPlaneTB) Fatalf(format string, a ...any) {
	p.Errorf(format, a...)
	panic(controlPlaneStop{fmt.Sprintf(format, a...)})
}

func (p *controlPlaneTB) Skip(a ...any) { panic(controlPlaneStop{fmt.Sprint(a...)}) }

func (p *controlPlaneTB) TempDir() string {
	if p.dir == "" {
		dir, err := os.MkdirTemp("", "core-kube-")
		if err != nil {
			p.Fatalf("%v", err)
		}
		p.dir = dir
	}
	return p.dir
}
