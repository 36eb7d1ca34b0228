package store

import (
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
)

// benchStore returns an open FileStore holding about 5 MB of state.
func benchStore(b *testing.B) (*FileStore, string) {
	b.Helper()
	dir := b.TempDir()
	s := openFile(b, dir, sealerWith(b, 1))
	if _, err := s.Reset(b.Context(), bigState(5000, 1024)); err != nil {
		b.Fatal(err)
	}
	return s, dir
}

// reportJournalGrowth reports journal bytes per commit if no compaction
// happened during the benchmark.
func reportJournalGrowth(b *testing.B, dir string, before int64, commits int64) {
	b.Helper()
	if snapshotGeneration(b, dir) != 1 || commits == 0 {
		return
	}
	growth := fileSize(b, filepath.Join(dir, journalName)) - before
	b.ReportMetric(float64(growth)/float64(commits), "journal-B/commit")
}

// BenchmarkCommitSmall commits one small key against a 5 MB state.
func BenchmarkCommitSmall(b *testing.B) {
	s, dir := benchStore(b)
	before := fileSize(b, filepath.Join(dir, journalName))
	ch := kv("activations/web", "0")
	b.ReportAllocs()
	var n int64
	for b.Loop() {
		n++
		ch["activations/web"] = strconv.AppendInt(nil, n, 10)
		if err := s.Commit(b.Context(), ch); err != nil {
			b.Fatal(err)
		}
	}
	reportJournalGrowth(b, dir, before, n)
}

// BenchmarkCommitSmallParallel commits small keys from many goroutines,
// which share fsyncs.
func BenchmarkCommitSmallParallel(b *testing.B) {
	s, dir := benchStore(b)
	before := fileSize(b, filepath.Join(dir, journalName))
	var n atomic.Int64
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if err := s.Commit(b.Context(), kv("activations/"+strconv.FormatInt(i%64, 10), strconv.FormatInt(i, 10))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportJournalGrowth(b, dir, before, n.Load())
}
