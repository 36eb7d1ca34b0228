package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/marblemesh/marblemesh/internal/coordinator/seal"
)

// image is the directory as a crash at a write point would leave it,
// assuming every write before that point reached the disk.
type image struct {
	point string
	files map[string][]byte
}

// outcome is what Load must find in an image.
type outcome struct {
	err      error             // wrapped by Load's error, or nil
	state    map[string][]byte // when err is nil
	recovery []byte            // RecoveryData after Load
	mode     seal.Mode         // SealMode after Load, if set
	// unlocks, if set with err, is the data key with which Unlock must
	// open state: nothing is lost, the owners can recover it.
	unlocks []byte
}

func TestFileCrashPoints(t *testing.T) {
	base := kv("manifest/raw", "{}", "ca/root/cert", "pem")
	c1 := kv("activations/web", "1", "ca/root/cert", "<nil>")
	c2 := kv("secret/a", strings.Repeat("s", 300))
	newState := kv("manifest/raw", `{"v":2}`)
	sealer1, sealer2 := sealerWith(t, 1), sealerWith(t, 2)

	type scenario struct {
		name string
		// setup prepares dir and returns the store and the sealer with
		// which images are loaded.
		setup func(t *testing.T, dir string) (*FileStore, seal.Sealer)
		op    func(t *testing.T, s *FileStore)
		// keepsOriginals: the files before op must survive every point,
		// in place or moved aside.
		keepsOriginals bool
		// want maps each write point, in the order reached, to what Load
		// finds in the image taken there.
		want []struct {
			point string
			out   outcome
		}
	}
	type pw = struct {
		point string
		out   outcome
	}
	before := outcome{state: applied(base, c1)}
	afterC2 := outcome{state: applied(applied(base, c1), c2)}
	reset := outcome{state: newState}
	// key1 is the data key of opened.
	var key1 []byte
	opened := func(t *testing.T, dir string) *FileStore {
		s := openFile(t, dir, sealer1)
		key, err := s.Reset(t.Context(), base)
		if err != nil {
			t.Fatal(err)
		}
		key1 = key
		if err := s.Commit(t.Context(), c1); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// sealedKey carries the data key from setup to op in the unlock
	// scenarios; key1 is the data key of opened.
	var sealedKey []byte
	movedAway := func(t *testing.T, dir string) (*FileStore, seal.Sealer) {
		s := openFile(t, dir, sealer1)
		key, err := s.Reset(t.Context(), base)
		if err != nil {
			t.Fatal(err)
		}
		sealedKey = key
		if err := s.Commit(t.Context(), c1); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = openFile(t, dir, sealer2)
		if _, err := s.Load(t.Context()); !errors.Is(err, ErrUnseal) {
			t.Fatalf("Load on the other machine: err = %v, want ErrUnseal", err)
		}
		return s, sealer2
	}
	scenarios := []scenario{
		{
			name: "commit that compacts",
			setup: func(t *testing.T, dir string) (*FileStore, seal.Sealer) {
				s := opened(t, dir)
				s.compactMin, s.snapSize = -1<<40, 0
				return s, sealer1
			},
			op: func(t *testing.T, s *FileStore) {
				if err := s.Commit(t.Context(), c2); err != nil {
					t.Fatal(err)
				}
			},
			want: []pw{
				{"journal-appended", afterC2},
				{"snapshot-temp-synced", afterC2},
				{"snapshot-renamed", afterC2},
				{"journal-temp-synced", afterC2},
				{"journal-renamed", afterC2},
			},
		},
		{
			name:  "reset",
			setup: func(t *testing.T, dir string) (*FileStore, seal.Sealer) { return opened(t, dir), sealer1 },
			op: func(t *testing.T, s *FileStore) {
				if _, err := s.Reset(t.Context(), newState); err != nil {
					t.Fatal(err)
				}
			},
			want: []pw{
				{"sealedkey-temp-synced", before},
				{"sealedkey-renamed", before},
				{"snapshot-temp-synced", before},
				{"snapshot-renamed", reset},
				{"sealedkey-temp-synced", reset},
				{"sealedkey-renamed", reset},
				{"journal-temp-synced", reset},
				{"journal-renamed", reset},
			},
		},
		{
			// A manifest set: the new state and its recovery data in one
			// generation, sealed in the manifest's mode.
			name:  "reset with recovery data",
			setup: func(t *testing.T, dir string) (*FileStore, seal.Sealer) { return opened(t, dir), sealer1 },
			op: func(t *testing.T, s *FileStore) {
				_, err := s.ResetWith(t.Context(), newState, ResetOptions{Mode: seal.ModeUniqueKey, RecoveryData: func(key []byte) ([]byte, error) {
					kc := keyCheckOf(key)
					return append([]byte("rd:"), kc[:4]...), nil
				}})
				if err != nil {
					t.Fatal(err)
				}
			},
			want: []pw{
				{"sealedkey-temp-synced", outcome{state: before.state, mode: seal.ModeProductKey}},
				{"sealedkey-renamed", outcome{state: before.state, mode: seal.ModeProductKey}},
				{"snapshot-temp-synced", outcome{state: before.state, mode: seal.ModeProductKey}},
				{"snapshot-renamed", outcome{state: newState, recovery: []byte("<new>"), mode: seal.ModeUniqueKey}},
				{"sealedkey-temp-synced", outcome{state: newState, recovery: []byte("<new>"), mode: seal.ModeUniqueKey}},
				{"sealedkey-renamed", outcome{state: newState, recovery: []byte("<new>"), mode: seal.ModeUniqueKey}},
				{"journal-temp-synced", outcome{state: newState, recovery: []byte("<new>"), mode: seal.ModeUniqueKey}},
				{"journal-renamed", outcome{state: newState, recovery: []byte("<new>"), mode: seal.ModeUniqueKey}},
			},
		},
		{
			name:  "seal mode changed to UniqueKey",
			setup: func(t *testing.T, dir string) (*FileStore, seal.Sealer) { return opened(t, dir), sealer1 },
			op: func(t *testing.T, s *FileStore) {
				if err := s.SetSealMode(t.Context(), seal.ModeUniqueKey); err != nil {
					t.Fatal(err)
				}
			},
			want: []pw{
				{"sealedkey-temp-synced", outcome{state: before.state, mode: seal.ModeProductKey}},
				{"sealedkey-renamed", outcome{state: before.state, mode: seal.ModeProductKey}},
				{"snapshot-temp-synced", outcome{state: before.state, mode: seal.ModeProductKey}},
				{"snapshot-renamed", outcome{state: before.state, mode: seal.ModeUniqueKey}},
				{"sealedkey-temp-synced", outcome{state: before.state, mode: seal.ModeUniqueKey}},
				{"sealedkey-renamed", outcome{state: before.state, mode: seal.ModeUniqueKey}},
				{"journal-temp-synced", outcome{state: before.state, mode: seal.ModeUniqueKey}},
				{"journal-renamed", outcome{state: before.state, mode: seal.ModeUniqueKey}},
			},
		},
		{
			name:  "seal mode changed to Disabled",
			setup: func(t *testing.T, dir string) (*FileStore, seal.Sealer) { return opened(t, dir), sealer1 },
			op: func(t *testing.T, s *FileStore) {
				if err := s.SetSealMode(t.Context(), seal.ModeDisabled); err != nil {
					t.Fatal(err)
				}
			},
			want: []pw{
				{"snapshot-temp-synced", outcome{state: before.state, mode: seal.ModeProductKey}},
				{"snapshot-renamed", outcome{err: ErrUnseal, state: before.state, mode: seal.ModeDisabled, unlocks: []byte("key1")}},
				{"sealedkey-removed", outcome{err: ErrUnseal, state: before.state, mode: seal.ModeDisabled, unlocks: []byte("key1")}},
				{"journal-temp-synced", outcome{err: ErrUnseal, state: before.state, mode: seal.ModeDisabled, unlocks: []byte("key1")}},
				{"journal-renamed", outcome{err: ErrUnseal, state: before.state, mode: seal.ModeDisabled, unlocks: []byte("key1")}},
			},
		},
		{
			name: "seal mode changed from Disabled to ProductKey",
			setup: func(t *testing.T, dir string) (*FileStore, seal.Sealer) {
				s := opened(t, dir)
				if err := s.SetSealMode(t.Context(), seal.ModeDisabled); err != nil {
					t.Fatal(err)
				}
				return s, sealer1
			},
			op: func(t *testing.T, s *FileStore) {
				if err := s.SetSealMode(t.Context(), seal.ModeProductKey); err != nil {
					t.Fatal(err)
				}
			},
			want: []pw{
				{"sealedkey-temp-synced", outcome{err: ErrUnseal, state: before.state, mode: seal.ModeDisabled, unlocks: []byte("key1")}},
				{"sealedkey-renamed", outcome{err: ErrUnseal, state: before.state, mode: seal.ModeDisabled, unlocks: []byte("key1")}},
				{"snapshot-temp-synced", outcome{err: ErrUnseal, state: before.state, mode: seal.ModeDisabled, unlocks: []byte("key1")}},
				{"snapshot-renamed", outcome{state: before.state, mode: seal.ModeProductKey}},
				{"journal-temp-synced", outcome{state: before.state, mode: seal.ModeProductKey}},
				{"journal-renamed", outcome{state: before.state, mode: seal.ModeProductKey}},
			},
		},
		{
			name: "unlock in seal mode Disabled",
			setup: func(t *testing.T, dir string) (*FileStore, seal.Sealer) {
				s := opened(t, dir)
				if err := s.SetSealMode(t.Context(), seal.ModeDisabled); err != nil {
					t.Fatal(err)
				}
				s.Close()
				s = openFile(t, dir, sealer1)
				if _, err := s.Load(t.Context()); !errors.Is(err, ErrUnseal) {
					t.Fatalf("Load in seal mode Disabled: err = %v, want ErrUnseal", err)
				}
				return s, sealer1
			},
			op: func(t *testing.T, s *FileStore) {
				if _, err := s.Unlock(t.Context(), key1); err != nil {
					t.Fatal(err)
				}
			},
			want: []pw{
				{"snapshot-temp-synced", outcome{err: ErrUnseal, state: before.state, mode: seal.ModeDisabled, unlocks: []byte("key1")}},
				{"snapshot-renamed", outcome{err: ErrUnseal, state: before.state, mode: seal.ModeDisabled, unlocks: []byte("key1")}},
				{"journal-temp-synced", outcome{err: ErrUnseal, state: before.state, mode: seal.ModeDisabled, unlocks: []byte("key1")}},
				{"journal-renamed", outcome{err: ErrUnseal, state: before.state, mode: seal.ModeDisabled, unlocks: []byte("key1")}},
			},
		},
		{
			name: "first commit creates the state",
			setup: func(t *testing.T, dir string) (*FileStore, seal.Sealer) {
				s := openFile(t, dir, sealer1)
				if _, err := s.Load(t.Context()); !errors.Is(err, ErrNoState) {
					t.Fatal(err)
				}
				return s, sealer1
			},
			op: func(t *testing.T, s *FileStore) {
				if err := s.Commit(t.Context(), base); err != nil {
					t.Fatal(err)
				}
			},
			want: []pw{
				{"sealedkey-temp-synced", outcome{err: ErrNoState}},
				{"sealedkey-renamed", outcome{err: ErrNoState}},
				{"snapshot-temp-synced", outcome{err: ErrNoState}},
				{"snapshot-renamed", outcome{state: base}},
				{"journal-temp-synced", outcome{state: base}},
				{"journal-renamed", outcome{state: base}},
			},
		},
		{
			name:  "unlock on another machine",
			setup: movedAway,
			op: func(t *testing.T, s *FileStore) {
				if _, err := s.Unlock(t.Context(), sealedKey); err != nil {
					t.Fatal(err)
				}
			},
			want: []pw{
				{"sealedkey-temp-synced", outcome{err: ErrUnseal}},
				// The new sealed_key opens the old snapshot: same data key.
				{"sealedkey-renamed", before},
				{"snapshot-temp-synced", before},
				{"snapshot-renamed", before},
				{"journal-temp-synced", before},
				{"journal-renamed", before},
			},
		},
		{
			name:           "reset after an unseal failure",
			setup:          movedAway,
			keepsOriginals: true,
			op: func(t *testing.T, s *FileStore) {
				if _, err := s.Reset(t.Context(), newState); err != nil {
					t.Fatal(err)
				}
			},
			want: []pw{
				{"discard-" + snapshotName, outcome{err: ErrUnseal}},
				{"discard-" + journalName, outcome{err: ErrNoState}},
				{"discard-" + sealedKeyName, outcome{err: ErrNoState}},
				{"sealedkey-temp-synced", outcome{err: ErrNoState}},
				{"sealedkey-renamed", outcome{err: ErrNoState}},
				{"snapshot-temp-synced", outcome{err: ErrNoState}},
				{"snapshot-renamed", reset},
				{"journal-temp-synced", reset},
				{"journal-renamed", reset},
			},
		},
		{
			name: "set recovery data",
			setup: func(t *testing.T, dir string) (*FileStore, seal.Sealer) {
				s := opened(t, dir)
				if err := s.SetRecoveryData(t.Context(), []byte("old")); err != nil {
					t.Fatal(err)
				}
				return s, sealer1
			},
			op: func(t *testing.T, s *FileStore) {
				if err := s.SetRecoveryData(t.Context(), []byte("new")); err != nil {
					t.Fatal(err)
				}
			},
			want: []pw{
				{"snapshot-temp-synced", outcome{state: before.state, recovery: []byte("old")}},
				{"snapshot-renamed", outcome{state: before.state, recovery: []byte("new")}},
				{"journal-temp-synced", outcome{state: before.state, recovery: []byte("new")}},
				{"journal-renamed", outcome{state: before.state, recovery: []byte("new")}},
			},
		},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, loadSealer := sc.setup(t, dir)
			original := dirFiles(t, dir)
			var images []image
			s.hook = func(point string) { images = append(images, image{point, dirFiles(t, dir)}) }
			sc.op(t, s)
			s.hook = nil
			var points, wantPoints []string
			for _, im := range images {
				points = append(points, im.point)
			}
			for _, w := range sc.want {
				wantPoints = append(wantPoints, w.point)
			}
			if !slices.Equal(points, wantPoints) {
				t.Fatalf("write points %v, want %v", points, wantPoints)
			}
			for i, im := range images {
				if sc.keepsOriginals {
					requireNothingLost(t, im, original)
				}
				out := sc.want[i].out
				if string(out.unlocks) == "key1" {
					out.unlocks = key1
				}
				if string(out.recovery) == "<new>" {
					// The recovery data computed from the new data key.
					kc := keyCheckOf(s.key)
					out.recovery = append([]byte("rd:"), kc[:4]...)
				}
				checkImage(t, im, loadSealer, out)
			}
		})
	}
}

