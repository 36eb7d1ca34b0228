package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/marblemesh/marblemesh/internal/version"
	"github.com/marblemesh/marblemesh/marble"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const usage = `Usage: premain [--] PROGRAM [ARGS...]
       premain --version

premain activates this process as a marble: it attests to the Coordinator
and receives the marble's files, environment variables and arguments from
the manifest. It writes the files (folders 0700, files 0600; relative paths
are relative to the working directory), then replaces itself with PROGRAM
(execve, same process ID), passing the current environment with the
Coordinator's variables set on top of it.

Arguments:
  Without an Argv for the marble in the manifest, PROGRAM runs with ARGS,
  exactly as given to premain.
  With an Argv, it replaces the whole argument vector and ARGS are ignored:
  Argv[0] is the program name (the argv[0] that the program sees), as in
  MarbleRun, and Argv[1:] are its arguments. The file executed is still
  PROGRAM; when premain is given no PROGRAM, Argv[0] is looked up in PATH
  (after the Coordinator's variables are set) and executed.

Environment:
  EDG_MARBLE_TYPE              name of the marble in the manifest (required)
  EDG_MARBLE_COORDINATOR_ADDR  Coordinator mesh API address, host:port
                               (default localhost:2001)
  EDG_MARBLE_DNS_NAMES         comma-separated names for the marble's
                               certificate; IP literals become IP addresses
                               (default localhost; 127.0.0.1 and ::1 are
                               always included)
  EDG_MARBLE_UUID_FILE         file holding the marble's UUID, created with
                               mode 0600 if missing; may hold a Kubernetes
                               Pod UID (default ./uuid)
  OE_SIMULATION=1              run without attestation: insecure, accepted
                               only by a Coordinator in simulation
  EDG_MARBLE_ATTESTATION_DIR   Gramine's attestation folder (default
                               /dev/attestation). Without OE_SIMULATION=1,
                               premain attests with the SGX quote that
                               Gramine writes to its quote file (gramine-sgx
                               with sgx.remote_attestation = "dcap"); if
                               that file does not exist, premain fails
                               without contacting the Coordinator
  EDG_LOG_FORMAT=json          log as JSON instead of text

Transparent TLS:
  premain cannot intercept the program's sockets, so the TLS rules of the
  manifest (the marble's TLS tags) are not applied to it: it warns, and passes
  them on in MARBLE_TTLS_CONFIG. Configure the program's TLS from the
  MARBLE_PREDEFINED_* variables or templated files, or, in Go, use the marble
  package's TransparentTLS.

While the Coordinator is unreachable or has no manifest yet, premain
retries for 60 s. On failure it prints the reason on standard error and
exits with status 1 (2 for a usage error).
`

// run is premain's main. It returns only when it does not execute the
// program.
func run(args []string, stdout, stderr io.Writer) int {
	command, m, err := parseArgs(args)
	switch m {
	case modeHelp:
		fmt.Fprint(stdout, usage)
		return exitOK
	case modeVersion:
		fmt.Fprintf(stdout, "premain %s\n", version.Get())
		return exitOK
	case modeRun:
	}
	if err != nil {
		fmt.Fprintf(stderr, "premain: %v\nRun premain --help for usage.\n", err)
		return exitUsage
	}
	log := marble.NewLogger(os.Getenv, stderr)
	if err := activateAndExec(log, command); err != nil {
		fmt.Fprintf(stderr, "premain: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// mode is what premain was asked to do.
type mode int

const (
	modeRun     mode = iota // activate and execute the command
	modeHelp                // print the usage
	modeVersion             // print the version
)

// parseArgs splits premain's own options from the command to run. Only the
// first argument can be an option of premain's: everything from the
// program on is the program's.
func parseArgs(args []string) (command []string, m mode, err error) {
	if len(args) > 0 {
		switch a := args[0]; {
		case a == "--":
			args = args[1:]
		case a == "-h" || a == "-help" || a == "--help":
			return nil, modeHelp, nil
		case a == "-version" || a == "--version":
			return nil, modeVersion, nil
		case strings.HasPrefix(a, "-") && a != "-":
			return nil, modeRun, fmt.Errorf("unknown option %q (put -- before a program whose name starts with -)", a)
		}
	}
	return args, modeRun, nil
}

// activateAndExec activates the marble, applies its parameters to this
// process and executes the program. It returns only on failure.
func activateAndExec(log *slog.Logger, command []string) error {
	cfg, err := marble.ConfigFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	cfg.Logger = log

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	params, err := marble.Activate(ctx, cfg)
	if err != nil {
		return err
	}
	argv, err := marble.Apply(params, os.Setenv, command)
	if err != nil {
		return err
	}
	if cfgJSON, ok := params.GetEnv()[marble.EnvTransparentTLS]; ok {
		warnTransparentTLS(log, cfgJSON)
	}
	if len(params.GetArgv()) > 0 && len(command) > 1 {
		log.Info("the manifest's Argv replaces the arguments given on the command line")
	}
	program, err := programPath(command, argv)
	if err != nil {
		return fmt.Errorf("marble type %s: %w", cfg.MarbleType, err)
	}
	stop()
	// Arguments are not logged: they may carry sensitive values.
	log.Info("executing program", "path", program, "args", len(argv)-1)
	if err := syscall.Exec(program, argv, os.Environ()); err != nil { //nolint:gosec // G204: running the program the marble was started with is premain's job
		return fmt.Errorf("executing %s: %w", program, err)
	}
	return nil
}

// warnTransparentTLS says that the marble's TLS rules, which premain
// passes on in MARBLE_TTLS_CONFIG, are not applied to the program: premain
// cannot intercept its sockets.
func warnTransparentTLS(log *slog.Logger, cfgJSON []byte) {
	var attrs []any
	if tt, err := marble.ParseTransparentTLS(cfgJSON); err != nil {
		attrs = append(attrs, "config_error", err.Error())
	} else {
		in, out := tt.Endpoints()
		attrs = append(attrs, "incoming", strings.Join(in, " "), "outgoing", strings.Join(out, " "))
	}
	log.Warn("the manifest gives this marble TLS rules (TLS tags), which premain does NOT apply: it cannot intercept "+
		"the program's sockets, so the program's connections on these endpoints are plain unless it sets up TLS itself. "+
		"Configure the program's TLS from the MARBLE_PREDEFINED_* variables or from files templated with the marble's "+
		"certificate; a Go program can apply the rules with the marble package (marble.TransparentTLSFromEnv)", attrs...)
}

// programPath returns the file to execute: the command's program if one
// was given, otherwise argv[0], resolved through PATH.
func programPath(command, argv []string) (string, error) {
	name := ""
	switch {
	case len(command) > 0:
		name = command[0]
	case len(argv) > 0:
		name = argv[0]
	default:
		return "", errors.New("no program to run: give one on the command line or an Argv in the manifest")
	}
	if name == "" {
		return "", errors.New("the program name is empty")
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("program %q not found: %w", name, err)
	}
	return path, nil
}
