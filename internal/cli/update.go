package cli

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/api"
)

func newManifestUpdateCmd(out *output, connect connectFunc, rep *reporter) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Apply, acknowledge, cancel and show manifest updates (use the pinned certificate)",
		Long: `Manage manifest updates. A package update (only Packages, raising
SecurityVersions) is applied at once. Any other update is a multi-party
update: it is applied once enough users with the UpdateManifest permission
have acknowledged it by uploading the same manifest.

These commands trust the pinned certificate (--coordinator-cert) without
verifying a quote.`,
	}
	cmd.AddCommand(
		newUpdateApplyCmd(connect, rep),
		newUpdateAcknowledgeCmd(connect, rep),
		newUpdateCancelCmd(out, connect),
		newUpdateGetCmd(out, connect),
	)
	return cmd
}

// userAuth is the -c/--cert and -k/--key pair of commands that act as a
// manifest user.
type userAuth struct {
	cert, key string
}

// addUserAuthFlags adds --cert and --key to flags of cmd; persistent
// applies them to subcommands too.
func addUserAuthFlags(cmd *cobra.Command, persistent bool) *userAuth {
	u := &userAuth{}
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	fs.StringVarP(&u.cert, "cert", "c", "", "PEM certificate of a user in the manifest")
	fs.StringVarP(&u.key, "key", "k", "", "PEM private key of that user")
	cmd.MarkFlagsRequiredTogether("cert", "key")
	return u
}

// load returns the user's TLS key pair; both flags are required.
func (u *userAuth) load() (*tls.Certificate, error) {
	if u.cert == "" || u.key == "" {
		return nil, withHint(errors.New("this command acts as a user of the manifest: pass --cert and --key"),
			"Use the certificate of a user in the manifest's Users and its private key.")
	}
	certPEM, err := readFile("user certificate (--cert)", u.cert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readFile("user key (--key)", u.key)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, withHint(fmt.Errorf("the user certificate %s and key %s do not form a key pair: %w", u.cert, u.key, err),
			"Check that --key is the private key of the certificate in --cert.")
	}
	return &pair, nil
}

func newUpdateApplyCmd(connect connectFunc, rep *reporter) *cobra.Command {
	var auth *userAuth
	var recoveryFile string
	cmd := &cobra.Command{
		Use:   "apply <manifest.json|manifest.yaml> <IP:PORT>",
		Short: "Upload an update manifest as a user",
		Args:  exactArgs(2, "<manifest> <IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[1]
			conn := connect(addr)
			raw, err := loadManifest(args[0])
			if err != nil {
				return err
			}
			if err := checkUpdateManifest(args[0], raw); err != nil {
				return err
			}
			cert, err := auth.load()
			if err != nil {
				return err
			}
			root, err := conn.trustedRoot(cmd.Context(), addr)
			if err != nil {
				return err
			}
			res, err := api.ManifestUpdateApply(cmd.Context(), addr, root, raw, cert)
			if err != nil {
				return err
			}
			return rep.reportUpdate(cmd, res, recoveryFile, "Update manifest set successfully.")
		},
	}
	cmd.Flags().StringVarP(&recoveryFile, "recoverydata", "r", "", "file to write new recovery data to, if the update returns any (default: print it)")
	auth = addUserAuthFlags(cmd, false)
	addFormatFlag(cmd)
	return cmd
}

func newUpdateAcknowledgeCmd(connect connectFunc, rep *reporter) *cobra.Command {
	var auth *userAuth
	var recoveryFile string
	cmd := &cobra.Command{
		Use:   "acknowledge <manifest.json|manifest.yaml> <IP:PORT>",
		Short: "Acknowledge the pending update by uploading the same manifest as a user",
		Args:  exactArgs(2, "<manifest> <IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[1]
			conn := connect(addr)
			raw, err := loadManifest(args[0])
			if err != nil {
				return err
			}
			cert, err := auth.load()
			if err != nil {
				return err
			}
			root, err := conn.trustedRoot(cmd.Context(), addr)
			if err != nil {
				return err
			}
			res, err := api.ManifestUpdateAcknowledge(cmd.Context(), addr, root, raw, cert)
			if err != nil {
				return err
			}
			return rep.reportUpdate(cmd, res, recoveryFile, "Acknowledgement successful.")
		},
	}
	cmd.Flags().StringVarP(&recoveryFile, "recoverydata", "r", "", "file to write new recovery data to, if the update returns any (default: print it)")
	auth = addUserAuthFlags(cmd, false)
	addFormatFlag(cmd)
	return cmd
}

