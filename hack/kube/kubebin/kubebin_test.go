package kubebin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSource writes a minimal pair of wrapper modules and returns their
// folder.
func fakeSource(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	files := map[string]string{
		"etcd/go.mod":                "module example.com/etcd\n",
		"etcd/main.go":               "package main\n",
		"k8s/go.mod":                 "module example.com/k8s\n",
		"k8s/go.sum":                 "",
		"k8s/kube-apiserver/main.go": "package main\n",
	}
	for name, content := range files {
		path := filepath.Join(src, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

// fakeBuild counts its runs, can be slowed down, and writes an executable
// script per name.
type fakeBuild struct {
	runs    atomic.Int32
	running atomic.Int32
	overlap atomic.Bool // set when two builds ran at once
	delay   time.Duration
	err     error
	skip    string // a name not to write
}

func (f *fakeBuild) build(ctx context.Context, srcDir, outDir string, log io.Writer) error {
	f.runs.Add(1)
	if f.running.Add(1) > 1 {
		f.overlap.Store(true)
	}
	defer f.running.Add(-1)
	fmt.Fprintf(log, "fake build of %s\n", srcDir)
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	for _, name := range Names() {
		if name == f.skip {
			continue
		}
		if err := os.WriteFile(filepath.Join(outDir, name), []byte("#!/bin/sh\necho "+name+"\n"), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func newBuilder(t *testing.T, src string, f *fakeBuild) *Builder {
	t.Helper()
	return &Builder{
		SourceDir:    src,
		CacheDir:     filepath.Join(t.TempDir(), "marblemesh", "kube", KubernetesVersion),
		Build:        f.build,
		PollInterval: 10 * time.Millisecond,
	}
}

func TestEnsureBuildsOnceAndStamps(t *testing.T) {
	f := &fakeBuild{}
	b := newBuilder(t, fakeSource(t), f)
	var log bytes.Buffer
	b.Log = &log

	dir, err := b.Ensure(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(b.CacheDir, "bin") {
		t.Errorf("Ensure returned %s, want %s", dir, filepath.Join(b.CacheDir, "bin"))
	}
	if !strings.Contains(log.String(), "building Kubernetes test binaries (first run only, several minutes)") {
		t.Errorf("no progress message in %q", log.String())
	}
	for _, name := range Names() {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}
	hash, err := b.Hash()
	if err != nil {
		t.Fatal(err)
	}
	stamp, err := os.ReadFile(filepath.Join(dir, stampName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(stamp)) != hash {
		t.Errorf("stamp %q, want %q", stamp, hash)
	}

	log.Reset()
	if _, err := b.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := f.runs.Load(); n != 1 {
		t.Errorf("%d builds, want 1", n)
	}
	if log.Len() != 0 {
		t.Errorf("an up-to-date Ensure printed %q", log.String())
	}
	entries, err := os.ReadDir(b.CacheDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "bin" && e.Name() != lockName {
			t.Errorf("left over in the cache folder: %s", e.Name())
		}
	}
}

func TestEnsureRebuilds(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, b *Builder)
	}{
		{"source changed", func(t *testing.T, b *Builder) {
			path := filepath.Join(b.SourceDir, "k8s", "kube-apiserver", "main.go")
			if err := os.WriteFile(path, []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"source added", func(t *testing.T, b *Builder) {
			path := filepath.Join(b.SourceDir, "etcd", "extra.go")
			if err := os.WriteFile(path, []byte("package main\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"go.sum changed", func(t *testing.T, b *Builder) {
			path := filepath.Join(b.SourceDir, "k8s", "go.sum")
			if err := os.WriteFile(path, []byte("example.com/x v1.0.0 h1:x=\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"recipe changed", func(t *testing.T, b *Builder) {
			b.Recipe = Recipe() + "one more flag\n"
		}},
		{"binary missing", func(t *testing.T, b *Builder) {
			if err := os.Remove(filepath.Join(b.BinDir(), "kube-scheduler")); err != nil {
				t.Fatal(err)
			}
		}},
		{"binary not executable", func(t *testing.T, b *Builder) {
			if err := os.Chmod(filepath.Join(b.BinDir(), "etcd"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"stamp missing", func(t *testing.T, b *Builder) {
			if err := os.Remove(filepath.Join(b.BinDir(), stampName)); err != nil {
				t.Fatal(err)
			}
		}},
		{"stamp differs", func(t *testing.T, b *Builder) {
			if err := os.WriteFile(filepath.Join(b.BinDir(), stampName), []byte("0123\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeBuild{}
			b := newBuilder(t, fakeSource(t), f)
			if _, err := b.Ensure(t.Context()); err != nil {
				t.Fatal(err)
			}
			c.change(t, b)
			if _, err := b.Ensure(t.Context()); err != nil {
				t.Fatal(err)
			}
			if n := f.runs.Load(); n != 2 {
				t.Errorf("%d builds, want 2", n)
			}
			if !b.upToDate(mustHash(t, b)) {
				t.Error("not up to date after the rebuild")
			}
		})
	}
}

func mustHash(t *testing.T, b *Builder) string {
	t.Helper()
	h, err := b.Hash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHashCoversPathsAndContent(t *testing.T) {
	src := fakeSource(t)
	b := &Builder{SourceDir: src}
	h1 := mustHash(t, b)
	if h1 != mustHash(t, b) {
		t.Fatal("hash not deterministic")
	}
	// Moving content between files keeps the bytes but changes the hash.
	if err := os.Rename(filepath.Join(src, "etcd", "main.go"), filepath.Join(src, "etcd", "cmd.go")); err != nil {
		t.Fatal(err)
	}
	if h1 == mustHash(t, b) {
		t.Error("renaming a file kept the hash")
	}
	// Files other than go.mod, go.sum and Go sources do not count.
	h2 := mustHash(t, b)
	if err := os.WriteFile(filepath.Join(src, "k8s", "notes.txt~"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if h2 != mustHash(t, b) {
		t.Error("an editor backup file changed the hash")
	}
	if _, err := (&Builder{SourceDir: t.TempDir()}).Hash(); err == nil {
		t.Error("Hash of a folder without wrapper modules succeeded")
	}
}

func TestConcurrentEnsureBuildsOnce(t *testing.T) {
	f := &fakeBuild{delay: 300 * time.Millisecond}
	first := newBuilder(t, fakeSource(t), f)
	const n = 6
	var wg sync.WaitGroup
	dirs := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A Builder of its own per caller, as separate test processes
			// have: each opens the lock file anew.
			b := *first
			dirs[i], errs[i] = b.Ensure(t.Context())
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("caller %d: %v", i, errs[i])
		}
		if dirs[i] != first.BinDir() {
			t.Errorf("caller %d got %q", i, dirs[i])
		}
	}
	if got := f.runs.Load(); got != 1 {
		t.Errorf("%d builds, want 1", got)
	}
	if f.overlap.Load() {
		t.Error("two builds ran at once")
	}
}

func TestFailedBuildLeavesNothing(t *testing.T) {
	src := fakeSource(t)
	for _, f := range []*fakeBuild{{err: errors.New("no module proxy")}, {skip: "kubectl"}} {
		b := newBuilder(t, src, f)
		_, err := b.Ensure(t.Context())
		if err == nil {
			t.Fatal("Ensure succeeded")
		}
		if f.err != nil && !errors.Is(err, f.err) {
			t.Errorf("error %v does not wrap %v", err, f.err)
		}
		if f.skip != "" && !strings.Contains(err.Error(), f.skip) {
			t.Errorf("error %v does not name %s", err, f.skip)
		}
		entries, err := os.ReadDir(b.CacheDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != lockName {
				t.Errorf("left over after a failed build: %s", e.Name())
			}
		}
		f.err, f.skip = nil, ""
		if _, err := b.Ensure(t.Context()); err != nil {
			t.Fatalf("Ensure after a failure: %v", err)
		}
	}
}

func TestInterruptedBuildIsCleanedAndReplaced(t *testing.T) {
	f := &fakeBuild{}
	b := newBuilder(t, fakeSource(t), f)
	if _, err := b.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	// What a killed build leaves: a work folder and a previous bin.
	for _, name := range []string{tmpPrefix + "123", oldPrefix + "456"} {
		if err := os.MkdirAll(filepath.Join(b.CacheDir, name, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b.Recipe = "changed"
	if _, err := b.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(b.CacheDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != ".lock bin" {
		t.Errorf("cache folder holds %v, want .lock and bin", names)
	}
}

func TestWaitingForLockHonoursContext(t *testing.T) {
	f := &fakeBuild{}
	b := newBuilder(t, fakeSource(t), f)
	var log bytes.Buffer
	b.Log = &log
	if err := os.MkdirAll(b.CacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	holder, err := os.OpenFile(filepath.Join(b.CacheDir, lockName), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if ok, err := tryLock(holder); !ok || err != nil {
		t.Fatalf("tryLock = %v, %v", ok, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err = b.Ensure(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ensure while locked: %v, want a deadline error", err)
	}
	if !strings.Contains(log.String(), "waiting for another process") {
		t.Errorf("no waiting message in %q", log.String())
	}

	// A holder that recorded itself is named, with a heartbeat.
	log.Reset()
	started := time.Now().Add(-90 * time.Second)
	if err := writeHolder(holder, holderRecord{PID: 4242, Since: started}); err != nil {
		t.Fatal(err)
	}
	b.HeartbeatInterval = 40 * time.Millisecond
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := b.Ensure(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ensure while locked: %v, want a deadline error", err)
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	since := started.UTC().Format("15:04:05 UTC")
	// The age is rounded to seconds when the line is written: 1m30s, or
	// 1m31s on a slow machine.
	first := "waiting for process 4242, which has been building the Kubernetes test binaries since " + since + " ("
	age := strings.HasPrefix(lines[0], first+"1m30s ago") || strings.HasPrefix(lines[0], first+"1m31s ago")
	if len(lines) < 3 || !age || !strings.Contains(lines[0], " ago) (lock ") {
		t.Fatalf("waiting log:\n%s", log.String())
	}
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, "still waiting for process 4242, building the Kubernetes test binaries since "+since) || !strings.Contains(l, "; waiting for ") {
			t.Errorf("heartbeat line %q", l)
		}
	}
	if len(lines) > 10 {
		t.Errorf("%d lines in 300ms with a 40ms heartbeat", len(lines))
	}
	if f.runs.Load() != 0 {
		t.Error("built without the lock")
	}
	unlock(holder)
	if _, err := b.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestHelperEnsure is run as a separate process by
// TestEnsureAcrossProcesses; it does nothing in a normal run.
func TestHelperEnsure(t *testing.T) {
	src, cache := os.Getenv("KUBEBIN_HELPER_SRC"), os.Getenv("KUBEBIN_HELPER_CACHE")
	if src == "" || cache == "" {
		t.Skip("helper process only")
	}
	counter := os.Getenv("KUBEBIN_HELPER_COUNTER")
	b := &Builder{
		SourceDir:         src,
		CacheDir:          cache,
		PollInterval:      10 * time.Millisecond,
		HeartbeatInterval: 100 * time.Millisecond,
		Log:               os.Stderr,
		Build: func(ctx context.Context, srcDir, outDir string, log io.Writer) error {
			f, err := os.OpenFile(counter, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			fmt.Fprintf(f, "%d\n", os.Getpid())
			if err := f.Close(); err != nil {
				return err
			}
			time.Sleep(500 * time.Millisecond)
			return (&fakeBuild{}).build(ctx, srcDir, outDir, log)
		},
	}
	if _, err := b.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureAcrossProcesses(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("flock is Unix only")
	}
	src := fakeSource(t)
	cache := filepath.Join(t.TempDir(), "cache")
	counter := filepath.Join(t.TempDir(), "builds")
	var cmds []*exec.Cmd
	for range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperEnsure$", "-test.count=1")
		cmd.Env = append(os.Environ(),
			"KUBEBIN_HELPER_SRC="+src, "KUBEBIN_HELPER_CACHE="+cache, "KUBEBIN_HELPER_COUNTER="+counter)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait() // killed: the error says so
			}
		})
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v\n%s", err, cmd.Stdout)
		}
	}
	data, err := os.ReadFile(counter)
	if err != nil {
		t.Fatal(err)
	}
	if builds := strings.Count(string(data), "\n"); builds != 1 {
		t.Errorf("%d builds across 3 processes, want 1", builds)
	}
	// The others named the builder while they waited for it.
	builder := "waiting for process " + strings.TrimSpace(string(data)) + ", which has been building"
	named := 0
	for _, cmd := range cmds {
		out := cmd.Stdout.(*bytes.Buffer).String() //nolint:forcetypeassert // set above
		if strings.Contains(out, builder) && strings.Contains(out, "still waiting for process") && strings.Contains(out, "got the build lock after waiting") {
			named++
		}
	}
	if named != 2 {
		for _, cmd := range cmds {
			t.Log(cmd.Stdout)
		}
		t.Errorf("%d of the 2 waiting processes named the builder with a heartbeat", named)
	}
}

func TestFindSourceDir(t *testing.T) {
	src, err := FindSourceDir()
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// This package lives in hack/kube/kubebin.
	if want := filepath.Dir(wd); src != want {
		t.Errorf("FindSourceDir = %s, want %s", src, want)
	}
	t.Chdir(t.TempDir())
	if _, err := FindSourceDir(); err == nil {
		t.Error("FindSourceDir outside the repository succeeded")
	}
}

func TestRealSourcesHash(t *testing.T) {
	src, err := FindSourceDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Builder{SourceDir: src}).Hash(); err != nil {
		t.Fatal(err)
	}
	for _, mod := range []string{"etcd", "k8s"} {
		if _, err := os.Stat(filepath.Join(src, mod, "go.sum")); err != nil {
			t.Errorf("wrapper module %s: %v", mod, err)
		}
	}
}

func TestDefaultCacheDirHonoursXDG(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("XDG_CACHE_HOME is the cache folder on Linux only")
	}
	base := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", base)
	dir, err := DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(base, "marblemesh", "kube", "v1.37.1"); dir != want {
		t.Errorf("DefaultCacheDir = %s, want %s", dir, want)
	}
}

func TestRecipeStampsVersions(t *testing.T) {
	r := Recipe()
	for _, want := range []string{
		"k8s.io/component-base/version.gitVersion=v1.37.1",
		"k8s.io/client-go/pkg/version.gitVersion=v1.37.1",
		"k8s.io/component-base/version.gitMinor=37",
		"go.etcd.io/etcd/api/v3/version.GitSHA=v3.6.16",
		"CGO_ENABLED=0",
	} {
		if !strings.Contains(r, want) {
			t.Errorf("recipe lacks %q:\n%s", want, r)
		}
	}
}

// fakeModules writes wrapper modules of the real layout whose mains print
// their name, using the standard library only.
func fakeModules(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	write := func(rel, content string) {
		path := filepath.Join(src, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	main := func(name string) string {
		return "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"" + name + "\") }\n"
	}
	write("etcd/go.mod", "module example.com/etcd\n\ngo 1.26.0\n")
	write("etcd/main.go", main("etcd"))
	write("k8s/go.mod", "module example.com/k8s\n\ngo 1.26.0\n")
	for _, name := range Names()[1:] {
		write("k8s/"+name+"/main.go", main(name))
	}
	return src
}

func TestGoBuild(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	src := fakeModules(t)
	b := &Builder{
		SourceDir: src,
		CacheDir:  filepath.Join(t.TempDir(), "cache"),
	}
	var log bytes.Buffer
	b.Log = &log
	dir, err := b.Ensure(t.Context())
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	for _, name := range Names() {
		out, err := exec.Command(filepath.Join(dir, name)).Output()
		if err != nil || strings.TrimSpace(string(out)) != name {
			t.Errorf("%s printed %q, %v", name, out, err)
		}
	}
	for _, want := range []string{"[1/2] etcd v3.6.16", "[2/2] kube-apiserver", "done in"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, log.String())
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := GoBuild(ctx, src, t.TempDir(), io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("GoBuild with a cancelled context: %v", err)
	}
	if err := os.WriteFile(filepath.Join(src, "k8s", "kubectl", "main.go"), []byte("package main\n\nfunc main() { undefined() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := GoBuild(t.Context(), src, t.TempDir(), io.Discard); err == nil || !strings.Contains(err.Error(), "go build in") {
		t.Errorf("GoBuild of a broken module: %v", err)
	}
}

func TestHolderRecord(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), lockName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	since := time.Date(2026, 12, 3, 19, 40, 1, 0, time.UTC)
	// A longer record first: writing must not leave its tail behind.
	if err := writeHolder(f, holderRecord{PID: 123456789, Since: since.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := writeHolder(f, holderRecord{PID: 77, Since: since}); err != nil {
		t.Fatal(err)
	}
	got, ok := readHolder(f.Name())
	if !ok || got.PID != 77 || !got.Since.Equal(since) {
		t.Fatalf("readHolder = %+v, %v", got, ok)
	}
	for _, bad := range []string{"", "pid 0 since 2026-12-03T19:40:01Z\n", "pid x since y\n", "pid 5 since yesterday\n"} {
		if h, ok := parseHolder(bad); ok {
			t.Errorf("parseHolder(%q) = %+v", bad, h)
		}
	}

	now := since.Add(2*time.Minute + 3*time.Second)
	if got, want := waitingMessage(holderRecord{PID: 77, Since: since}, now),
		"waiting for process 77, which has been building the Kubernetes test binaries since 19:40:01 UTC (2m3s ago)"; got != want {
		t.Errorf("waitingMessage = %q, want %q", got, want)
	}
	if got, want := waitingMessage(holderRecord{}, now), "waiting for another process building the Kubernetes test binaries"; got != want {
		t.Errorf("waitingMessage = %q, want %q", got, want)
	}
	if got, want := stillWaitingMessage(holderRecord{PID: 77, Since: since}, now.Add(-20*time.Second), now),
		"still waiting for process 77, building the Kubernetes test binaries since 19:40:01 UTC (2m3s ago); waiting for 20s"; got != want {
		t.Errorf("stillWaitingMessage = %q, want %q", got, want)
	}
	if got, want := stillWaitingMessage(holderRecord{}, now.Add(-10*time.Second), now),
		"still waiting for another process building the Kubernetes test binaries (waiting for 10s)"; got != want {
		t.Errorf("stillWaitingMessage = %q, want %q", got, want)
	}
	// Another process's clock may be slightly ahead.
	if got := waitingMessage(holderRecord{PID: 1, Since: now.Add(time.Second)}, now); !strings.HasSuffix(got, "(0s ago)") {
		t.Errorf("waitingMessage with a future start = %q", got)
	}
}
