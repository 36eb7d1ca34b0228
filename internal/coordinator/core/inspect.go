package core

import (
	"fmt"
	"strconv"
	"strings"
)

// StoredActivations returns the activation counts that a stored state (as
// a Store's Load returns it) holds for the marble types with
// MaxActivations: the counts every Coordinator sharing the state enforces.
// It lets an inspection of the store, such as a test of several
// Coordinators, compare them with the activations acknowledged to marbles.
func StoredActivations(stored map[string][]byte) (map[string]uint64, error) {
	out := map[string]uint64{}
	for k, v := range stored {
		typ, ok := strings.CutPrefix(k, prefixActivations)
		if !ok {
			continue
		}
		n, err := parseStoredCount(k, v)
		if err != nil {
			return nil, err
		}
		out[typ] = n
	}
	return out, nil
}

// parseStoredCount parses the stored value v of the counter under key k.
func parseStoredCount(k string, v []byte) (uint64, error) {
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stored counter %q: %w", k, err)
	}
	return n, nil
}
