// Command premain activates a marble and then executes the real program
// with the files, environment and arguments the Coordinator returned.
//
// Usage: premain [--] PROGRAM [ARGS...]; premain --help explains more.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
