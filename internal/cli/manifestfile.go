package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"sigs.k8s.io/yaml"

	"github.com/marblemesh/marblemesh/internal/manifest"
)

// loadManifest reads a manifest file. A JSON manifest is returned byte for
// byte, so that its signature is the hash of the file; a YAML manifest is
// converted strictly (duplicate keys are errors) to JSON first, and the
// JSON is what is hashed and uploaded.
func loadManifest(path string) ([]byte, error) {
	raw, err := readFile("manifest", path)
	if err != nil {
		return nil, err
	}
	return normalizeManifest(path, raw)
}

func normalizeManifest(path string, raw []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("manifest %s is empty", path)
	}
	if json.Valid(raw) {
		if trimmed[0] != '{' {
			return nil, fmt.Errorf("manifest %s: the top level must be a JSON object", path)
		}
		return raw, nil
	}
	if trimmed[0] == '{' || trimmed[0] == '[' {
		// Meant as JSON: report the JSON error, which has an offset.
		var v any
		err := json.Unmarshal(raw, &v)
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("manifest %s is not valid JSON: %w (at byte %d)", path, se, se.Offset)
		}
		return nil, fmt.Errorf("manifest %s is not valid JSON: %w", path, err)
	}
	converted, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return nil, fmt.Errorf("manifest %s is neither JSON nor valid YAML: %w", path, err)
	}
	if !bytes.HasPrefix(bytes.TrimSpace(converted), []byte("{")) {
		return nil, fmt.Errorf("manifest %s: the top level must be a mapping (a JSON object)", path)
	}
	return converted, nil
}

// checkManifest validates a complete manifest locally, so that mistakes
// are reported before anything is uploaded, and returns it.
func checkManifest(path string, raw []byte) (*manifest.Manifest, error) {
	m, err := manifest.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("%s is not a valid manifest: %w", path, err)
	}
	return m, nil
}

// checkUpdateManifest checks that an update manifest decodes. A package
// update holds only Packages and is not a complete manifest; the
// Coordinator checks updates against the current manifest.
func checkUpdateManifest(path string, raw []byte) error {
	m, err := manifest.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if m.IsPackageUpdate() {
		return nil
	}
	if err := m.Check(); err != nil {
		return fmt.Errorf("%s is not a valid manifest: %w", path, err)
	}
	return nil
}
