package cli

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWriteOutputTargets(t *testing.T) {
	data := []byte("new content\n")
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the -o value
		check func(t *testing.T, dir, out string, stdout []byte)
	}{
		{"dash is standard output", func(t *testing.T, dir string) string {
			t.Chdir(dir)
			return "-"
		}, func(t *testing.T, dir, _ string, stdout []byte) {
			if !bytes.Equal(stdout, data) {
				t.Fatalf("stdout %q", stdout)
			}
			if _, err := os.Lstat(filepath.Join(dir, "-")); !os.IsNotExist(err) {
				t.Fatalf("a file named - was written: %v", err)
			}
		}},
		{"absent file is created", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "new.txt")
		}, func(t *testing.T, _, out string, _ []byte) {
			assertFile(t, out, data, 0o600)
		}},
		{"regular file is replaced keeping its mode", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "old.txt")
			writeTestFile(t, p, "old", 0o640)
			return p
		}, func(t *testing.T, _, out string, _ []byte) {
			assertFile(t, out, data, 0o600) // private content narrows 0640 to 0600
		}},
		{"symlink to a regular file stays a symlink", func(t *testing.T, dir string) string {
			target := filepath.Join(dir, "target.txt")
			writeTestFile(t, target, "old content that is longer", 0o600)
			link := filepath.Join(dir, "link")
			mustSymlink(t, target, link)
			return link
		}, func(t *testing.T, dir, out string, _ []byte) {
			assertSymlink(t, out, filepath.Join(dir, "target.txt"))
			assertFile(t, filepath.Join(dir, "target.txt"), data, 0o600)
		}},
		{"symlink to /dev/null stays a symlink", func(t *testing.T, dir string) string {
			link := filepath.Join(dir, "null")
			mustSymlink(t, os.DevNull, link)
			return link
		}, func(t *testing.T, _, out string, _ []byte) {
			assertSymlink(t, out, os.DevNull)
			fi, err := os.Stat(os.DevNull)
			if err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
				t.Fatalf("/dev/null is no longer a device: %v %v", fi, err)
			}
		}},
		{"FIFO is written in place, and a symlink to it stays", func(t *testing.T, dir string) string {
			fifo := filepath.Join(dir, "fifo")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(dir, "fifo-link")
			mustSymlink(t, fifo, link)
			got := make(chan []byte, 1)
			go func() {
				b, _ := os.ReadFile(fifo) // opens the reading end, reads to EOF
				got <- b
			}()
			t.Cleanup(func() {
				select {
				case b := <-got:
					if !bytes.Equal(b, data) {
						t.Errorf("FIFO reader got %q", b)
					}
				case <-time.After(5 * time.Second):
					t.Error("FIFO reader got nothing")
				}
			})
			return link
		}, func(t *testing.T, dir, out string, _ []byte) {
			assertSymlink(t, out, filepath.Join(dir, "fifo"))
			fi, err := os.Lstat(filepath.Join(dir, "fifo"))
			if err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
				t.Fatalf("the FIFO was replaced: %v %v", fi, err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := tc.setup(t, dir)
			var stdout bytes.Buffer
			o := &output{out: &stdout, errOut: &bytes.Buffer{}}
			if err := o.writeOutput(out, data, 0o600); err != nil {
				t.Fatal(err)
			}
			tc.check(t, dir, out, stdout.Bytes())
		})
	}
}

func TestWriteOutputRefuses(t *testing.T) {
	dir := t.TempDir()
	dangling := filepath.Join(dir, "dangling")
	mustSymlink(t, filepath.Join(dir, "missing"), dangling)
	for _, tc := range []struct{ path, want string }{
		{dir, "is a folder"},
		{dangling, "symbolic link"},
	} {
		o := &output{out: &bytes.Buffer{}, errOut: &bytes.Buffer{}}
		err := o.writeOutput(tc.path, []byte("x"), 0o644)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %q", tc.path, err, tc.want)
		}
	}
	assertSymlink(t, dangling, filepath.Join(dir, "missing"))
}

func writeTestFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func assertSymlink(t *testing.T, link, target string) {
	t.Helper()
	got, err := os.Readlink(link)
	if err != nil || got != target {
		t.Fatalf("%s is no longer a symlink to %s: %q %v", link, target, got, err)
	}
}

func assertFile(t *testing.T, p string, want []byte, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != mode {
		t.Fatalf("%s: %v %v, want a regular file with mode %v", p, fi, err, mode)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s holds %q (%v), want %q", p, got, err, want)
	}
}
