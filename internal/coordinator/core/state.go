package core

import "fmt"

// State is the Coordinator's lifecycle state, with MarbleRun's codes.
type State int

// The states. A Coordinator only moves to a higher state; recovery (1)
// leads to accepting marbles (3) once the sealed state is unlocked or a new
// manifest replaces it.
const (
	StateUninitialized     State = 0
	StateRecovery          State = 1
	StateAcceptingManifest State = 2
	StateAcceptingMarbles  State = 3
)

// Message is the status text clients show for the state.
func (s State) Message() string {
	switch s {
	case StateUninitialized:
		return "Coordinator is starting up."
	case StateRecovery:
		return "Coordinator is in recovery mode. Either upload a key to unseal the saved state, or set a new manifest. For more information on how to proceed, consult the documentation."
	case StateAcceptingManifest:
		return "Coordinator is ready to accept a manifest."
	case StateAcceptingMarbles:
		return "Coordinator is running correctly and ready to accept marbles."
	default:
		return fmt.Sprintf("unknown state %d", int(s))
	}
}

func (s State) String() string {
	switch s {
	case StateUninitialized:
		return "uninitialized"
	case StateRecovery:
		return "recovery"
	case StateAcceptingManifest:
		return "accepting manifest"
	case StateAcceptingMarbles:
		return "accepting marbles"
	default:
		return fmt.Sprintf("state(%d)", int(s))
	}
}

// canMoveTo reports whether the lifecycle allows going from s to next.
func (s State) canMoveTo(next State) bool {
	return next > s
}
