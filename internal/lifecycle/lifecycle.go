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
	"syscall"
	"time"
)

// SignalContext returns a context that is cancelled on SIGTERM or an
// interrupt. Call stop once the command is done to restore the default
// signal handling.
func SignalContext(parent context.Context) (ctx context.Context, stop context.CancelFunc) {
	return signal.NotifyContext(parent, syscall.SIGTERM, os.Interrupt)
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
