// Package lifecycle holds the shutdown pattern shared by the project's
// long-running commands: main derives a context from SIGTERM and interrupt,
// the server's Run serves until that context is done and then drains with a
// bounded grace period, returning nil after a clean stop.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// SignalContext returns a context that is cancelled on SIGTERM or an
// interrupt, with a SignalError as its cause (see Reason). Call stop once
// the command is done to restore the default signal handling.
func SignalContext(parent context.Context) (ctx context.Context, stop context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	stopped := make(chan struct{})
	go func() {
		select {
		case sig := <-signals:
			cancel(SignalError{Signal: sig})
		case <-stopped:
		case <-ctx.Done():
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(signals)
			close(stopped)
			cancel(context.Canceled)
		})
	}
}

// SignalError is the cause of a SignalContext's cancellation by a signal.
type SignalError struct {
	Signal os.Signal
}

func (e SignalError) Error() string {
	return "received " + signalName(e.Signal)
}

// signalName is the conventional name of sig: SIGTERM, SIGINT.
func signalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case os.Interrupt:
		return "SIGINT"
	}
	return sig.String()
}

// Reason says why ctx is done, for the log line of a shutdown: "received
// SIGTERM" after a signal of SignalContext, else the context's cause.
// It is "" while ctx is not done.
func Reason(ctx context.Context) string {
	if ctx.Err() == nil {
		return ""
	}
	return context.Cause(ctx).Error()
}

// Step is one part of a drain: Stop must return once its requests in
// flight have finished, or as soon as ctx is done.
type Step struct {
	Name string
	Stop func(ctx context.Context) error
}

// Drain runs all steps at once with a shared deadline grace from now and
// waits for them. It returns nil when every step finished in time, else the
// steps' errors, each wrapped with the step's name.
func Drain(grace time.Duration, steps ...Step) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	errc := make(chan error, len(steps))
	for _, st := range steps {
		go func() {
			if err := st.Stop(ctx); err != nil {
				errc <- fmt.Errorf("stopping %s within %v: %w", st.Name, grace, err)
				return
			}
			errc <- nil
		}()
	}
	var errs []error
	for range steps {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
