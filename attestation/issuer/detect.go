package issuer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// GramineFolder is what a Gramine attestation folder shows. The
// Coordinator and the marble runtime both choose their evidence issuer
// from it.
type GramineFolder struct {
	// Dir is the folder looked at.
	Dir string
	// QuotePath is Dir/quote. Gramine creates it only under gramine-sgx
	// with sgx.remote_attestation = "dcap".
	QuotePath string
	// KeysPath is Dir/keys, the folder of Gramine's SGX sealing keys.
	KeysPath string
	// HasQuote and HasKeys say whether QuotePath (a file) and KeysPath (a
	// folder) exist.
	HasQuote, HasKeys bool
}

// InspectGramine looks for Gramine's quote file and keys folder in dir;
// an empty dir selects GramineDir. A missing folder is not an error: it
// shows neither. It fails when the state of a path cannot be told, or when
// quote is a folder or keys is a file, which is not Gramine's layout.
func InspectGramine(dir string) (GramineFolder, error) {
	if dir == "" {
		dir = GramineDir
	}
	f := GramineFolder{Dir: dir, QuotePath: filepath.Join(dir, "quote"), KeysPath: filepath.Join(dir, "keys")}
	var err error
	if f.HasQuote, err = exists(f.QuotePath, false); err != nil {
		return GramineFolder{}, err
	}
	if f.HasKeys, err = exists(f.KeysPath, true); err != nil {
		return GramineFolder{}, err
	}
	return f, nil
}

// AttestationType returns the folder's attestation_type ("dcap", "none"…)
// quoted, or "unreadable" when it cannot be read (gramine-direct has none).
func (f GramineFolder) AttestationType() string {
	b, err := os.ReadFile(filepath.Join(f.Dir, "attestation_type"))
	if err != nil {
		return "unreadable"
	}
	return fmt.Sprintf("%q", strings.TrimSpace(string(b)))
}

// Issuer returns the Gramine issuer of the folder.
func (f GramineFolder) Issuer() *Gramine { return NewGramine(f.Dir) }

// exists reports whether path exists as a folder (dir) or a non-folder.
func exists(path string, dir bool) (bool, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking for the TEE: %w", err)
	}
	if fi.IsDir() != dir {
		want := "a file"
		if dir {
			want = "a folder"
		}
		return false, fmt.Errorf("looking for the TEE: %s is not %s", path, want)
	}
	return true, nil
}
