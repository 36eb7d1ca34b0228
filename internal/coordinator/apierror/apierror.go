// Package apierror is the one error policy of the Coordinator's APIs: for
// each core.Kind it decides the gRPC code, the HTTP status and JSend form,
// what the caller sees and how the error is logged. The mesh API and the
// client API both answer errors through Decide.
//
// Callers of the mesh API have proved nothing when they get an error, so
// internal details (store failures, file paths, wrapped Go errors) never
// reach them: internal errors and errors without a kind are answered with
// a fixed message and a short id that is also in the log line.
package apierror

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"

	"google.golang.org/grpc/codes"

	"github.com/marblemesh/marblemesh/internal/coordinator/core"
)

// Exposure says how much of an error the caller sees.
type Exposure int

const (
	// Full shows the *core.Error's text: its reason and the wrapped
	// detail, which for these kinds is about the caller's own input or
	// evidence (such as why a quote did not verify).
	Full Exposure = iota
	// ReasonOnly shows the *core.Error's reason, not the wrapped error.
	ReasonOnly
	// Hidden shows a fixed message with an id; the error is only logged.
	Hidden
)

// Policy is how one kind of error is answered.
type Policy struct {
	GRPC codes.Code
	HTTP int
	// Fail selects JSend's "fail" form (a client error) over "error".
	Fail   bool
	Expose Exposure
	Level  slog.Level
}

// PolicyOf returns the policy of kind k; errors without a kind, and
// unknown kinds, are internal.
func PolicyOf(k core.Kind) Policy {
	switch k {
	case core.KindInvalidArgument:
		return Policy{codes.InvalidArgument, http.StatusBadRequest, true, Full, slog.LevelDebug}
	case core.KindFailedPrecondition:
		return Policy{codes.FailedPrecondition, http.StatusBadRequest, true, Full, slog.LevelDebug}
	case core.KindResourceExhausted:
		return Policy{codes.ResourceExhausted, http.StatusBadRequest, true, Full, slog.LevelDebug}
	case core.KindUnauthenticated:
		return Policy{codes.Unauthenticated, http.StatusUnauthorized, true, Full, slog.LevelDebug}
	case core.KindPermissionDenied:
		// Callers who proved nothing can send refused requests in a loop:
		// the caller's own mistakes are logged at debug level only (the
		// core logs a rejected marble itself).
		return Policy{codes.PermissionDenied, http.StatusForbidden, false, Full, slog.LevelDebug}
	case core.KindNotFound:
		return Policy{codes.NotFound, http.StatusNotFound, false, Full, slog.LevelDebug}
	case core.KindUnimplemented:
		return Policy{codes.Unimplemented, http.StatusNotImplemented, false, Full, slog.LevelDebug}
	case core.KindUnavailable:
		// The wrapped error says why the evidence cannot be checked now
		// (the collateral service's answer), which the marble's operator
		// needs.
		return Policy{codes.Unavailable, http.StatusServiceUnavailable, false, Full, slog.LevelWarn}
	case core.KindDataLoss:
		// The reason tells a recovering operator that the state is
		// damaged, so that a new manifest is the way on; the wrapped error
		// is logged.
		return Policy{codes.DataLoss, http.StatusInternalServerError, false, ReasonOnly, slog.LevelError}
	default:
		return Policy{codes.Internal, http.StatusInternalServerError, false, Hidden, slog.LevelError}
	}
}

// Decision is the answer to one error.
type Decision struct {
	Policy
	// Message is what the caller sees.
	Message string
	// ID correlates a hidden error's answer with its log line; "" when
	// the error is shown.
	ID string
}

// Decide answers err: it logs it under msg with attrs (the method, path or
// marble type of the request) at the kind's level and returns what the
// caller gets.
func Decide(ctx context.Context, log *slog.Logger, msg string, err error, attrs ...any) Decision {
	var ce *core.Error
	kind := core.KindInternal
	if errors.As(err, &ce) {
		kind = ce.Kind
	} else {
		ce = nil
	}
	p := PolicyOf(kind)
	d := Decision{Policy: p}
	switch {
	case p.Expose == Full && ce != nil:
		d.Message = ce.Error()
	case p.Expose == ReasonOnly && ce != nil:
		d.Message = ce.Reason
	default:
		d.ID = newID()
		d.Message = "internal error (id " + d.ID + "); the Coordinator's log has the details"
	}
	if !log.Enabled(ctx, p.Level) {
		return d
	}
	args := append([]any{"kind", kind.String(), "error", err.Error()}, attrs...)
	if d.ID != "" {
		args = append(args, "id", d.ID)
	}
	log.Log(ctx, p.Level, msg, args...)
	return d
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
