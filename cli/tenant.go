package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newTenantCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tenant", Short: "Manage tenants (admin tenant only)"}
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a tenant and print a new API token for it (shown once)",
		Example: `  cube tenant create acme
  CUBE_TOKEN=$(cube tenant create acme) cube ps`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			tt, err := c.CreateTenant(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, tt.Token)
			return nil
		},
	}
	cmd.AddCommand(create)
	return cmd
}
