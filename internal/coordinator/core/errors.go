package core

import (
	"errors"
	"fmt"
)

// Kind classifies an error for the API layers, which map it to an HTTP
// status or a gRPC code.
type Kind int

// Error kinds.
const (
	KindInternal           Kind = iota // a fault of the Coordinator
	KindInvalidArgument                // the request is malformed
	KindFailedPrecondition             // not allowed in the current state
	KindPermissionDenied               // the caller may not do this
	KindResourceExhausted              // a limit was reached
	KindUnauthenticated                // the caller did not identify itself
	KindNotFound                       // what was asked for does not exist
	KindUnimplemented                  // this Coordinator cannot do it at all
	KindDataLoss                       // stored data is damaged beyond repair
	KindUnavailable                    // a service the Coordinator needs is down; retry later
)

// String names the kind as its constant does, without the prefix.
func (k Kind) String() string {
	switch k {
	case KindInternal:
		return "Internal"
	case KindInvalidArgument:
		return "InvalidArgument"
	case KindFailedPrecondition:
		return "FailedPrecondition"
	case KindPermissionDenied:
		return "PermissionDenied"
	case KindResourceExhausted:
		return "ResourceExhausted"
	case KindUnauthenticated:
		return "Unauthenticated"
	case KindNotFound:
		return "NotFound"
	case KindUnimplemented:
		return "Unimplemented"
	case KindDataLoss:
		return "DataLoss"
	case KindUnavailable:
		return "Unavailable"
	default:
		return fmt.Sprintf("Kind(%d)", int(k))
	}
}

// Error is an error with a kind and a reason safe to show to the caller.
type Error struct {
	Kind   Kind
	Reason string
	Err    error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Reason, e.Err)
	}
	return e.Reason
}

func (e *Error) Unwrap() error { return e.Err }

func newError(kind Kind, err error, format string, args ...any) *Error {
	return &Error{Kind: kind, Reason: fmt.Sprintf(format, args...), Err: err}
}

// KindOf returns the kind of err, KindInternal if it has none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}
