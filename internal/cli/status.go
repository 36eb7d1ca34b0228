package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/api"
	"github.com/marblemesh/marblemesh/api/wire"
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
manifest, 3 running and accepting marbles.

A Coordinator that describes itself adds a line naming it, whether it is
Ready and, when it is degraded (it answers from a state that may be behind
the shared one and refuses writes) or not Ready, why. A distributed
Coordinator describes every replica instead, one line each, the one that
answered first; a replica it cannot reach is named by its Pod or address
and is not ready with the reason "unreachable: ...".`,
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
					Code     int                  `json:"code"`
					Message  string               `json:"message"`
					Replica  *wire.ReplicaStatus  `json:"replica,omitempty"`
					Replicas []wire.ReplicaStatus `json:"replicas,omitempty"`
				}{st.Code, st.Message, st.Replica, st.Replicas})
			}
			fmt.Fprintf(out.stdout(), "%d: %s\n", st.Code, st.Message)
			switch {
			case len(st.Replicas) > 0:
				fmt.Fprintf(out.stdout(), "Replicas (%d, the one that answered first):\n", len(st.Replicas))
				for _, r := range st.Replicas {
					fmt.Fprintln(out.stdout(), "  "+replicaLine(r))
				}
			case st.Replica != nil:
				fmt.Fprintln(out.stdout(), replicaLine(*st.Replica))
			}
			return nil
		},
	}
	addFormatFlag(cmd)
	return cmd
}

// replicaLine describes one Coordinator in one line; the store is left
// out when unknown (a replica that could not be reached).
func replicaLine(r wire.ReplicaStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Coordinator %s", r.Name)
	if r.StoreBackend != "" {
		fmt.Fprintf(&b, " (store %s", r.StoreBackend)
		if r.Generation != 0 {
			fmt.Fprintf(&b, ", state generation %d", r.Generation)
		}
		b.WriteString(")")
	}
	b.WriteString(": ")
	switch {
	case r.Degraded:
		b.WriteString("degraded, not ready")
	case r.Ready:
		b.WriteString("ready")
	default:
		b.WriteString("not ready")
	}
	if r.Reason != "" {
		b.WriteString(": " + r.Reason)
	}
	return b.String()
}

// recoveringRootNote explains the temporary root of a recovering
// Coordinator and the next step.
func recoveringRootNote(addr string) string {
	return fmt.Sprintf("Note: the Coordinator is in recovery mode. Until it is recovered it serves a temporary root certificate, "+
		"so it does not match the pinned one; once recovered it serves the pinned root again. Upload the recovery secrets with "+
		"'marblerun recover <secret file> %s' (a k-of-n setup needs k of them), or set a new manifest to start over.", addr)
}
