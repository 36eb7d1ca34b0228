// Command marble-injector is the mutating admission webhook that prepares
// Pods labelled marblerun/marbletype to run as marbles. Run it with --help.
package main

import (
	"context"
	"os"

	"github.com/marblemesh/marblemesh/internal/injector"
	"github.com/marblemesh/marblemesh/internal/lifecycle"
)

func main() {
	ctx, stop := lifecycle.SignalContext(context.Background())
	code := injector.RunCommand(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}
