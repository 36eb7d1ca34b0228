package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/attestation"
)

// Options are what the CLI gets from its process.
type Options struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Verifier verifies SGX quotes; nil when none is available, in which
	// case only --insecure reaches a Coordinator that sends a quote.
	Verifier api.Verifier
	// ConfigDir returns the user's configuration folder; os.UserConfigDir
	// when nil.
	ConfigDir func() (string, error)
}

// globals holds the persistent flags and the state of one invocation, and
// builds from them what the command builders take: the output, the
// coordinatorConn (connect) and the namespace.
type globals struct {
	out      *output
	verifier api.Verifier

	certFile    string
	eraConfig   string
	insecure    bool
	tcbStatuses []string
	advisories  []string
	namespace   string
	nonce       string
	saveQuote   string

	tcbStatusesChanged bool
	advisoriesChanged  bool

	// addr is the Coordinator address of the running command, for hints.
	addr string
}

// NewRootCmd returns the marblerun command with all its subcommands.
func NewRootCmd(o Options) *cobra.Command {
	root, _ := newRoot(o)
	return root
}

func newRoot(o Options) (*cobra.Command, *globals) {
	if o.Stdin == nil {
		o.Stdin = os.Stdin
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.ConfigDir == nil {
		o.ConfigDir = os.UserConfigDir
	}
	g := &globals{out: &output{out: o.Stdout, errOut: o.Stderr}, verifier: o.Verifier}

	root := &cobra.Command{
		Use:   "marblerun",
		Short: "Manage a MarbleRun-compatible confidential service mesh",
		Long: `marblerun talks to a Coordinator: it verifies the Coordinator's attestation,
sets and updates manifests, reads and writes secrets, and recovers a sealed
Coordinator.

Commands that verify the Coordinator need its expected identity in an era
config (--era-config, or era-config.json in the current folder); nothing is
ever downloaded. After the first verification the Coordinator's certificates
are pinned in --coordinator-cert, and a Coordinator whose root changed is
refused until "marblerun manifest verify" re-verifies it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			g.recordFlagChanges(cmd)
			return nil
		},
	}
	root.SetIn(o.Stdin)
	root.SetOut(o.Stdout)
	root.SetErr(o.Stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return withHint(err, fmt.Sprintf("See '%s --help'.", c.CommandPath()))
	})

	defaultCert := ""
	if dir, err := o.ConfigDir(); err == nil {
		defaultCert = filepath.Join(dir, "marblerun", "coordinator-cert.pem")
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.certFile, "coordinator-cert", defaultCert, "file that pins the Coordinator's root and intermediate certificates (PEM)")
	pf.StringVar(&g.eraConfig, "era-config", "", "era config with the Coordinator's expected identity (JSON; default ./era-config.json)")
	pf.BoolVarP(&g.insecure, "insecure", "i", false, "skip the verification of the Coordinator's quote (INSECURE; for simulation and test setups only)")
	pf.StringSliceVar(&g.tcbStatuses, "accepted-tcb-statuses", attestation.DefaultAcceptedTCBStatuses(), "TCB statuses accepted for the Coordinator's platform")
	pf.StringSliceVar(&g.advisories, "accepted-advisories", nil, "Intel security advisories accepted for the Coordinator's platform (default: all)")
	pf.StringVarP(&g.namespace, "namespace", "n", "marblerun", "Kubernetes namespace of the MarbleRun installation (for the Kubernetes commands)")
	pf.StringVar(&g.nonce, "nonce", "", "ask the Coordinator for a fresh quote that binds this nonce (needs a v2 Coordinator)")
	pf.StringVar(&g.saveQuote, "save-sgx-quote", "", "write the Coordinator's quote to this file")

	rep := &reporter{out: g.out}
	root.AddCommand(
		newManifestCmd(g.out, g.connect, rep),
		newStatusCmd(g.out, g.connect),
		newCertificateCmd(g.out, g.connect),
		newSecretCmd(g.out, g.connect),
		newRecoverCmd(g.connect, rep),
		newRecoverWithSignatureCmd(g.out, g.connect, rep),
		newPackageInfoCmd(g.out),
		newVersionCmd(g.out, g.ns),
		newInstallCmd(g.out, g.ns), newUninstallCmd(g.out, g.ns), newCheckCmd(g.out, g.ns), newPrecheckCmd(g.out, g.ns),
	)
	return root, g
}

// Execute runs the CLI with args and returns the process exit code.
func Execute(ctx context.Context, args []string, o Options) int {
	root, g := newRoot(o)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	stderr := root.ErrOrStderr()
	fmt.Fprintf(stderr, "Error: %v\n", err)
	if h := hintFor(err, g.addr, g.certFile); h != "" {
		fmt.Fprintln(stderr, h)
	}
	return 1
}

// recordFlagChanges notes which list flags the user set, so that they
// override the era config.
func (g *globals) recordFlagChanges(cmd *cobra.Command) {
	g.tcbStatusesChanged = cmd.Flags().Changed("accepted-tcb-statuses")
	g.advisoriesChanged = cmd.Flags().Changed("accepted-advisories")
}

// connect is the connectFunc of the commands: it records addr, the
// Coordinator address of the running command, for error hints and returns
// the connection settings the flags say.
func (g *globals) connect(addr string) *coordinatorConn {
	g.addr = addr
	return &coordinatorConn{
		certFile:           g.certFile,
		eraConfig:          g.eraConfig,
		insecure:           g.insecure,
		tcbStatuses:        g.tcbStatuses,
		advisories:         g.advisories,
		tcbStatusesChanged: g.tcbStatusesChanged,
		advisoriesChanged:  g.advisoriesChanged,
		nonce:              g.nonce,
		saveQuote:          g.saveQuote,
		verifier:           g.verifier,
		out:                g.out,
	}
}

// ns returns the Kubernetes namespace of the installation (-n).
func (g *globals) ns() string { return g.namespace }

// exactArgs requires n arguments and names them in the error.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return withHint(fmt.Errorf("%s takes %d argument(s): %s; got %d", cmd.CommandPath(), n, names, len(args)),
				fmt.Sprintf("See '%s --help'.", cmd.CommandPath()))
		}
		return nil
	}
}

// minArgs requires at least n arguments and names them in the error.
func minArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return withHint(fmt.Errorf("%s takes at least %d arguments: %s; got %d", cmd.CommandPath(), n, names, len(args)),
				fmt.Sprintf("See '%s --help'.", cmd.CommandPath()))
		}
		return nil
	}
}
