package store

import (
	"strconv"
	"testing"
)

// BenchmarkKubeCommit measures a one-key commit (an activation counter)
// of a store holding the medium state, against the API server, with the
// compactions it leads to, and reports the API requests per commit.
func BenchmarkKubeCommit(b *testing.B) {
	ns := kubeEnv(b).Namespace(b)
	var c requestCount
	s := countedKube(b, ns, &c)
	if _, err := s.Reset(b.Context(), mediumState()); err != nil {
		b.Fatal(err)
	}
	c.reset()
	b.ResetTimer()
	for i := range b.N {
		if err := s.Commit(b.Context(), kv("activations/marble-00042", strconv.Itoa(i))); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(c.writes.Load())/float64(b.N), "writes/op")
	b.ReportMetric(float64(c.reads.Load())/float64(b.N), "reads/op")
}
