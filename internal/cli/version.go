package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/marblemesh/marblemesh/internal/version"
)

func newVersionCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the CLI's version",
		Args:  exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format(cmd).json() {
				return printJSON(g.stdout(), struct {
					Version   string `json:"version"`
					Commit    string `json:"commit"`
					GoVersion string `json:"goVersion"`
				}{version.Version, version.Commit, runtime.Version()})
			}
			fmt.Fprintf(g.stdout(), "CLI version: %s\nCommit: %s\n", version.Version, version.Commit)
			return nil
		},
	}
	addFormatFlag(cmd)
	return cmd
}
