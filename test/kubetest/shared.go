package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
)

// Shared is one control plane for all the tests of a package: the first
// test that calls Env starts it, and the package's TestMain calls Stop
// after m.Run. A package saves a control plane start per test with it.
type Shared struct {
	once  sync.Once
	env   *Env
	err   error
	owner *ownerTB
}

// Env returns the shared control plane, starting it with opts on first
// use. Like Start, it skips t in -short mode; a control plane that did not
// start fails every test that asks for it.
func (s *Shared) Env(t testing.TB, opts ...Option) *Env {
	t.Helper()
	if testing.Short() {
		t.Skip("kubetest: skipping a test that runs a Kubernetes control plane in -short mode")
	}
	s.once.Do(func() {
		s.owner = newOwnerTB()
		s.env, s.err = s.owner.start(opts...)
	})
	if s.err != nil {
		t.Fatalf("kubetest: starting the shared control plane: %v", s.err)
	}
	return s.env
}

// StartCommand starts a control plane like Start for a program that is not
// a test, such as a benchmark command: it returns the control plane and
// the function that stops it, or the error that Start would fail a test
// with.
func StartCommand(opts ...Option) (env *Env, stop func(), err error) {
	owner := newOwnerTB()
	if env, err = owner.start(opts...); err != nil {
		owner.cleanup()
		return nil, nil, err
	}
	return env, owner.cleanup, nil
}

// Stop stops the shared control plane, if one was started.
func (s *Shared) Stop() {
	if s.owner != nil {
		s.owner.cleanup()
	}
}

// ownerTB is the testing.TB that owns a shared control plane until Stop.
// Its Fatalf and Skip end Start by panicking; start turns that into an
// error.
type ownerTB struct {
	testing.TB // nil: Start uses only the methods below
	mu         sync.Mutex
	ctx        context.Context
	cancel     context.CancelFunc
	cleanups   []func()
	dir        string
	failed     bool
}

type ownerStop struct{ msg string }

func newOwnerTB() *ownerTB {
	ctx, cancel := context.WithCancel(context.Background())
	return &ownerTB{ctx: ctx, cancel: cancel}
}

func (p *ownerTB) start(opts ...Option) (env *Env, err error) {
	defer func() {
		if r := recover(); r != nil {
			stop, ok := r.(ownerStop)
			if !ok {
				panic(r)
			}
			err = errors.New(stop.msg)
		}
	}()
	return Start(p, opts...), nil
}

func (p *ownerTB) cleanup() {
	p.cancel()
	for i := len(p.cleanups) - 1; i >= 0; i-- {
		p.cleanups[i]()
	}
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
}

func (p *ownerTB) Helper()                      {}
func (p *ownerTB) Context() context.Context     { return p.ctx }
func (p *ownerTB) Cleanup(f func())             { p.cleanups = append(p.cleanups, f) }
func (p *ownerTB) Logf(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
func (p *ownerTB) Name() string                 { return "kubetest-shared" }

func (p *ownerTB) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *ownerTB) Errorf(format string, a ...any) {
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()
	p.Logf(format, a...)
}

func (p *ownerTB) Fatalf(format string, a ...any) {
	p.Errorf(format, a...)
	panic(ownerStop{fmt.Sprintf(format, a...)})
}

func (p *ownerTB) Skip(a ...any) { panic(ownerStop{fmt.Sprint(a...)}) }

func (p *ownerTB) TempDir() string {
	if p.dir == "" {
		dir, err := os.MkdirTemp("", "kubetest-shared-")
		if err != nil {
			p.Fatalf("%v", err)
		}
		p.dir = dir
	}
	return p.dir
}
