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
// # Evidence
//
// ConfigFromEnv chooses how the marble proves what it is (IssuerFromEnv):
//
//   - OE_SIMULATION=1: no evidence at all. This is INSECURE and only a
//     Coordinator in simulation mode admits such a marble.
//   - Otherwise an SGX quote from Gramine's attestation folder, when its
//     quote file exists: the marble runs under gramine-sgx with
//     sgx.remote_attestation = "dcap". The folder is /dev/attestation, or
//     the one named by EDG_MARBLE_ATTESTATION_DIR.
//   - Otherwise ConfigFromEnv fails (ErrNoTEE) and says what it looked for.
//     There is no fallback: configfs-tsm (TDX, SEV-SNP) reports are not
//     SGX evidence, and simulation is never entered implicitly.
//
// After activation the environment holds the marble's credentials;
// LoadCredentials turns them into TLS configurations with which marbles
// talk mTLS to each other.
//
// # Transparent TLS
//
// The TLS tags of the manifest reach the marble in MARBLE_TTLS_CONFIG.
// Nothing intercepts the marble's sockets; a Go service applies the rules
// by listening and dialling through TransparentTLSFromEnv:
//
//	tt, err := marble.TransparentTLSFromEnv(os.Getenv)
//	lis, err := tt.Listen(ctx, "tcp", ":8080")            // TLS if "*:8080" has a rule
//	client := &http.Client{Transport: tt.HTTPTransport()} // http://db:5432 is TLS if "db:5432" has one
//
// Programs run under cmd/premain get no transparent TLS; premain warns.
package marble
