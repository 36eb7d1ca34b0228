package hatest_test

import (
	"os"
	"testing"

	"github.com/marblemesh/marblemesh/test/hatest"
	"github.com/marblemesh/marblemesh/test/kubetest"
)

// controlPlane is the kube-apiserver the tests share, except the one that
// stops it; coordinatorBin is the Coordinator built once.
var (
	controlPlane   kubetest.Shared
	coordinatorBin hatest.Binary
)

func TestMain(m *testing.M) {
	code := m.Run()
	controlPlane.Stop()
	coordinatorBin.Remove()
	os.Exit(code)
}
