package marble

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestLoadOrCreateUUID(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "marble", "uuid")

	first, created, err := LoadOrCreateUUID(path)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatal("created = false for a missing file")
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Fatalf("uuid file mode = %o, want 600", mode)
	}
	dirInfo, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if mode := dirInfo.Mode().Perm(); mode&0o077 != 0 {
		t.Fatalf("created folder mode = %o, want no group/other bits", mode)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != first.String() {
		t.Fatalf("file holds %q, want %q", data, first)
	}

	second, created, err := LoadOrCreateUUID(path)
	if err != nil {
		t.Fatal(err)
	}
	if created || second != first {
		t.Fatalf("second call: created=%v id=%s, want reuse of %s", created, second, first)
	}
}

func TestLoadUUIDFormats(t *testing.T) {
	const podUID = "5c2f7b0e-8d0a-4f57-9a4e-3a1f2b6c9d10"
	tests := []struct {
		name    string
		content string
		want    string
		wantErr string
	}{
		{name: "pod uid", content: podUID, want: podUID},
		{name: "trailing newline", content: podUID + "\n", want: podUID},
		{name: "upper case with spaces", content: "  " + strings.ToUpper(podUID) + "\r\n", want: podUID},
		{name: "empty", content: "", wantErr: "empty"},
		{name: "garbage", content: "not-a-uuid", wantErr: "does not hold a UUID"},
		{name: "nil uuid", content: uuid.Nil.String(), wantErr: "nil UUID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "uuid-file")
			if err := os.WriteFile(path, []byte(tc.content), 0o444); err != nil {
				t.Fatal(err)
			}
			got, created, err := LoadOrCreateUUID(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), path) {
					t.Fatalf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if created || got.String() != tc.want {
				t.Fatalf("got %s (created %v), want %s", got, created, tc.want)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(after) != tc.content {
				t.Fatal("an existing UUID file was rewritten")
			}
		})
	}
}

func TestLoadOrCreateUUIDUnwritable(t *testing.T) {
	if os.Geteuid() == 0 {
		// root writes through mode bits; use a path under a regular file.
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreateUUID(filepath.Join(file, "uuid")); err == nil {
			t.Fatal("no error for a path below a regular file")
		}
		return
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	if _, _, err := LoadOrCreateUUID(filepath.Join(dir, "uuid")); err == nil {
		t.Fatal("no error for an unwritable folder")
	}
}
