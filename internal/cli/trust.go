package cli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/marblemesh/marblemesh/api"
)

// defaultEraConfig is read when --era-config is not given.
const defaultEraConfig = "era-config.json"

// pinMode says how a verifying command treats the pinned certificates.
type pinMode int

const (
	// pinCheck pins on first use and refuses a Coordinator whose root
	// differs from the pinned one.
	pinCheck pinMode = iota
	// pinLater neither checks nor writes the pin: the command calls
	// pin once it succeeded (manifest set, manifest verify).
	pinLater
	// pinIgnore neither checks nor writes the pin (recovery, where the
	// Coordinator serves a temporary root).
	pinIgnore
)

// coordinatorConn verifies and pins the Coordinator as the persistent
// flags say.
type coordinatorConn struct {
	certFile    string
	eraConfig   string
	insecure    bool
	tcbStatuses []string
	advisories  []string
	// tcbStatusesChanged and advisoriesChanged say whether the user set
	// the list flags, which then override the era config.
	tcbStatusesChanged bool
	advisoriesChanged  bool
	nonce              string
	saveQuote          string
	// verifier verifies SGX quotes; nil when none is available.
	verifier api.Verifier
	out      *output
}

// connectFunc returns the coordinatorConn for the Coordinator at addr. The
// persistent flags it is built from are parsed only when a command runs, so
// commands call it in RunE; it also notes addr for the error hints.
type connectFunc func(addr string) *coordinatorConn

// errRootChanged is wrapped when a verified Coordinator's root differs from
// the pinned one.
var errRootChanged = errors.New("the Coordinator's root certificate differs from the pinned one")

// attest verifies the Coordinator at addr and applies the pinning rule of
// mode. It returns the attested certificates.
func (c *coordinatorConn) attest(ctx context.Context, addr string, mode pinMode) (*api.Attestation, error) {
	var nonce []byte
	if c.nonce != "" {
		nonce = []byte(c.nonce)
	}
	q, err := api.FetchQuote(ctx, addr, nonce)
	if err != nil {
		return nil, err
	}
	if c.saveQuote != "" {
		if err := c.out.writeOutput(c.saveQuote, q.Evidence, 0o644); err != nil {
			return nil, fmt.Errorf("saving the quote: %w", err)
		}
		if len(q.Evidence) == 0 {
			c.out.warnf("Note: the quote written to %s is empty: the Coordinator runs in simulation mode.", c.saveQuote)
		}
	}

	var att *api.Attestation
	if c.insecure {
		att, err = api.VerifyQuote(ctx, q, api.VerifyOptions{InsecureSkipVerify: true})
		if err != nil {
			return nil, err
		}
		what := "WARNING: --insecure: the Coordinator's quote was NOT verified; anyone could be impersonating it. Use this only for test setups."
		if att.Simulation() {
			what += "\nWARNING: the Coordinator runs in simulation mode (its quote is empty)."
		}
		c.out.warnf("%s", what)
	} else {
		if len(q.Evidence) == 0 {
			return nil, fmt.Errorf("verifying the Coordinator at %s: %w", addr, api.ErrSimulation)
		}
		if c.verifier == nil {
			return nil, fmt.Errorf("verifying the Coordinator at %s: %w", addr, api.ErrNoVerifier)
		}
		opts, err := c.verifyOptions()
		if err != nil {
			return nil, err
		}
		opts.Verifier = c.verifier
		if att, err = api.VerifyQuote(ctx, q, opts); err != nil {
			return nil, fmt.Errorf("verifying the Coordinator at %s: %w", addr, err)
		}
	}

	if mode != pinCheck {
		return att, nil
	}
	pinned, err := c.loadPin()
	if err != nil {
		return nil, err
	}
	if pinned == nil {
		if err := c.pin(att); err != nil {
			return nil, err
		}
		return att, nil
	}
	if !pinned.root.Equal(att.Root) && c.insecure {
		c.out.warnf("%s", insecurePinSkipped(att.Root, pinned.root, c.certFile))
		return att, nil
	}
	if !pinned.root.Equal(att.Root) {
		return nil, withHint(fmt.Errorf("%w: the Coordinator at %s presents root SHA-256 %s, %s pins SHA-256 %s",
			errRootChanged, addr, api.Fingerprint(att.Root), c.certFile, api.Fingerprint(pinned.root)),
			fmt.Sprintf("If the Coordinator was re-installed or its state was reset, verify it and its manifest with "+
				"'marblerun manifest verify <manifest> %s', which pins the new certificate. Otherwise you may be talking to a different Coordinator than you think.", addr))
	}
	if att.Intermediate != nil && (pinned.intermediate == nil || !pinned.intermediate.Equal(att.Intermediate)) {
		// The root signed the new intermediate (checked when the chain was
		// parsed); it changes with every manifest update.
		if err := c.writePin(att.Root, att.Intermediate); err != nil {
			return nil, err
		}
	}
	return att, nil
}

// pin stores the attested certificates, telling the user when a different
// root was pinned before.
func (c *coordinatorConn) pin(att *api.Attestation) error {
	old, err := c.loadPin()
	if err != nil {
		return err
	}
	if err := c.writePin(att.Root, att.Intermediate); err != nil {
		return err
	}
	switch {
	case old == nil:
		c.out.warnf("Pinned the Coordinator's root certificate (SHA-256 %s) in %s.", api.Fingerprint(att.Root), c.certFile)
	case !old.root.Equal(att.Root):
		c.out.warnf("Replaced the pinned root certificate in %s: SHA-256 %s was pinned, %s is now.", c.certFile, api.Fingerprint(old.root), api.Fingerprint(att.Root))
	}
	return nil
}