// requireNothingLost checks that every snapshot and journal of original is
// still in the image, in place or in a discarded-* directory.
func requireNothingLost(t *testing.T, im image, original map[string][]byte) {
	t.Helper()
	for name, b := range original {
		if name != snapshotName && name != journalName && name != sealedKeyName {
			continue
		}
		found := false
		for p, c := range im.files {
			if path.Base(p) == name && bytes.Equal(c, b) && (p == name || strings.HasPrefix(p, discardedPrefix)) {
				found = true
			}
		}
		if !found {
			t.Fatalf("at %s: original %s is gone", im.point, name)
		}
	}
}

// checkImage loads an image, compares the outcome, and checks that the
// store recovers from it: a commit (or, if the state can't be opened, a
// Reset) works and survives a reopen.
func checkImage(t *testing.T, im image, sealer seal.Sealer, want outcome) {
	t.Helper()
	dir := writeFiles(t, im.files)
	s := openFile(t, dir, sealer)
	got, err := s.Load(t.Context())
	if want.err != nil {
		if !errors.Is(err, want.err) {
			t.Fatalf("at %s: Load: err = %v, want %v", im.point, err, want.err)
		}
		requireFiles(t, dir, im.files)
		if want.mode != "" && s.SealMode() != want.mode {
			t.Fatalf("at %s: SealMode = %s, want %s", im.point, s.SealMode(), want.mode)
		}
		if want.unlocks != nil {
			got, err := s.Unlock(t.Context(), want.unlocks)
			if err != nil {
				t.Fatalf("at %s: Unlock: %v", im.point, err)
			}
			requireState(t, got, want.state)
		}
		if _, err := s.Reset(t.Context(), kv("probe", "1")); err != nil {
			t.Fatalf("at %s: Reset: %v", im.point, err)
		}
		s.Close()
		requireState(t, loadOK(t, openFile(t, dir, sealer)), kv("probe", "1"))
		return
	}
	if err != nil {
		t.Fatalf("at %s: Load: %v", im.point, err)
	}
	requireState(t, got, want.state)
	if r := s.RecoveryData(); !bytes.Equal(r, want.recovery) {
		t.Fatalf("at %s: RecoveryData = %q, want %q", im.point, r, want.recovery)
	}
	if want.mode != "" && s.SealMode() != want.mode {
		t.Fatalf("at %s: SealMode = %s, want %s", im.point, s.SealMode(), want.mode)
	}
	requireFiles(t, dir, im.files)
	if err := s.Commit(t.Context(), kv("probe", "1")); err != nil {
		t.Fatalf("at %s: Commit: %v", im.point, err)
	}
	s.Close()
	requireState(t, loadOK(t, openFile(t, dir, sealer)), applied(want.state, kv("probe", "1")))
}

