// Package marble is the runtime of a marble: a service that attests itself
// to the Coordinator before it starts and receives its certificates,
// secrets, files, environment and arguments in return.
//
// A Go service either calls PreMain at the top of main, or runs under the
// cmd/premain launcher, which does the same and then executes the real
// program. Both read the EDG_MARBLE_* variables (see ConfigFromEnv).
//
// The steps can also be driven one by one:
//
//	cfg, err := marble.ConfigFromEnv(os.Getenv)
//	params, err := marble.Activate(ctx, cfg)
//	argv, err := marble.Apply(params, os.Setenv, os.Args)
//
// After activation the environment holds the marble's credentials;
// LoadCredentials turns them into TLS configurations with which marbles
// talk mTLS to each other.
package marble
