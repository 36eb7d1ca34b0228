//go:build linux

package issuer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestTSMGenerationChange makes outblob a FIFO whose writer bumps the
// generation before it answers, as a concurrent writer would.
func TestTSMGenerationChange(t *testing.T) {
	dir := t.TempDir()
	writeFake(t, dir, map[string][]byte{"inblob": nil, "provider": []byte("tdx_guest"), "generation": []byte("1")})
	out := filepath.Join(dir, "outblob")
	if err := syscall.Mkfifo(out, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(out, os.O_WRONLY, 0)
		if err != nil {
			done <- err
			return
		}
		if err := os.WriteFile(filepath.Join(dir, "generation"), []byte("2"), 0o600); err != nil {
			f.Close()
			done <- err
			return
		}
		_, err = f.Write([]byte("quote"))
		f.Close()
		done <- err
	}()
	_, err := NewTSM(dir, "tdx_guest").Issue(context.Background(), [64]byte{1})
	if werr := <-done; werr != nil {
		t.Fatal(werr)
	}
	if !errors.Is(err, ErrIssue) || !strings.Contains(err.Error(), "generation: expected 1, found 2") {
		t.Fatalf("expected generation conflict, found %v", err)
	}
}
