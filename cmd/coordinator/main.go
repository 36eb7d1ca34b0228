// Command coordinator runs the Coordinator of the confidential service mesh.
package main

import (
	"context"
	"os"

	"github.com/marblemesh/marblemesh/internal/coordinator"
	"github.com/marblemesh/marblemesh/internal/lifecycle"
)

func main() {
	ctx, stop := lifecycle.SignalContext(context.Background())
	code := coordinator.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
