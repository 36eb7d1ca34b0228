package injector

import "testing"

func BenchmarkReview(b *testing.B) {
	c := reviewCases()[0]
	c.pod = marblePod("voting-svc", container("voting", env("A", "1"), env("B", "2")), container("envoy"))
	body := c.encodeReview(b, nil)
	cfg := testConfig()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if r := Review(body, cfg); r.Decision.Outcome != Mutated {
			b.Fatal(r.Decision.Reason)
		}
	}
}
