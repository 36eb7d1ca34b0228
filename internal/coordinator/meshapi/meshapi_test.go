package meshapi

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/marblemesh/marblemesh/internal/coordinator/core"
)

func TestCodeOf(t *testing.T) {
	tests := []struct {
		kind core.Kind
		want codes.Code
	}{
		{core.KindInvalidArgument, codes.InvalidArgument},
		{core.KindFailedPrecondition, codes.FailedPrecondition},
		{core.KindPermissionDenied, codes.PermissionDenied},
		{core.KindResourceExhausted, codes.ResourceExhausted},
		{core.KindUnauthenticated, codes.Unauthenticated},
		{core.KindNotFound, codes.NotFound},
		{core.KindUnavailable, codes.Unavailable},
		{core.KindInternal, codes.Internal},
	}
	for _, tc := range tests {
		if got := codeOf(&core.Error{Kind: tc.kind, Reason: "r"}); got != tc.want {
			t.Errorf("kind %d: got %v, want %v", tc.kind, got, tc.want)
		}
	}
	if got := codeOf(errors.New("plain")); got != codes.Internal {
		t.Errorf("plain error: %v", got)
	}
}
