package store

import (
	"os"
	"testing"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
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

// kubeSealers are the sealers of a machine for ProductKey and UniqueKey.
func kubeSealers(s seal.Sealer) map[seal.Mode]seal.Sealer {
	return map[seal.Mode]seal.Sealer{seal.ModeProductKey: s, seal.ModeUniqueKey: s}
}

// openKube opens a KubeStore on namespace ns of the shared control plane.
func openKube(t testing.TB, ns string, sealer seal.Sealer) *KubeStore {
	t.Helper()
	return openKubeSealers(t, ns, kubeSealers(sealer))
}

// openKubeSealers is openKube with a sealer per seal mode.
func openKubeSealers(t testing.TB, ns string, sealers map[seal.Mode]seal.Sealer) *KubeStore {
	t.Helper()
	s, err := OpenKube(KubeOptions{Client: kubeEnv(t).Clientset, Namespace: ns, Sealers: sealers})
	if err != nil {
		t.Fatalf("OpenKube: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// kubeImpl is the KubeStore in the contract suite: each fresh store gets
// its own namespace; a restart is a new KubeStore on it.
func kubeImpl() impl {
	return impl{
		name: "kube",
		fresh: func(t *testing.T) Store {
			return openKube(t, kubeEnv(t).Namespace(t), sealerWith(t, 1))
		},
		restart: func(t *testing.T, s Store) Store {
			k := s.(*KubeStore)
			if err := k.Close(); err != nil {
				t.Fatal(err)
			}
			return openKube(t, k.ns, k.sealers[seal.ModeProductKey])
		},
		move: func(t *testing.T, s Store) Store {
			k := s.(*KubeStore)
			if err := k.Close(); err != nil {
				t.Fatal(err)
			}
			other, err := seal.NewAESGCMSealer(randomKey(t))
			if err != nil {
				t.Fatal(err)
			}
			return openKube(t, k.ns, other)
		},
	}
}
