package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/marblemesh/marblemesh/hack/kube/kubebin"
	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
	"github.com/marblemesh/marblemesh/test/kubetest"
)

// The package's tests share one control plane, started by the first test
// that needs it and stopped by TestMain.
var shared struct {
	once  sync.Once
	env   *kubetest.Env
	skip  string // why kube tests skip, if they do
	err   error
	owner *packageTB
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.owner != nil {
		shared.owner.cleanup()
	}
	os.Exit(code)
}

// kubeEnv returns the shared control plane, starting it on first use. It
// skips t when the Kubernetes test binaries are absent (they are not built
// here: `go run ./hack/kube/build`) or in -short mode.
func kubeEnv(t testing.TB) *kubetest.Env {
	t.Helper()
	if testing.Short() {
		t.Skip("kube store: skipping a test that runs a Kubernetes control plane in -short mode")
	}
	shared.once.Do(func() {
		if reason := kubeBinariesMissing(); reason != "" {
			shared.skip = reason
			return
		}
		shared.owner = newPackageTB()
		shared.env, shared.err = shared.owner.start()
	})
	switch {
	case shared.skip != "":
		t.Skip(shared.skip)
	case shared.err != nil:
		t.Fatalf("kube store: %v", shared.err)
	}
	return shared.env
}

func kubeBinariesMissing() string {
	cache, err := kubebin.DefaultCacheDir()
	if err != nil {
		return fmt.Sprintf("kube store: no cache folder for the Kubernetes test binaries: %v", err)
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(cache, "bin", name)); err != nil {
			return fmt.Sprintf("kube store: the Kubernetes test binary %s is absent (build it with `go run ./hack/kube/build`): %v", name, err)
		}
	}
	return ""
}

// packageTB is the testing.TB that owns the shared control plane: it lives
// until TestMain ends. Fatal and Skip stop Start by panicking.
type packageTB struct {
	testing.TB // nil: only the methods below are used by kubetest
	mu         sync.Mutex
	ctx        context.Context
	cancel     context.CancelFunc
	cleanups   []func()
	dir        string
	failed     bool
}

type tbStop struct{ msg string }

func newPackageTB() *packageTB {
	ctx, cancel := context.WithCancel(context.Background())
	return &packageTB{ctx: ctx, cancel: cancel}
}

func (p *packageTB) start() (env *kubetest.Env, err error) {
	defer func() {
		if r := recover(); r != nil {
			stop, ok := r.(tbStop)
			if !ok {
				panic(r)
			}
			err = errors.New(stop.msg)
		}
	}()
	return kubetest.Start(p), nil
}

func (p *packageTB) cleanup() {
	p.cancel()
	for i := len(p.cleanups) - 1; i >= 0; i-- {
		p.cleanups[i]()
	}
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
}

func (p *packageTB) Helper()                      {}
func (p *packageTB) Context() context.Context     { return p.ctx }
func (p *packageTB) Cleanup(f func())             { p.cleanups = append(p.cleanups, f) }
func (p *packageTB) Logf(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
func (p *packageTB) Name() string                 { return "store-kube" }
func (p *packageTB) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *packageTB) Errorf(format string, a ...any) {
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()
	p.Logf(format, a...)
}

func (p *packageTB) Fatalf(format string, a ...any) {
	p.Errorf(format, a...)
	panic(tbStop{fmt.Sprintf(format, a...)})
}

func (p *packageTB) Skip(a ...any) { panic(tbStop{fmt.Sprint(a...)}) }

func (p *packageTB) TempDir() string {
	if p.dir == "" {
		dir, err := os.MkdirTemp("", "store-kube-")
		if err != nil {
			p.Fatalf("%v", err)
		}
		p.dir = dir
	}
	return p.dir
}

// kubeSealers are the sealers of a machine for ProductKey and UniqueKey.
func kubeSealers(s seal.Sealer) map[seal.Mode]seal.Sealer {
	return map[seal.Mode]seal.Sealer{seal.ModeProductKey: s, seal.ModeUniqueKey: s}
}

// openKube opens a KubeStore on namespace ns of the shared control plane.
func openKube(t testing.TB, ns string, sealer seal.Sealer) *KubeStore {
	t.Helper()
	s, err := OpenKube(KubeOptions{Client: kubeEnv(t).Clientset, Namespace: ns, Sealers: kubeSealers(sealer)})
	if err != nil {
		t.Fatalf("OpenKube: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// kubeImpl is the KubeStore in the contract suite: each fresh store gets
// its own namespace; a restart is a new KubeStore on it.
func kubeImpl() impl {
	return impl{
		name: "kube",
		fresh: func(t *testing.T) Store {
			return openKube(t, kubeEnv(t).Namespace(t), sealerWith(t, 1))
		},
		restart: func(t *testing.T, s Store) Store {
			k := s.(*KubeStore)
			if err := k.Close(); err != nil {
				t.Fatal(err)
			}
			return openKube(t, k.ns, k.sealers[seal.ModeProductKey])
		},
		move: func(t *testing.T, s Store) Store {
			k := s.(*KubeStore)
			if err := k.Close(); err != nil {
				t.Fatal(err)
			}
			other, err := seal.NewAESGCMSealer(randomKey(t))
			if err != nil {
				t.Fatal(err)
			}
			return openKube(t, k.ns, other)
		},
	}
}
