package core

import (
	"os"
	"testing"

	"github.com/marblemesh/marblemesh/test/kubetest"
)

// kubeShared is the control plane the package's Kubernetes tests share.
var kubeShared kubetest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	kubeShared.Stop()
	os.Exit(code)
}

// kubeEnv returns the shared control plane, starting it on first use.
func kubeEnv(t testing.TB) *kubetest.Env { return kubeShared.Env(t) }
