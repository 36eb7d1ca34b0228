// Command build builds the Kubernetes control-plane binaries that tests use
// (etcd, kube-apiserver, kubectl, kube-controller-manager, kube-scheduler)
// into $(os.UserCacheDir)/marblemesh/kube/<version>/bin, unless they are
// already there and up to date, and prints that folder.
//
// Run it from the repository: go run ./hack/kube/build
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/marblemesh/marblemesh/hack/kube/kubebin"
)

func main() {
	timeout := flag.Duration("timeout", 90*time.Minute, "give up after this long")
	quiet := flag.Bool("q", false, "print only the binary folder")
	flag.Parse()
	var log io.Writer = os.Stderr
	if *quiet {
		log = io.Discard
	}
	dir, err := run(*timeout, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(dir)
}

// run builds the binaries unless they are up to date, stopping on SIGINT,
// SIGTERM or after timeout, and returns their folder.
func run(timeout time.Duration, log io.Writer) (string, error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return kubebin.Ensure(ctx, log)
}
