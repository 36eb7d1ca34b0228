package marble

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
)

// LoadOrCreateUUID returns the UUID stored in path. When the file does not
// exist it creates a random UUID and stores it there with mode 0600,
// creating missing parent folders with mode 0700. created reports which
// case happened.
//
// The file may hold any textual UUID surrounded by white space, such as a
// Kubernetes Pod UID written by the downward API.
func LoadOrCreateUUID(path string) (id uuid.UUID, created bool, err error) {
	id, err = readUUID(path)
	if err == nil {
		return id, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return uuid.UUID{}, false, err
	}

	id, err = uuid.NewRandom()
	if err != nil {
		return uuid.UUID{}, false, fmt.Errorf("generating a UUID: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return uuid.UUID{}, false, fmt.Errorf("creating the folder of UUID file %s: %w", path, err)
	}
	// O_EXCL keeps a concurrently created file instead of overwriting it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // G304: the operator's EDG_MARBLE_UUID_FILE
	if errors.Is(err, fs.ErrExist) {
		id, err = readUUID(path)
		return id, false, err
	}
	if err != nil {
		return uuid.UUID{}, false, fmt.Errorf("creating UUID file: %w", err)
	}
	_, werr := f.WriteString(id.String())
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return uuid.UUID{}, false, fmt.Errorf("writing UUID file %s: %w", path, werr)
	}
	return id, true, nil
}

// readUUID parses the UUID stored in path. A missing file yields an error
// that matches fs.ErrNotExist.
func readUUID(path string) (uuid.UUID, error) {
	data, err := os.ReadFile(path) //nolint:gosec // G304: the operator's EDG_MARBLE_UUID_FILE
	if err != nil {
		return uuid.UUID{}, fmt.Errorf("reading UUID file: %w", err)
	}
	text := strings.TrimSpace(string(data))
	if text == "" {
		return uuid.UUID{}, fmt.Errorf("UUID file %s is empty", path)
	}
	id, err := uuid.Parse(text)
	if err != nil {
		return uuid.UUID{}, fmt.Errorf("UUID file %s does not hold a UUID: %w", path, err)
	}
	if id == uuid.Nil {
		return uuid.UUID{}, fmt.Errorf("UUID file %s holds the nil UUID", path)
	}
	return id, nil
}
