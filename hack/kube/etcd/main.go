// Command etcd is etcd v3.6.16 built from the Go module proxy, for the
// control plane that test/kubetest starts in tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
