// Command marblerun is the command line of the confidential service mesh:
// it verifies the Coordinator and manages its manifest, secrets and
// recovery.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/marblemesh/marblemesh/internal/cli"
)

func main() {
	verifier, err := cli.DefaultVerifier(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "marblerun:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], cli.Options{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Verifier: verifier})
	stop()
	os.Exit(code)
}
