package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/api"
)

func newStatusCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status <IP:PORT>",
		Short: "Print the Coordinator's state (uses the pinned certificate)",
		Long: `Print the Coordinator's state as "<code>: <message>". Trusts the pinned
certificate (--coordinator-cert) without verifying a quote.

States: 0 uninitialized (booting), 1 recovery (its sealed state cannot be
opened: upload recovery secrets or set a new manifest), 2 waiting for a
manifest, 3 running and accepting marbles.`,
		Args: exactArgs(1, "<IP:PORT>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := g.setAddr(args[0])
			root, err := g.trustedRoot(cmd.Context(), addr)
			if err != nil {
				return err
			}
			st, err := api.Status(cmd.Context(), addr, root)
			if err != nil {
				return err
			}
			if format(cmd).json() {
				return printJSON(g.stdout(), struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				}{st.Code, st.Message})
			}
			fmt.Fprintf(g.stdout(), "%d: %s\n", st.Code, st.Message)
			return nil
		},
	}
	addFormatFlag(cmd)
	return cmd
}
