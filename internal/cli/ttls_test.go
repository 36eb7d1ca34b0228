package cli

import (
	"strings"
	"testing"
)

// TestManifestSetNotesTransparentTLS: manifest set says on stderr which
// marbles carry TLS tags and that programs under premain get no
// transparent TLS; it says nothing of the kind for a manifest without tags.
func TestManifestSetNotesTransparentTLS(t *testing.T) {
	t.Parallel()
	withTags := `{
  "Packages": {"pkg": {"SignerID": "43361affedeb75affee9baec7e054a5e14883213e5a121b67d74a0e12e9d2b7a", "ProductID": 43, "SecurityVersion": 3}},
  "Marbles": {
    "web": {"Package": "pkg", "TLS": ["mesh"]},
    "api": {"Package": "pkg", "TLS": ["mesh"]},
    "batch": {"Package": "pkg"}
  },
  "TLS": {"mesh": {"Incoming": [{"Port": "8080"}], "Outgoing": [{"Addr": "api", "Port": "8080"}]}}
}`
	e := newEnv(t)
	r := e.ok("manifest", "set", e.write("ttls.json", []byte(withTags)), startCoordinator(t).ClientAddr(), "-i")
	var note string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "Note: ") {
			note = l
		}
	}
	for _, want := range []string{`marble(s) "api", "web" carry TLS tags`, "marble package", "Programs run under premain get no transparent TLS",
		"connections stay plain", "MARBLE_PREDEFINED_"} {
		if !strings.Contains(note, want) {
			t.Errorf("manifest set stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(note, "batch") || strings.Contains(r.stdout, "TLS tags") {
		t.Errorf("the note names a marble without tags or went to stdout:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
	}

	e = newEnv(t)
	r = e.ok("manifest", "set", "testdata/manifest.json", startCoordinator(t).ClientAddr(), "-i")
	if strings.Contains(r.stderr, "TLS tags") {
		t.Errorf("a manifest without TLS tags got the note:\n%s", r.stderr)
	}
}
