package lifecycle

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDrainClean(t *testing.T) {
	ran := make(chan string, 2)
	err := Drain(time.Second,
		Step{"a", func(context.Context) error { ran <- "a"; return nil }},
		Step{"b", func(context.Context) error { ran <- "b"; return nil }},
	)
	if err != nil {
		t.Fatal(err)
	}
	if len(ran) != 2 {
		t.Fatalf("%d steps ran", len(ran))
	}
}

func TestDrainBounded(t *testing.T) {
	start := time.Now()
	err := Drain(50*time.Millisecond, Step{"slow", func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "stopping slow") {
		t.Fatalf("error %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("drain took %v", d)
	}
}

func TestSignalContext(t *testing.T) {
	ctx, stop := SignalContext(context.Background())
	defer stop()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("SIGTERM did not cancel the context")
	}
	var sigErr SignalError
	if !errors.As(context.Cause(ctx), &sigErr) || sigErr.Signal != syscall.SIGTERM || Reason(ctx) != "received SIGTERM" {
		t.Fatalf("cause %v, reason %q", context.Cause(ctx), Reason(ctx))
	}
}

func TestSignalContextStop(t *testing.T) {
	ctx, stop := SignalContext(context.Background())
	if Reason(ctx) != "" {
		t.Fatalf("reason %q before the end", Reason(ctx))
	}
	stop()
	stop()
	if ctx.Err() == nil || Reason(ctx) != context.Canceled.Error() {
		t.Fatalf("after stop: %v, reason %q", ctx.Err(), Reason(ctx))
	}
	parent, cancel := context.WithCancel(context.Background())
	ctx, stop = SignalContext(parent)
	defer stop()
	cancel()
	<-ctx.Done()
	if !errors.Is(context.Cause(ctx), context.Canceled) {
		t.Fatalf("cause %v after the parent's end", context.Cause(ctx))
	}
}
