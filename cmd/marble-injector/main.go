// Command marble-injector is the mutating admission webhook that prepares
// Pods labelled marblerun/marbletype to run as marbles. Run it with --help.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/marblemesh/marblemesh/internal/injector"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := injector.RunCommand(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}
