package marble

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/marblemesh/marblemesh/rpc"
)

// Apply puts the parameters returned by Activate into effect:
//
//   - every file in p.Files is written with mode 0600, its missing parent
//     folders created with mode 0700 (relative paths are relative to the
//     working directory);
//   - every variable in p.Env is set through setenv (os.Setenv in
//     production);
//   - the returned argv is p.Argv, or defaultArgv when p.Argv is empty.
//
// Every name and path is checked before anything is written. Apply logs
// nothing: file contents and variable values are secrets.
func Apply(p *rpc.Parameters, setenv func(key, value string) error, defaultArgv []string) ([]string, error) {
	if p == nil {
		p = &rpc.Parameters{}
	}
	if setenv == nil {
		return nil, fmt.Errorf("applying marble parameters: no setenv function")
	}
	files := p.GetFiles()
	env := p.GetEnv()
	paths := sortedKeys(files)
	for _, path := range paths {
		if path == "" || strings.ContainsRune(path, 0) {
			return nil, fmt.Errorf("coordinator sent an invalid file path %q", path)
		}
	}
	keys := sortedKeys(env)
	for _, k := range keys {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, fmt.Errorf("coordinator sent an invalid environment variable name %q", k)
		}
		if bytes.IndexByte(env[k], 0) >= 0 {
			return nil, fmt.Errorf("coordinator sent environment variable %s with a NUL byte in its value", k)
		}
	}

	for _, path := range paths {
		if err := writeSecretFile(path, files[path]); err != nil {
			return nil, err
		}
	}
	for _, k := range keys {
		if err := setenv(k, string(env[k])); err != nil {
			return nil, fmt.Errorf("setting environment variable %s: %w", k, err)
		}
	}
	if argv := p.GetArgv(); len(argv) > 0 {
		return slices.Clone(argv), nil
	}
	return slices.Clone(defaultArgv), nil
}

// writeSecretFile writes data to path with mode 0600, also when the file
// existed with another mode, creating missing folders with mode 0700.
func writeSecretFile(path string, data []byte) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating the folder of %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600) //nolint:gosec // G304: a file the manifest names for this marble: writing it is the point
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing %s: %w", path, cerr)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("restricting the mode of %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
