package injector

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/marblemesh/marblemesh/internal/logging"
	"github.com/marblemesh/marblemesh/internal/sgxresource"
	"github.com/marblemesh/marblemesh/internal/version"
	"github.com/marblemesh/marblemesh/marble/marbleenv"
)

// Exit codes of RunCommand.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// RunCommand is the marble-injector program: it parses args (without the
// program name), logs JSON to stderr and serves until ctx ends.
func RunCommand(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("marble-injector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opts     Options
		logLevel slog.Level
	)
	fs.StringVar(&opts.Config.CoordAddr, "coordAddr", DefaultCoordAddr,
		"`host:port` of the Coordinator's mesh API, injected as "+marbleenv.CoordinatorAddr)
	fs.StringVar(&opts.Config.ClusterDomain, "clusterDomain", DefaultClusterDomain,
		"DNS `domain` of the cluster, used in "+marbleenv.DNSNames)
	fs.StringVar(&opts.Config.SGXResource, "sgxResource", DefaultSGXResource,
		"SGX device plugin `resource`: "+sgxresource.IntelEPC+" (Intel), "+sgxresource.AzureEPC+" (Azure), "+
			sgxresource.AlibabaEPC+" (Alibaba), or any other extended resource, which gets a limit of 10")
	fs.StringVar(&opts.CertFile, "tlsCertFile", DefaultCertFile,
		"PEM `file` of the serving certificate; reloaded when it changes")
	fs.StringVar(&opts.KeyFile, "tlsKeyFile", DefaultKeyFile,
		"PEM `file` of the serving certificate's private key; reloaded when it changes")
	fs.StringVar(&opts.Addr, "addr", DefaultAddr,
		"HTTPS listen `address` for "+PathMutate+", "+PathHealthz+", "+PathReadyz+" and "+PathMetrics)
	fs.StringVar(&opts.MetricsAddr, "metricsAddr", "",
		"also serve "+PathMetrics+" over plain HTTP on this `address` (empty: HTTPS server only)")
	fs.DurationVar(&opts.ShutdownDelay, "shutdownDelay", 2*time.Second,
		"on SIGTERM, keep serving this long while "+PathReadyz+" fails, then stop")
	fs.DurationVar(&opts.ShutdownTimeout, "shutdownTimeout", DefaultShutdownTimeout,
		"on SIGTERM, wait at most this long for requests in flight")
	fs.TextVar(&logLevel, "logLevel", slog.LevelInfo, "minimum log `level`: DEBUG, INFO, WARN or ERROR")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: marble-injector [flags]

The marble injector is a mutating admission webhook. For every Pod created
with the label %s=<marble> it adds the marble's
environment (%s, %s,
%s, %s with a downward-API volume holding
the Pod UID) to each container, or only to the one named by the label
%s, and, unless %s=%s,
SGX resource limits and the matching NoSchedule toleration. Pods without the
label are admitted unchanged. Variables and limits already set are kept.

It serves HTTPS: POST %s (AdmissionReview v1 or v1beta1), GET %s,
GET %s, GET %s. Logs are JSON on stderr. SIGTERM shuts down gracefully.

Flags:
`, LabelMarbleType, marbleenv.MarbleType, marbleenv.CoordinatorAddr, marbleenv.DNSNames, marbleenv.UUIDFile,
			LabelMarbleContainer, LabelResourceInjection, ResourceInjectionDisabled,
			PathMutate, PathHealthz, PathReadyz, PathMetrics)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %q\n", fs.Args())
		fs.Usage()
		return ExitUsage
	}
	if *showVersion {
		fmt.Fprintf(stderr, "marble-injector %s\n", version.Get())
		return ExitOK
	}

	log := logging.NewJSON(stderr, logLevel)
	opts.Logger = log.With("component", "marble-injector")
	srv, err := NewServer(opts)
	if err != nil {
		v := version.Get()
		log.Error("cannot start", "error", err, "version", v.Version, "commit", v.Commit)
		return ExitError
	}
	if err := srv.Run(ctx); err != nil {
		log.Error("stopped with an error", "error", err)
		return ExitError
	}
	log.Info("stopped")
	return ExitOK
}
