package coordinator_test

import (
	"context"
	"crypto/elliptic"
	"testing"

	"github.com/google/uuid"

	"github.com/marblemesh/marblemesh/test/coordtest"
)

// BenchmarkActivation measures one activation over a fresh TLS connection,
// load generator included; profile it to see the Coordinator's share.
func BenchmarkActivation(b *testing.B) {
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		b.Run(curve.Params().Name, func(b *testing.B) {
			c := coordtest.Start(b)
			c.SetManifest(b, readManifest(b))
			ids := make([]*coordtest.MarbleIdentity, 16)
			for i := range ids {
				id, err := coordtest.NewMarbleIdentity(curve, "backend")
				if err != nil {
					b.Fatal(err)
				}
				ids[i] = id
			}
			b.ResetTimer()
			i := 0
			for b.Loop() {
				id := ids[i%len(ids)]
				i++
				conn, err := coordtest.Dial(c.MeshAddr(), id)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := coordtest.Activate(context.Background(), conn, id, "backend", uuid.NewString()); err != nil {
					b.Fatal(err)
				}
				conn.Close()
			}
		})
	}
}
