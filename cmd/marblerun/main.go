// Command marblerun is the command line of the confidential service mesh:
// it verifies the Coordinator and manages its manifest, secrets and
// recovery.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/marblemesh/marblemesh/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], cli.Options{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
