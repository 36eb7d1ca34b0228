// Package kubebin builds the Kubernetes control-plane binaries that tests run
// (etcd, kube-apiserver, kubectl, kube-controller-manager, kube-scheduler)
// from the Go module proxy, once per machine, into a cache folder.
//
// The sources are the wrapper modules beside this package (hack/kube/etcd and
// hack/kube/k8s), kept out of the main module so that the project's own build
// does not pull in Kubernetes. A build goes into a temporary folder that is
// renamed into place, under an exclusive file lock, and is skipped while every
// binary is present and the folder's stamp matches the hash of the wrapper
// modules and of the build recipe.
package kubebin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

const (
	// KubernetesVersion is the version of kube-apiserver, kubectl,
	// kube-controller-manager and kube-scheduler.
	KubernetesVersion = "v1.37.1"
	// EtcdVersion is the version of etcd.
	EtcdVersion = "v3.6.16"

	// buildDate is the publication time of k8s.io/kubernetes v1.37.1 on the
	// module proxy, stamped so that builds are reproducible.
	buildDate = "2026-09-23T17:06:22Z"

	// stampName is the file in the binary folder that holds the source hash.
	stampName = ".stamp"
	// lockName is the lock file in the cache folder.
	lockName = ".lock"
	// tmpPrefix and oldPrefix name the folders a build works in.
	tmpPrefix = "bin.tmp-"
	oldPrefix = "bin.old-"

	mainModule = "github.com/marblemesh/marblemesh"
)

// Names returns the file names of the binaries in the binary folder.
func Names() []string {
	return []string{"etcd", "kube-apiserver", "kubectl", "kube-controller-manager", "kube-scheduler"}
}

// BuildFunc builds every binary of Names into outDir from the wrapper modules
// in srcDir (the folder holding etcd/ and k8s/), writing progress to log.
type BuildFunc func(ctx context.Context, srcDir, outDir string, log io.Writer) error

// Builder ensures that a cache folder holds binaries built from SourceDir.
type Builder struct {
	// SourceDir is the folder holding the wrapper modules etcd/ and k8s/.
	SourceDir string
	// CacheDir is the versioned cache folder; the binaries go to its bin/.
	CacheDir string
	// Build builds the binaries; GoBuild when nil.
	Build BuildFunc
	// Names are the binaries that must be present; Names() when nil.
	Names []string
	// Recipe is hashed with the sources, so that changing how the binaries
	// are built rebuilds them; Recipe() when empty.
	Recipe string
	// Log receives progress messages; discarded when nil.
	Log io.Writer
	// PollInterval is how often a waiting process retries the lock; 200ms
	// when zero.
	PollInterval time.Duration
	// HeartbeatInterval is how often a waiting process says that it still
	// waits, for whom and since when; 10s when zero.
	HeartbeatInterval time.Duration
}

// DefaultCacheDir returns $(os.UserCacheDir)/marblemesh/kube/<version>, which
// honours XDG_CACHE_HOME.
func DefaultCacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("kubebin: no cache folder: %w", err)
	}
	return filepath.Join(base, "marblemesh", "kube", KubernetesVersion), nil
}

// FindSourceDir returns the hack/kube folder of the main module, looked for
// from the working directory upwards.
func FindSourceDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("kubebin: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if isMainModule(filepath.Join(dir, "go.mod")) {
			src := filepath.Join(dir, "hack", "kube")
			if _, err := os.Stat(filepath.Join(src, "k8s", "go.mod")); err != nil {
				return "", fmt.Errorf("kubebin: wrapper modules missing: %w", err)
			}
			return src, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("kubebin: no go.mod of module %s above %s", mainModule, wd)
		}
	}
}

func isMainModule(gomod string) bool {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == mainModule
		}
	}
	return false
}

// Ensure returns the binary folder of the default cache folder, building the
// binaries from the main module's hack/kube first when they are missing or
// stale. Progress goes to log.
func Ensure(ctx context.Context, log io.Writer) (string, error) {
	src, err := FindSourceDir()
	if err != nil {
		return "", err
	}
	cache, err := DefaultCacheDir()
	if err != nil {
		return "", err
	}
	b := &Builder{SourceDir: src, CacheDir: cache, Log: log}
	return b.Ensure(ctx)
}

