package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/api"
)

func newStatusCmd(out *output, connect connectFunc) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status <IP:PORT>",
		Short: "Print the Coordinator's state (uses the pinned certificate)",
		Long: `Print the Coordinator's state as "<code>: <message>". Trusts the pinned
certificate (--coordinator-cert) without verifying a quote; --insecure
trusts whatever certificate the Coordinator presents instead, which is how
to reach a Coordinator in recovery mode: it serves a temporary root
certificate until it is recovered.

States: 0 uninitialized (booting), 1 recovery (its sealed state cannot be
opened: upload recovery secrets or set a new manifest), 2 waiting for a
manifest, 3 running and accepting marbles.`,
		Args: exactArgs(1, "<IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := args[0]
			root, err := connect(addr).trustedRoot(cmd.Context(), addr)
			if err != nil {
				return err
			}
			st, err := api.Status(cmd.Context(), addr, root)
			if err != nil {
				return err
			}
			if st.Code == api.StateRecovery {
				out.warnf("%s", recoveringRootNote(addr))
			}
			if format(cmd).json() {
				return printJSON(out.stdout(), struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				}{st.Code, st.Message})
			}
			fmt.Fprintf(out.stdout(), "%d: %s\n", st.Code, st.Message)
			return nil
		},
	}
	addFormatFlag(cmd)
	return cmd
}

// recoveringRootNote explains the temporary root of a recovering
// Coordinator and the next step.
func recoveringRootNote(addr string) string {
	return fmt.Sprintf("Note: the Coordinator is in recovery mode. Until it is recovered it serves a temporary root certificate, "+
		"so it does not match the pinned one; once recovered it serves the pinned root again. Upload the recovery secrets with "+
		"'marblerun recover <secret file> %s' (a k-of-n setup needs k of them), or set a new manifest to start over.", addr)
}
