package coordinator

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"k8s.io/klog/v2"

	"github.com/marblemesh/marblemesh/internal/logging"
	"github.com/marblemesh/marblemesh/internal/version"
)

// Main runs the coordinator command until ctx is done and returns its exit
// code: 0 after a clean stop.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	simulation := fs.Bool("simulation", false, "run in simulation mode: no attestation, INSECURE (same as OE_SIMULATION=1)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: coordinator [--simulation]

The Coordinator of a confidential service mesh. It waits for a manifest on its
client API (HTTPS), then attests marbles on its mesh API (gRPC) and gives them
certificates, secrets and configuration. Its state is sealed in a folder or,
in distributed mode, in Secrets of its Kubernetes namespace.

Configuration comes from the environment:
%s

Flags:
`, Describe())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintf(stdout, "coordinator %s\n", version.Get())
		return 0
	}
	cwd, err := os.Getwd()
	if err != nil {
		fmt.Fprintf(stderr, "coordinator: %v\n", err)
		return 1
	}
	cfg, err := ConfigFromEnv(getenv, cwd)
	if err != nil {
		fmt.Fprintf(stderr, "coordinator: configuration: %v\n", err)
		return 2
	}
	cfg.Simulation = cfg.Simulation || *simulation
	tuneGC(getenv)
	level := slog.LevelInfo
	if cfg.DebugLogging {
		level = slog.LevelDebug
	}
	// Every line says whether the Coordinator runs in simulation; no
	// caller may log the key again.
	logger := logging.NewJSON(stdout, level).With("simulation", cfg.Simulation)
	stopKlog := routeKubernetesClientLog(logger)
	defer stopKlog()
	srv, err := New(cfg, logger)
	if err != nil {
		logger.Error("the Coordinator cannot start", "error", err.Error())
		fmt.Fprintf(stderr, "coordinator: %v\n", err)
		return 1
	}
	if err := srv.Serve(ctx); err != nil {
		logger.Error("the Coordinator stopped with an error", "error", err.Error())
		return 1
	}
	logger.Info("the Coordinator stopped")
	return 0
}

// routeKubernetesClientLog sends what the Kubernetes client library logs
// (through klog: watch failures, throttling, ...) to logger, as JSON lines
// like the Coordinator's own, instead of klog's text lines on standard
// error. The returned function restores klog's default.
func routeKubernetesClientLog(logger *slog.Logger) func() {
	klog.SetSlogLogger(logger.With("component", "kubernetes-client"))
	return func() {
		klog.Flush()
		klog.ClearLogger()
	}
}

// defaultGCPercent is the garbage collector target used unless GOGC is set.
// The Coordinator's live heap is small, while every activation allocates
// short-lived TLS and HTTP/2 buffers: a higher target trades a few MB of
// memory for markedly less CPU per activation.
const defaultGCPercent = 400

// tuneGC applies defaultGCPercent unless the operator set GOGC, and
// returns the percentage in effect.
func tuneGC(getenv func(string) string) int {
	if getenv("GOGC") != "" {
		current := debug.SetGCPercent(100)
		debug.SetGCPercent(current)
		return current
	}
	debug.SetGCPercent(defaultGCPercent)
	return defaultGCPercent
}