// crashChildEnv switches the test binary into the committing child of
// TestFileCrashSubprocess; its value is the seal directory.
const crashChildEnv = "MARBLEMESH_STORE_CRASH_CHILD_DIR"

// crashChanges is commit number i of the child's sequence.
func crashChanges(i uint64) map[string][]byte {
	ch := map[string][]byte{
		"seq":                           []byte(strconv.FormatUint(i, 10)),
		fmt.Sprintf("slot/%d", i%7):     bytes.Repeat([]byte{byte(i)}, int(i%13)*23),
		fmt.Sprintf("slot/%d", (i+3)%7): nil,
	}
	if i%40 == 0 {
		ch["big"] = bytes.Repeat([]byte{byte(i)}, 3000)
	}
	return ch
}

// crashState is the state after commits 1..n of the child's sequence.
func crashState(n uint64) map[string][]byte {
	st := map[string][]byte{}
	for i := uint64(1); i <= n; i++ {
		applyChanges(st, crashChanges(i))
	}
	return st
}

func crashSealer() seal.Sealer {
	return seal.AESGCMSealer{Key: bytes.Repeat([]byte{0x5c}, seal.KeySize)}
}

// runCrashChild commits crashChanges in a loop, continuing the stored
// sequence, and prints each sequence number after its Commit returned. It
// runs until killed (or 60 s pass).
func runCrashChild(dir string) {
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "crash child: "+format+"\n", args...)
		os.Exit(1)
	}
	s, err := OpenFile(dir, crashSealer(), nil)
	if err != nil {
		fail("open: %v", err)
	}
	s.compactMin = 2 << 10
	var next uint64 = 1
	state, err := s.Load(context.Background())
	switch {
	case errors.Is(err, ErrNoState):
	case err != nil:
		fail("load: %v", err)
	default:
		n, err := strconv.ParseUint(string(state["seq"]), 10, 64)
		if err != nil {
			fail("stored seq: %v", err)
		}
		next = n + 1
	}
	deadline := time.Now().Add(60 * time.Second)
	for i := next; time.Now().Before(deadline); i++ {
		if err := s.Commit(context.Background(), crashChanges(i)); err != nil {
			fail("commit %d: %v", i, err)
		}
		if _, err := fmt.Fprintln(os.Stdout, i); err != nil {
			fail("report %d: %v", i, err)
		}
	}
	fail("not killed within 60 s")
}