// trustedRoot returns the pinned root for the commands that use it as
// their TLS trust anchor without verifying a quote. --insecure skips the
// pin, as in MarbleRun: the command trusts whatever root the Coordinator
// presents, says so, and leaves the pin as it is (a Coordinator in recovery
// mode serves a temporary root until it is recovered).
func (c *coordinatorConn) trustedRoot(ctx context.Context, addr string) (*x509.Certificate, error) {
	pinned, err := c.loadPin()
	if err != nil {
		return nil, err
	}
	if !c.insecure {
		if pinned != nil {
			return pinned.root, nil
		}
		return nil, withHint(fmt.Errorf("no Coordinator certificate is pinned in %s", c.certFile),
			fmt.Sprintf("Verify the Coordinator first: 'marblerun certificate root %s' or 'marblerun manifest verify <manifest> %s' pin its certificate "+
				"(or pass --coordinator-cert with a pinned certificate, or --insecure for test setups).", addr, addr))
	}
	q, err := api.FetchQuote(ctx, addr, nil)
	if err != nil {
		return nil, err
	}
	switch {
	case pinned == nil:
		c.out.warnf("WARNING: --insecure and no pinned certificate: trusting whatever certificate the Coordinator presents (SHA-256 %s).", api.Fingerprint(q.Root))
	case !pinned.root.Equal(q.Root):
		c.out.warnf("%s", insecurePinSkipped(q.Root, pinned.root, c.certFile))
	}
	return q.Root, nil
}

// insecurePinSkipped is the warning of a command that, with --insecure,
// talks to a Coordinator whose root differs from the pinned one.
func insecurePinSkipped(presented, pinned *x509.Certificate, certFile string) string {
	return fmt.Sprintf("WARNING: --insecure: the Coordinator presents root SHA-256 %s, not the root SHA-256 %s pinned in %s; "+
		"trusting it without verification for this command and leaving the pin unchanged.",
		api.Fingerprint(presented), api.Fingerprint(pinned), certFile)
}

// verifyOptions builds the expected identity from the era config and the
// flags. Flags that were set override the era config.
func (c *coordinatorConn) verifyOptions() (api.VerifyOptions, error) {
	path := c.eraConfig
	if path == "" {
		path = defaultEraConfig
	}
	data, err := os.ReadFile(path) //nolint:gosec // G304: the era config the user named
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && c.eraConfig == "" {
			return api.VerifyOptions{}, withHint(errors.New("no era config: the Coordinator's expected identity is unknown"),
				"Pass --era-config with the era config (JSON: UniqueID or SignerID, ProductID, SecurityVersion, Debug) of the Coordinator you deployed, "+
					"or put it in ./era-config.json; marblerun never downloads it. For test setups, pass --insecure.")
		}
		return api.VerifyOptions{}, fmt.Errorf("reading the era config: %w", err)
	}
	opts, err := api.ParseVerifyOptions(data)
	if err != nil {
		return api.VerifyOptions{}, fmt.Errorf("%s: %w", path, err)
	}
	if opts.InsecureSkipVerify {
		return api.VerifyOptions{}, fmt.Errorf("%s sets InsecureSkipVerify: a file must not turn off verification; pass --insecure on the command line instead", path)
	}
	if len(opts.Nonce) > 0 {
		return api.VerifyOptions{}, fmt.Errorf("%s sets Nonce: a nonce must be fresh for each request; pass --nonce on the command line instead", path)
	}
	if err := opts.Validate(); err != nil {
		return api.VerifyOptions{}, fmt.Errorf("%s: %w", path, err)
	}
	if c.tcbStatusesChanged || len(opts.AcceptedTCBStatuses) == 0 {
		opts.AcceptedTCBStatuses = c.tcbStatuses
	}
	if c.advisoriesChanged {
		opts.AcceptedAdvisories = c.advisories
	}
	if err := opts.Validate(); err != nil {
		return api.VerifyOptions{}, fmt.Errorf("--accepted-tcb-statuses: %w", err)
	}
	return opts, nil
}

// pinnedCerts are the certificates in the cert cache file.
type pinnedCerts struct {
	root, intermediate *x509.Certificate
}

// loadPin reads the cert cache file; it returns nil and no error if there
// is none.
func (c *coordinatorConn) loadPin() (*pinnedCerts, error) {
	if c.certFile == "" {
		return nil, errors.New("cannot find your configuration folder: pass --coordinator-cert FILE")
	}
	data, err := os.ReadFile(c.certFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the pinned Coordinator certificate: %w", err)
	}
	root, inter, err := api.ParseCertificateChain(data)
	if err != nil {
		return nil, withHint(fmt.Errorf("%s: %w", c.certFile, err),
			"The file should hold the Coordinator's certificates as PEM. Delete it and verify the Coordinator again, or pass another --coordinator-cert.")
	}
	return &pinnedCerts{root: root, intermediate: inter}, nil
}

// writePin writes the cert cache file: intermediate first, then root, as
// the Coordinator sends them.
func (c *coordinatorConn) writePin(root, intermediate *x509.Certificate) error {
	if c.certFile == "" {
		return errors.New("cannot find your configuration folder: pass --coordinator-cert FILE")
	}
	var b strings.Builder
	if intermediate != nil {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: intermediate.Raw}))
	}
	b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}))
	if err := os.MkdirAll(filepath.Dir(c.certFile), 0o755); err != nil { //nolint:gosec // G301: the folder of public certificates the user named
		return fmt.Errorf("pinning the Coordinator certificate: %w", err)
	}
	if err := writeFile(c.certFile, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("pinning the Coordinator certificate: %w", err)
	}
	return nil
}
