//go:build linux

// Command nodeagent-exec is the node agent's container helper: it holds a
// Pod's network namespace or starts one container process in its own root.
// Only the node agent runs it.
package main

import (
	"fmt"
	"os"

	"github.com/marblemesh/marblemesh/test/kubetest/nodeagent"
)

func main() {
	if err := nodeagent.HelperMain(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nodeagent-exec:", err)
		os.Exit(127)
	}
}