// BinDir returns the folder that holds the binaries.
func (b *Builder) BinDir() string { return filepath.Join(b.CacheDir, "bin") }

// Ensure returns BinDir after making sure it holds every binary built from the
// current sources. Concurrent callers, in this process or others, wait for a
// single build.
func (b *Builder) Ensure(ctx context.Context) (string, error) {
	hash, err := b.Hash()
	if err != nil {
		return "", err
	}
	if b.upToDate(hash) {
		return b.BinDir(), nil
	}
	if err := os.MkdirAll(b.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("kubebin: %w", err)
	}
	unlock, err := b.lock(ctx)
	if err != nil {
		return "", err
	}
	defer unlock()
	if b.upToDate(hash) {
		return b.BinDir(), nil
	}
	if err := b.build(ctx, hash); err != nil {
		return "", err
	}
	return b.BinDir(), nil
}

// Hash returns the hex SHA-256 of the recipe and of the go.mod, go.sum and
// .go files of the wrapper modules (path and content).
func (b *Builder) Hash() (string, error) {
	h := sha256.New()
	recipe := b.Recipe
	if recipe == "" {
		recipe = Recipe()
	}
	fmt.Fprintf(h, "recipe %d\n%s\n", len(recipe), recipe)
	var files []string
	for _, mod := range []string{"etcd", "k8s"} {
		root := filepath.Join(b.SourceDir, mod)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() && (d.Name() == "go.mod" || d.Name() == "go.sum" || strings.HasSuffix(d.Name(), ".go")) {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("kubebin: reading wrapper module: %w", err)
		}
	}
	sort.Strings(files)
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("kubebin: %w", err)
		}
		rel, err := filepath.Rel(b.SourceDir, path)
		if err != nil {
			return "", fmt.Errorf("kubebin: %w", err)
		}
		fmt.Fprintf(h, "file %s %d\n", filepath.ToSlash(rel), len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (b *Builder) names() []string {
	if b.Names != nil {
		return b.Names
	}
	return Names()
}

func (b *Builder) logf(format string, args ...any) {
	if b.Log != nil {
		fmt.Fprintf(b.Log, format+"\n", args...)
	}
}

// upToDate reports whether BinDir holds every binary and a stamp equal to
// hash.
func (b *Builder) upToDate(hash string) bool {
	dir := b.BinDir()
	stamp, err := os.ReadFile(filepath.Join(dir, stampName))
	if err != nil || strings.TrimSpace(string(stamp)) != hash {
		return false
	}
	return missing(dir, b.names()) == nil
}

// missing returns an error naming the first binary of names that is not an
// executable regular file in dir.
func missing(dir string, names []string) error {
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o100 == 0 {
			return fmt.Errorf("%s is not an executable file", filepath.Join(dir, name))
		}
	}
	return nil
}

// lock takes the exclusive build lock, waiting for another holder until ctx
// ends, and returns its release. The holder writes its process ID and start
// time into the lock file, so that a waiting process can say whom it waits
// for; a waiting process says so at once and then every HeartbeatInterval.
func (b *Builder) lock(ctx context.Context) (func(), error) {
	path := filepath.Join(b.CacheDir, lockName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kubebin: %w", err)
	}
	interval := b.PollInterval
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	heartbeat := b.HeartbeatInterval
	if heartbeat <= 0 {
		heartbeat = 10 * time.Second
	}
	var waitStart, lastNote time.Time
	for {
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("kubebin: locking %s: %w", path, err)
		}
		if ok {
			if err := writeHolder(f, holderRecord{PID: os.Getpid(), Since: time.Now()}); err != nil {
				unlock(f)
				f.Close()
				return nil, fmt.Errorf("kubebin: recording the lock holder in %s: %w", path, err)
			}
			if !waitStart.IsZero() {
				b.logf("got the build lock after waiting %s", time.Since(waitStart).Round(time.Second))
			}
			return func() {
				_ = f.Truncate(0) // the next holder overwrites it anyway
				unlock(f)
				f.Close()
			}, nil
		}
		now := time.Now()
		switch {
		case waitStart.IsZero():
			waitStart, lastNote = now, now
			h, _ := readHolder(path)
			b.logf("%s (lock %s)", waitingMessage(h, now), path)
		case now.Sub(lastNote) >= heartbeat:
			lastNote = now
			h, _ := readHolder(path)
			b.logf("%s", stillWaitingMessage(h, waitStart, now))
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("kubebin: waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(interval):
		}
	}
}

