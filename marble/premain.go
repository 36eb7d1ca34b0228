package marble

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// PreMain activates the calling Go program as a marble configured by the
// process environment (see ConfigFromEnv) and applies the result: it
// writes the files, sets the environment variables and, when the
// Coordinator sent arguments, replaces os.Args with them (Argv[0] becomes
// os.Args[0]). Call it first thing in main, before flags are parsed.
//
// When the manifest gives the marble TLS tags, PreMain checks the rules in
// MARBLE_TTLS_CONFIG and logs them; the program applies them by listening
// and dialling through TransparentTLSFromEnv(os.Getenv).
//
// It logs to slog.Default(), or, when EnvLogFormat is set, to standard
// error in the format it selects (NewLogger).
func PreMain(ctx context.Context) error {
	cfg, err := ConfigFromEnv(os.Getenv)
	if err != nil {
		return fmt.Errorf("marble configuration: %w", err)
	}
	if os.Getenv(EnvLogFormat) != "" {
		cfg.Logger = NewLogger(os.Getenv, os.Stderr)
	}
	params, err := Activate(ctx, cfg)
	if err != nil {
		return fmt.Errorf("marble activation: %w", err)
	}
	argv, err := Apply(params, os.Setenv, os.Args)
	if err != nil {
		return fmt.Errorf("applying marble parameters: %w", err)
	}
	os.Args = argv
	if cfgJSON, ok := params.GetEnv()[EnvTransparentTLS]; ok {
		tt, err := ParseTransparentTLS(cfgJSON)
		if err != nil {
			return fmt.Errorf("the marble's TLS rules: %w", err)
		}
		in, out := tt.Endpoints()
		cfg.logger().Info("the manifest gives this marble TLS rules: they apply to what it listens on and dials "+
			"through TransparentTLSFromEnv", "incoming", strings.Join(in, " "), "outgoing", strings.Join(out, " "))
	}
	return nil
}
