package health

import (
	"fmt"
	"time"
)

// WedgeBound is how long one operation may hold the Coordinator's core
// (the lock that serialises every change of state and every store write)
// before the Coordinator counts as wedged. Each request to a store is
// bounded far below it (the Kubernetes API's requests by 30 s each), so
// an operation that holds the core this long waits for something that
// does not come back, such as a write to a hung volume: restarting the
// process is then the remedy.
const WedgeBound = 5 * time.Minute

// Alive is the liveness verdict (GET /healthz) of a Coordinator whose
// core has been held by the same operation for held (0 when no
// operation holds it): alive unless held exceeds WedgeBound. Being in
// recovery, behind the shared state or without the Kubernetes API does
// not make a Coordinator dead: readiness reports those, and a restart
// would not mend them.
func Alive(held time.Duration) (bool, string) {
	if held > WedgeBound {
		return false, fmt.Sprintf("one operation has held the Coordinator's core for %s (more than %s): the Coordinator is wedged", held.Round(time.Second), WedgeBound)
	}
	return true, ""
}