// reportUpdate prints the outcome of an update or acknowledgement.
func (r *reporter) reportUpdate(cmd *cobra.Command, res *api.UpdateResult, recoveryFile, legacyDone string) error {
	f := format(cmd)
	if len(res.RecoverySecrets) > 0 && recoveryFile != "" {
		if err := r.writeRecoveryData(recoveryFile, res.RecoverySecrets); err != nil {
			return err
		}
	}
	if f.json() {
		out := struct {
			Message                string            `json:"message,omitempty"`
			Applied                bool              `json:"applied"`
			MissingAcknowledgments int               `json:"missingAcknowledgments"`
			MissingUsers           []string          `json:"missingUsers"`
			RecoverySecrets        map[string][]byte `json:"recoverySecrets,omitempty"`
			RecoveryDataFile       string            `json:"recoveryDataFile,omitempty"`
		}{
			Message: res.Message, Applied: res.MissingAcknowledgments == 0,
			MissingAcknowledgments: res.MissingAcknowledgments, MissingUsers: nonNilStrings(res.MissingUsers),
		}
		if len(res.RecoverySecrets) > 0 {
			if recoveryFile != "" {
				out.RecoveryDataFile = recoveryFile
			} else {
				out.RecoverySecrets = res.RecoverySecrets
			}
		}
		return printJSON(r.out.stdout(), out)
	}
	w := r.out.stdout()
	switch {
	case res.Legacy:
		fmt.Fprintln(w, firstNonEmpty(res.Message, legacyDone))
	case res.MissingAcknowledgments > 0:
		if res.Message != "" {
			fmt.Fprintln(w, res.Message)
		}
		fmt.Fprintf(w, "The update is pending: %d more acknowledgement(s) needed", res.MissingAcknowledgments)
		if len(res.MissingUsers) > 0 {
			fmt.Fprintf(w, ", from: %s", strings.Join(res.MissingUsers, ", "))
		}
		fmt.Fprintln(w, ".")
	default:
		if res.Message != "" {
			fmt.Fprintln(w, res.Message)
		}
		fmt.Fprintln(w, "The update was applied. Restart the marbles so that they get the new configuration.")
	}
	switch {
	case len(res.RecoverySecrets) == 0:
	case recoveryFile != "":
		fmt.Fprintf(w, "The update changed the recovery keys. New recovery data saved to %s; keep it safe.\n", recoveryFile)
	default:
		fmt.Fprintln(w, "The update changed the recovery keys. New recovery data (keep it safe):")
		return printJSON(w, recoveryData{res.RecoverySecrets})
	}
	return nil
}

func newUpdateCancelCmd(out *output, connect connectFunc) *cobra.Command {
	var auth *userAuth
	cmd := &cobra.Command{
		Use:   "cancel <IP:PORT>",
		Short: "Cancel the pending update as a user",
		Args:  exactArgs(1, "<IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[0]
			conn := connect(addr)
			cert, err := auth.load()
			if err != nil {
				return err
			}
			root, err := conn.trustedRoot(cmd.Context(), addr)
			if err != nil {
				return err
			}
			msg, err := api.ManifestUpdateCancel(cmd.Context(), addr, root, cert)
			if err != nil {
				return err
			}
			msg = firstNonEmpty(msg, "Update cancelled.")
			if format(cmd).json() {
				return printJSON(out.stdout(), struct {
					Message string `json:"message"`
				}{msg})
			}
			fmt.Fprintln(out.stdout(), msg)
			return nil
		},
	}
	auth = addUserAuthFlags(cmd, false)
	addFormatFlag(cmd)
	return cmd
}

func newUpdateGetCmd(out *output, connect connectFunc) *cobra.Command {
	var (
		output  string
		missing bool
	)
	cmd := &cobra.Command{
		Use:   "get <IP:PORT>",
		Short: "Show the pending update",
		Long: `Print the pending update's manifest, or with --missing the users who still
need to acknowledge it. When none is pending it says so on stderr and exits
with code 1 (with --format json, {"pending": false} is printed first).`,
		Args: exactArgs(1, "<IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[0]
			root, err := connect(addr).trustedRoot(cmd.Context(), addr)
			if err != nil {
				return err
			}
			jsonOut := format(cmd).json()
			u, err := api.ManifestUpdateGet(cmd.Context(), addr, root)
			if errors.Is(err, api.ErrNoPendingUpdate) {
				// Exit code 1, as MarbleRun's CLI: scripts test for it.
				if jsonOut {
					if perr := printJSON(out.stdout(), struct {
						Pending bool `json:"pending"`
					}{false}); perr != nil {
						return perr
					}
				}
				return err
			}
			if err != nil {
				return err
			}
			if missing {
				if jsonOut {
					return printJSON(out.stdout(), struct {
						Pending      bool     `json:"pending"`
						Message      string   `json:"message"`
						MissingUsers []string `json:"missingUsers"`
					}{true, u.Message, nonNilStrings(u.MissingUsers)})
				}
				w := out.stdout()
				if u.Message != "" {
					fmt.Fprintln(w, u.Message)
				}
				if len(u.MissingUsers) > 0 {
					fmt.Fprintf(w, "Users who may still acknowledge: %s\n", strings.Join(u.MissingUsers, ", "))
				}
				return nil
			}
			if output != "" {
				if err := out.writeOutput(output, u.Manifest, 0o644); err != nil {
					return err
				}
				out.warnf("Pending update manifest written to %s.", outputName(output))
				return nil
			}
			_, err = out.stdout().Write(u.Manifest)
			return err
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write the pending manifest to (default: print it)")
	cmd.Flags().BoolVar(&missing, "missing", false, "show who still has to acknowledge instead of the manifest")
	addFormatFlag(cmd)
	return cmd
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
