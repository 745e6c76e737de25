package cli

import (
	"github.com/cube-platform/cube/shim"
	"github.com/spf13/cobra"
)

// newShimCmd is the per-instance supervisor the node agent starts; users
// never run it by hand.
func newShimCmd() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:    "shim --config PATH",
		Short:  "Run one instance's supervisor (started by the node agent)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return shim.Main(cmd.Context(), config)
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "shim config file written by the node agent")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}
