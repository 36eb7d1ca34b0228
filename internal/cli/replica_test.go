package cli

import (
	"testing"

	"github.com/marblemesh/marblemesh/api/wire"
)

func TestReplicaLine(t *testing.T) {
	tests := []struct {
		in   wire.ReplicaStatus
		want string
	}{
		{wire.ReplicaStatus{Name: "c-0", Ready: true, StoreBackend: "file"}, "Coordinator c-0 (store file): ready"},
		{wire.ReplicaStatus{Name: "c-1", Ready: true, Generation: 12, StoreBackend: "k8s-secret"},
			"Coordinator c-1 (store k8s-secret, state generation 12): ready"},
		{wire.ReplicaStatus{Name: "c-2", Degraded: true, Reason: "no round trip to the store has succeeded for 4s", Generation: 3, StoreBackend: "k8s-secret"},
			"Coordinator c-2 (store k8s-secret, state generation 3): degraded, not ready: no round trip to the store has succeeded for 4s"},
		{wire.ReplicaStatus{Name: "c-3", Reason: "the Coordinator cannot open the stored state and waits for recovery or the key", StoreBackend: "k8s-secret"},
			"Coordinator c-3 (store k8s-secret): not ready: the Coordinator cannot open the stored state and waits for recovery or the key"},
	}
	for _, tc := range tests {
		if got := replicaLine(tc.in); got != tc.want {
			t.Errorf("replicaLine(%+v) =\n%q, want\n%q", tc.in, got, tc.want)
		}
	}
}
