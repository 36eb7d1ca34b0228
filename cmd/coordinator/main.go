// Command coordinator runs the Coordinator of the confidential service mesh.
package main

import (
	"os"

	"github.com/marblemesh/marblemesh/internal/coordinator"
)

func main() {
	os.Exit(coordinator.Main(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}