func TestFileCrashSubprocess(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		runCrashChild(dir)
		return
	}
	dir := t.TempDir()
	var last uint64
	for round := range 5 {
		acked := killedChild(t, dir)
		s, err := OpenFile(dir, crashSealer(), nil)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		state, err := s.Load(t.Context())
		if err != nil {
			t.Fatalf("round %d: Load after kill: %v", round, err)
		}
		n, err := strconv.ParseUint(string(state["seq"]), 10, 64)
		if err != nil {
			t.Fatalf("round %d: stored seq: %v", round, err)
		}
		if n < acked || n > acked+1 {
			t.Fatalf("round %d: stored sequence ends at %d; the child acknowledged %d", round, n, acked)
		}
		if n < last {
			t.Fatalf("round %d: stored sequence went back from %d to %d", round, last, n)
		}
		requireState(t, state, crashState(n))
		t.Logf("round %d: %d commits acknowledged, %d stored, snapshot generation %d", round, acked, n, snapshotGeneration(t, dir))
		last = n
		s.Close()
	}
}

// killedChild runs the committing child on dir, kills it with SIGKILL at a
// random moment after its first acknowledgement, and returns the highest
// sequence number it acknowledged.
func killedChild(t *testing.T, dir string) uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFileCrashSubprocess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		acked uint64
	)
	first := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			n, err := strconv.ParseUint(strings.TrimSpace(sc.Text()), 10, 64)
			if err != nil {
				continue
			}
			mu.Lock()
			if acked == 0 {
				close(first)
			}
			acked = max(acked, n)
			mu.Unlock()
		}
	}()
	select {
	case <-first:
	case <-scanned:
		_ = cmd.Wait() // the child's output says why it ended
		t.Fatalf("child ended before acknowledging a commit: %s", stderr.String())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // killed: the error says so
		t.Fatalf("child acknowledged nothing within 30 s: %s", stderr.String())
	}
	time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-scanned
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v: %s", err, stderr.String())
	}
	mu.Lock()
	defer mu.Unlock()
	return acked
}