// holderRecord is the process that holds the build lock, as it recorded
// itself in the lock file.
type holderRecord struct {
	PID   int
	Since time.Time
}

// holderFormat is the lock file's content while it is held.
const holderFormat = "pid %d since %s\n"

func writeHolder(f *os.File, h holderRecord) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt(fmt.Appendf(nil, holderFormat, h.PID, h.Since.UTC().Format(time.RFC3339)), 0)
	return err
}

// readHolder reads the lock file at path. It reports false when the file
// names no holder: the holder has not written it yet, has released it, or
// is a build of an older recipe.
func readHolder(path string) (holderRecord, bool) {
	data, err := os.ReadFile(path)
	if err != nil || len(data) > 200 {
		return holderRecord{}, false
	}
	return parseHolder(string(data))
}

func parseHolder(s string) (holderRecord, bool) {
	var (
		h     holderRecord
		since string
	)
	if _, err := fmt.Sscanf(s, holderFormat, &h.PID, &since); err != nil || h.PID <= 0 {
		return holderRecord{}, false
	}
	t, err := time.Parse(time.RFC3339, since)
	if err != nil {
		return holderRecord{}, false
	}
	h.Since = t
	return h, true
}

// waitingMessage is the first line of a process that waits for the lock.
func waitingMessage(h holderRecord, now time.Time) string {
	if h.PID == 0 {
		return "waiting for another process building the Kubernetes test binaries"
	}
	return fmt.Sprintf("waiting for process %d, which has been building the Kubernetes test binaries since %s (%s ago)",
		h.PID, h.Since.UTC().Format("15:04:05 UTC"), roundAgo(now.Sub(h.Since)))
}

// stillWaitingMessage is the heartbeat of a process that waits for the
// lock since waitStart.
func stillWaitingMessage(h holderRecord, waitStart, now time.Time) string {
	waited := roundAgo(now.Sub(waitStart))
	if h.PID == 0 {
		return fmt.Sprintf("still waiting for another process building the Kubernetes test binaries (waiting for %s)", waited)
	}
	return fmt.Sprintf("still waiting for process %d, building the Kubernetes test binaries since %s (%s ago); waiting for %s",
		h.PID, h.Since.UTC().Format("15:04:05 UTC"), roundAgo(now.Sub(h.Since)), waited)
}

// roundAgo rounds an elapsed time to whole seconds; clocks of two processes
// can disagree slightly, so a negative one reads as 0s.
func roundAgo(d time.Duration) time.Duration {
	return max(d, 0).Round(time.Second)
}

