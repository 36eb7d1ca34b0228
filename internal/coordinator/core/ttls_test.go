package core

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/marblemesh/marblemesh/attestation"
	"github.com/marblemesh/marblemesh/internal/coordinator/store"
)

// TestSetManifestNotesTransparentTLS: the Coordinator's log says, at
// manifest set, which marbles carry TLS tags and that only Go services
// using the marble package apply them.
func TestSetManifestNotesTransparentTLS(t *testing.T) {
	withTags := testManifest(t)
	var doc map[string]any
	if err := json.Unmarshal(withTags, &doc); err != nil {
		t.Fatal(err)
	}
	for _, mb := range doc["Marbles"].(map[string]any) {
		delete(mb.(map[string]any), "TLS")
	}
	withoutTags, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		manifest []byte
		want     bool
	}{
		{"TLS tags", withTags, true},
		{"no TLS tags", withoutTags, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			c, err := New(Config{Simulation: true, Issuer: attestation.SimulationIssuer{}, Store: store.NewMemory(),
				DNSNames: []string{"localhost"}, RecoveryKeyBits: 2048, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.SetManifest(context.Background(), tc.manifest); err != nil {
				t.Fatal(err)
			}
			var line string
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "transparent TLS") {
					line = l
				}
			}
			if !tc.want {
				if line != "" {
					t.Fatalf("a manifest without TLS tags logged %q", line)
				}
				return
			}
			for _, want := range []string{"level=WARN", `\"frontend\"`, "marbles=[frontend]", "marble package", "premain get no transparent TLS", "MARBLE_PREDEFINED_"} {
				if !strings.Contains(line, want) {
					t.Errorf("log line lacks %q: %q", want, line)
				}
			}
		})
	}
}
