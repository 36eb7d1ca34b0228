package api

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"

	"github.com/marblemesh/marblemesh/api/wire"
)

// Coordinator states, as Status reports them.
const (
	StateUninitialized     = 0
	StateRecovery          = 1
	StateAcceptingManifest = 2
	StateAcceptingMarbles  = 3
)

// CoordinatorStatus is the Coordinator's state code and description, and
// the description of the Coordinator that answered (nil when it does not
// report one: MarbleRun's Coordinators and the legacy path). Replicas
// describes every replica of a distributed Coordinator, the one that
// answered first; it is nil otherwise.
type CoordinatorStatus struct {
	Code     int
	Message  string
	Replica  *wire.ReplicaStatus
	Replicas []wire.ReplicaStatus
}

// Status returns the Coordinator's state.
func Status(ctx context.Context, endpoint string, trustedRoot *x509.Certificate) (*CoordinatorStatus, error) {
	c, err := newTrustedClient(endpoint, trustedRoot, nil)
	if err != nil {
		return nil, err
	}
	defer c.close()
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "status"})
	if err != nil {
		return nil, fmt.Errorf("getting the Coordinator's status: %w", err)
	}
	if resp.legacy {
		var d wire.StatusV1
		if err := decode(resp.data, "status", &d); err != nil {
			return nil, err
		}
		return &CoordinatorStatus{Code: d.StatusCode, Message: d.StatusMessage}, nil
	}
	var d wire.StatusV2
	if err := decode(resp.data, "status", &d); err != nil {
		return nil, err
	}
	return &CoordinatorStatus{Code: d.Code, Message: d.Message, Replica: d.Replica, Replicas: d.Replicas}, nil
}
