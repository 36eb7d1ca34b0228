// Package cli implements the marblerun command line: cobra commands built
// by constructor functions on the api package. cmd/marblerun only wires
// the process (streams, signals, exit code) to Execute.
//
// # Trust
//
// The Coordinator is trusted through its attestation: a verifying command
// fetches the quote (with --nonce, a fresh one), checks that it binds
// SHA-256(root certificate DER), or SHA-256(root ‖ nonce), and that an
// attestation.Verifier confirms the identity in the era config. The era
// config is --era-config, or ./era-config.json; nothing is downloaded.
// When no verifier is available (Options.Verifier is nil, as long as the
// project has no DCAP verifier), a non-empty quote cannot be verified and
// the command stops; an empty quote means simulation and is refused too.
// --insecure skips the verification, saying so on stderr.
//
// After a verification the root and intermediate certificates are pinned
// in --coordinator-cert (default <user config folder>/marblerun/
// coordinator-cert.pem). Per command:
//
//	command                                   quote   pin
//	manifest set                              yes     re-pinned after success
//	manifest verify                           yes     re-pinned after the manifest matched
//	manifest get                              yes     pinned on first use, changed root refused
//	certificate root|intermediate|chain       yes     pinned on first use, changed root refused
//	secret get|set                            yes     pinned on first use, changed root refused
//	recover, recover-with-signature,
//	  recover-with-signature public-key       yes     neither read nor written (a Coordinator in
//	                                                  recovery mode serves a temporary root)
//	status, manifest log,
//	  manifest update apply|acknowledge|
//	  cancel|get                              no      the pinned root is the TLS trust anchor
//	manifest signature, package-info,
//	  recover-with-signature encrypt-secret|
//	  sign-secret, version, completion        offline
//
// A changed root is refused with an error that names "marblerun manifest
// verify", the explicit re-verification. When the root is unchanged but
// the intermediate changed (every manifest update rotates it), a
// verifying command replaces the pinned intermediate: the root signed it.
// TLS connections check that the server's certificate chains to the
// pinned (or just attested) root, not its host name.
//
// --insecure skips the pin, as in MarbleRun: the command trusts whatever
// root the Coordinator presents, warns when it differs from the pinned one,
// and leaves the pin as it is. That is how a Coordinator in recovery mode,
// which serves a temporary root until it is recovered, is reached; status
// explains it. With --insecure and no pin, verifying commands pin what they
// were given, loudly. The two commands whose purpose is to pin, manifest
// set and manifest verify, pin the root they talked to also with
// --insecure (and say that they replaced the pin): that is how a test
// setup in simulation re-pins a re-installed Coordinator.
//
// # Output
//
// -o/--output keeps MarbleRun's meaning everywhere: the file a command
// writes. Commands that print data take --format text|json instead; the
// JSON is indented and its field names are stable. Warnings, notes and
// errors go to stderr; errors are followed by a line saying what to do
// next. The exit code is 1 on any error.
//
// Secret values and private keys are never printed: "secret get" prints a
// summary (types, certificates, public keys) and writes the values only to
// the --output file (mode 0600). Recovery data is printed because it is
// encrypted for its owners.
//
// # Choices where MarbleRun is inconsistent or unclear
//
//   - The default era config is ./era-config.json (MarbleRun's code; its
//     help text says coordinator-era.json). Unknown fields are refused and
//     a file may set neither InsecureSkipVerify nor Nonce (use --insecure
//     and --nonce). --accepted-tcb-statuses and
//     --accepted-advisories override the era config only when given.
//   - --save-sgx-quote writes the quote whether or not it is verified.
//   - status documents the codes as the Coordinator defines them: 0
//     uninitialized, 1 recovery, 2 waiting for a manifest, 3 running.
//   - manifest set's flag is -r/--recoverydata.
//   - A user secret has Cert, Private and Key; anything else (such as the
//     "public" field MarbleRun's docs show) is refused.
//   - Recovery uses only the v2 API (v1 answers 410).
//   - manifest get prints the manifest byte for byte (no added newline),
//     so that its signature is the Coordinator's; --keep-cert is accepted,
//     hidden, and does nothing because pinning is automatic.
//   - "manifest update get" with no pending update prints so and exits 0.
//   - manifest set checks the manifest locally before anything is sent.
//   - recover reads the encrypted secret as binary or as its base64 text.
//   - -n/--namespace selects the installation's namespace for the
//     Kubernetes commands (install, uninstall, check, version --coordinator).
package cli
