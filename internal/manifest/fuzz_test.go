package manifest

import (
	"encoding/json"
	"testing"
)

// FuzzParse feeds arbitrary documents to Parse and, when they decode, to
// Check, Warnings, Compile, Render and the update checks: none may panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sampleJSON))
	fx := newFixtures(f)
	valid, err := json.Marshal(validManifest(fx))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"Packages": {"p": {"Debug": true}}, "Marbles": {"m": {"Package": "p", "Parameters": {"Env": {"A": "{{ range .Secrets }}{{ hex . }}{{ end }}"}}}}, "Secrets": {"k": {"Type": "symmetric-key", "Size": 128}}}`))
	f.Add([]byte(`{"packages": {"p": {"securityversion": 2}}}`))
	f.Add([]byte(`{"Secrets": {"c": {"Type": "cert-ed25519", "Cert": {"Subject": {"CommonName": "x"}, "NotAfter": "2030-01-01T00:00:00Z"}}}}`))
	f.Add([]byte(`{"Marbles": {"m": {"Parameters": {"Files": {"/a": {"Data": "e3sgLlNlY3JldHMueCB9fQ==", "Encoding": "base64"}}}}}}`))
	f.Add([]byte(`{"TLS": {"t": {"Incoming": [{"Port": "1", "Cert": "c", "DisableClientAuth": true}]}}, "Marbles": {"m": {"TLS": ["t"]}}}`))
	f.Add([]byte(`{} x`))

	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			if m != nil {
				t.Fatal("Parse returned a manifest and an error")
			}
			return
		}
		_ = m.Check()
		_ = m.Warnings()
		_ = m.IsPackageUpdate()
		_ = CheckPackageUpdate(m, m)
		for name := range m.Marbles {
			_, _ = m.TTLSConfig(name, "root", "cert", "key", m.Secrets)
		}
		if compiled, err := m.Compile(); err == nil {
			for _, c := range compiled {
				_, _ = c.SecretNames()
				_, _, _ = c.Render(&TemplateData{Secrets: m.Secrets})
			}
		}
		if out, err := json.Marshal(m); err == nil {
			if _, err := Parse(out); err != nil {
				t.Fatalf("re-parsing a marshalled manifest failed: %v", err)
			}
		}
	})
}