// build builds into a temporary folder beside BinDir, stamps it and renames it
// into place. The caller holds the lock.
func (b *Builder) build(ctx context.Context, hash string) error {
	if err := b.removeLeftovers(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(b.CacheDir, tmpPrefix)
	if err != nil {
		return fmt.Errorf("kubebin: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	build := b.Build
	if build == nil {
		build = GoBuild
	}
	log := b.Log
	if log == nil {
		log = io.Discard
	}
	start := time.Now()
	b.logf("building Kubernetes test binaries (first run only, several minutes) into %s", b.BinDir())
	if err := build(ctx, b.SourceDir, tmp, log); err != nil {
		return fmt.Errorf("kubebin: building Kubernetes test binaries: %w", err)
	}
	if err := missing(tmp, b.names()); err != nil {
		return fmt.Errorf("kubebin: build left no binary: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, stampName), []byte(hash+"\n"), 0o644); err != nil {
		return fmt.Errorf("kubebin: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("kubebin: %w", err)
	}
	bin := b.BinDir()
	var old string
	if _, err := os.Lstat(bin); err == nil {
		old = filepath.Join(b.CacheDir, fmt.Sprintf("%s%d", oldPrefix, time.Now().UnixNano()))
		if err := os.Rename(bin, old); err != nil {
			return fmt.Errorf("kubebin: %w", err)
		}
	}
	if err := os.Rename(tmp, bin); err != nil {
		return fmt.Errorf("kubebin: %w", err)
	}
	done = true
	if old != "" {
		if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("kubebin: removing previous binaries: %w", err)
		}
	}
	b.logf("built Kubernetes test binaries in %s", time.Since(start).Round(time.Second))
	return nil
}

// removeLeftovers deletes work folders of builds that were interrupted. The
// caller holds the lock, so no other build uses them.
func (b *Builder) removeLeftovers() error {
	entries, err := os.ReadDir(b.CacheDir)
	if err != nil {
		return fmt.Errorf("kubebin: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) || strings.HasPrefix(e.Name(), oldPrefix) {
			if err := os.RemoveAll(filepath.Join(b.CacheDir, e.Name())); err != nil {
				return fmt.Errorf("kubebin: %w", err)
			}
		}
	}
	return nil
}

// step is one go build invocation of GoBuild.
type step struct {
	module   string   // folder under the source folder
	what     string   // progress label
	ldflags  string   // -ldflags value
	packages []string // packages to build
}

func steps() []step {
	var k8s []string
	for _, v := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		k8s = append(k8s,
			"-X "+v+".gitVersion="+KubernetesVersion,
			"-X "+v+".gitMajor=1",
			"-X "+v+".gitMinor=37",
			"-X "+v+".gitTreeState=clean",
			"-X "+v+".buildDate="+buildDate)
	}
	return []step{
		{
			module:   "etcd",
			what:     "etcd " + EtcdVersion,
			ldflags:  "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=" + EtcdVersion,
			packages: []string{"."},
		},
		{
			module:   "k8s",
			what:     "kube-apiserver, kubectl, kube-controller-manager and kube-scheduler " + KubernetesVersion,
			ldflags:  "-s -w " + strings.Join(k8s, " "),
			packages: []string{"./kube-apiserver", "./kubectl", "./kube-controller-manager", "./kube-scheduler"},
		},
	}
}

// Recipe describes how GoBuild builds the binaries.
func Recipe() string {
	var sb strings.Builder
	for _, s := range steps() {
		fmt.Fprintf(&sb, "%s: go build -trimpath -ldflags %q %s\n", s.module, s.ldflags, strings.Join(s.packages, " "))
	}
	fmt.Fprintf(&sb, "env: %s\n", strings.Join(buildEnv(), " "))
	return sb.String()
}

// buildEnv are the variables GoBuild sets over the environment: static
// binaries, the wrapper module's own go.mod and go.sum as they are.
func buildEnv() []string {
	return []string{"CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false"}
}

// GoBuild is the BuildFunc that runs go build in each wrapper module, printing
// each step and, every minute, that it is still running.
func GoBuild(ctx context.Context, srcDir, outDir string, log io.Writer) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command is needed: %w", err)
	}
	outDir, err = filepath.Abs(outDir)
	if err != nil {
		return err
	}
	for i, s := range steps() {
		args := append([]string{"build", "-trimpath", "-ldflags", s.ldflags, "-o", outDir + string(filepath.Separator)}, s.packages...)
		cmd := exec.CommandContext(ctx, gobin, args...)
		cmd.Dir = filepath.Join(srcDir, s.module)
		cmd.Env = append(os.Environ(), buildEnv()...)
		cmd.Stdout = log
		cmd.Stderr = log
		// On cancellation the go command is interrupted, so that it stops
		// its compilers, and killed 10s later if still running.
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 10 * time.Second
		fmt.Fprintf(log, "  [%d/%d] %s (go build in %s)\n", i+1, len(steps()), s.what, cmd.Dir)
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return err
		}
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		tick := time.NewTicker(time.Minute)
	wait:
		for {
			select {
			case err = <-waited:
				break wait
			case <-tick.C:
				fmt.Fprintf(log, "        still building %s (%s)\n", s.module, time.Since(start).Round(time.Second))
			}
		}
		tick.Stop()
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return errors.Join(err, ctxErr)
			}
			return fmt.Errorf("go build in %s: %w", cmd.Dir, err)
		}
		fmt.Fprintf(log, "        done in %s\n", time.Since(start).Round(time.Second))
	}
	return nil
}
