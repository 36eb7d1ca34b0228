package marble

import (
	"context"
	"fmt"
	"os"
)

// PreMain activates the calling Go program as a marble configured by the
// process environment (see ConfigFromEnv) and applies the result: it
// writes the files, sets the environment variables and, when the
// Coordinator sent arguments, replaces os.Args with them (Argv[0] becomes
// os.Args[0]). Call it first thing in main, before flags are parsed.
func PreMain(ctx context.Context) error {
	cfg, err := ConfigFromEnv(os.Getenv)
	if err != nil {
		return fmt.Errorf("marble configuration: %w", err)
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
	return nil
}
