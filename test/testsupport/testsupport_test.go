package testsupport

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestGoBuild(t *testing.T) {
	dir := GoBuild(t, "github.com/marblemesh/marblemesh/cmd/coordinator")
	out, err := exec.Command(filepath.Join(dir, "coordinator"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "coordinator ") {
		t.Fatalf("built binary: %q, %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "marble-injector")); err == nil {
		t.Fatal("built a package that was not asked for")
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				fmt.Fprint(&b, "x")
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Fatalf("%d bytes, want 800", got)
	}
}
