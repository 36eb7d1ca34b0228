package hatest_test

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/test/hatest"
)

// load is what one test sent and was told.
type load struct {
	notes, svns           writes
	free, limited, scarce activations
	limitedMax, scarceMax int
}

// checkNothingLost checks, once the load has ended and every replica runs,
// that each replica serves every acknowledged write and that the stored
// activation counts hold every acknowledged activation of the limited
// types and no more than their MaxActivations.
func checkNothingLost(t *testing.T, cl *hatest.Cluster, root *x509.Certificate, u users, l *load) {
	t.Helper()
	ctx := t.Context()
	attempted, acked, _, _ := l.notes.snapshot()
	lastNote := 0
	if len(acked) > 0 {
		lastNote = acked[len(acked)-1]
	}
	_, svnAcked, _, _ := l.svns.snapshot()
	for _, r := range cl.Replicas {
		writer := hatest.NewClient(r.ClientAddr, root, u.writer.TLS)
		eventually(t, r.Name+" serves the last acknowledged note or a later one", func() error {
			v, err := readNote(ctx, writer)
			if err != nil {
				return err
			}
			i, err := strconv.Atoi(strings.TrimPrefix(v, "note-"))
			if err != nil || !strings.HasPrefix(v, "note-") {
				return fmt.Errorf("the note is %q, not one that was written", v)
			}
			if i < lastNote || i > attempted {
				return fmt.Errorf("the note is write %d; the last acknowledged is %d, the last sent %d", i, lastNote, attempted)
			}
			return nil
		})
		anyone := hatest.NewClient(r.ClientAddr, root)
		eventually(t, r.Name+" logs every acknowledged SecurityVersion", func() error {
			logged, err := securityVersions(ctx, anyone)
			if err != nil {
				return err
			}
			for _, i := range svnAcked {
				if !slices.Contains(logged, 1+i) {
					return fmt.Errorf("the acknowledged SecurityVersion %d is not in the update log %v", 1+i, logged)
				}
			}
			if !slices.IsSorted(logged) {
				return fmt.Errorf("the logged SecurityVersions do not increase: %v", logged)
			}
			return nil
		})
	}

	counts, err := cl.StoredActivations(ctx)
	if err != nil {
		t.Fatalf("reading the stored activation counts: %v", err)
	}
	for _, c := range []struct {
		typ   string
		a     *activations
		limit int
	}{{typeLimited, &l.limited, l.limitedMax}, {typeScarce, &l.scarce, l.scarceMax}} {
		acks, stored := c.a.acks.Load(), int64(counts[c.typ]) //nolint:gosec // counts are far below 2^63
		// Failed activations may have been counted (the Coordinator may
		// have died after storing the count), and so may those cut by
		// the end of the load.
		unknown := c.a.failed.Load() + c.a.cut.Load()
		if acks > int64(c.limit) {
			t.Errorf("%s: %d activations acknowledged, more than MaxActivations %d", c.typ, acks, c.limit)
		}
		if stored < acks {
			t.Errorf("%s: the state counts %d activations, but %d were acknowledged: acknowledged activations were lost", c.typ, stored, acks)
		}
		if stored > acks+unknown {
			t.Errorf("%s: the state counts %d activations, more than the %d acknowledged and %d of unknown outcome", c.typ, stored, acks, unknown)
		}
		if stored > int64(c.limit) {
			t.Errorf("%s: the state counts %d activations, more than MaxActivations %d", c.typ, stored, c.limit)
		}
		t.Logf("%s (MaxActivations %d): %s; stored count %d", c.typ, c.limit, c.a.String(), stored)
	}
}
