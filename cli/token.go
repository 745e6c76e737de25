package cli

import (
	"fmt"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"

	"github.com/spf13/cobra"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage API tokens: create, ls, revoke",
		Long: `A token has a scope and an expiry:
  admin      manages tenants and tokens (admin tenant only)
  tenant     acts on its tenant's instances, images and events
  read-only  may only read them (GET)
Only a token's hash is stored: its secret is printed once, at creation. Its
ID (tok-…) names it in cube token ls and cube token revoke. A revoked or
expired token is refused (401) from the very next request. Minting a token
never changes its tenant's quotas or grants.`,
		Example: `  cube token create --tenant acme --ttl 720h
  cube token create --scope read-only
  cube token ls
  cube token revoke tok-0123456789ab`,
	}
	cmd.AddCommand(newTokenCreateCmd(g), newTokenLsCmd(g), newTokenRevokeCmd(g))
	return cmd
}

func newTokenCreateCmd(g *globals) *cobra.Command {
	var tenant, scope, ttl, output string
	cmd := &cobra.Command{
		Use:   "create [--tenant NAME] [--scope admin|tenant|read-only] [--ttl DURATION]",
		Short: "Mint a token and print its secret (shown once)",
		Long: `Mint a token and print its secret; -o json also shows its ID and expiry.
--tenant defaults to your own; only admin tokens may mint for another tenant.
--scope is tenant by default; admin is for the admin tenant only, and a tenant
token can mint only tenant or read-only tokens of its own tenant.
--ttl is its lifetime (default 8760h, one year; 0: it never expires).`,
		Example: `  CUBE_TOKEN=$(cube token create --tenant acme) cube ps
  cube token create --tenant acme --scope read-only --ttl 24h
  cube token create --scope admin --ttl 0 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			tok, err := c.CreateToken(cmd.Context(), v1.TokenRequest{Tenant: tenant, Scope: scope, TTL: ttl})
			if err != nil {
				return err
			}
			if done, err := printData(g.stdout, output, tok, []string{tok.Metadata.Name}); done {
				return err
			}
			fmt.Fprintln(g.stdout, tok.Token)
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant of the token (default: yours)")
	cmd.Flags().StringVar(&scope, "scope", "tenant", "admin, tenant or read-only")
	cmd.Flags().StringVar(&ttl, "ttl", "", "lifetime, e.g. 720h (default 8760h; 0: never expires)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table prints the secret only; "+outputHelp)
	return cmd
}

func newTokenLsCmd(g *globals) *cobra.Command {
	var tenant, output string
	cmd := &cobra.Command{
		Use:     "ls [--tenant NAME]",
		Aliases: []string{"list"},
		Short:   "List tokens (IDs, scopes, expiry; never secrets)",
		Long: `List tokens: an admin token sees every tenant's (and the node agents'), or one
tenant's with --tenant; other tokens see their own tenant's.`,
		Example: `  cube token ls
  cube token ls --tenant acme -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			l, err := c.ListTokens(cmd.Context(), tenant)
			if err != nil {
				return err
			}
			names := make([]string, len(l.Items))
			for i, t := range l.Items {
				names[i] = t.Metadata.Name
			}
			if done, err := printData(g.stdout, output, l.Items, names); done {
				return err
			}
			tw := newTable(g.stdout)
			now := time.Now()
			fmt.Fprintln(tw, "ID\tTENANT\tSCOPE\tEXPIRES\tAGE")
			for _, t := range l.Items {
				exp := "never"
				if t.Expires != nil {
					exp = t.Expires.Local().Format(time.RFC3339)
					if !t.Expires.After(now) {
						exp += " (expired)"
					}
				}
				who := t.Metadata.Tenant
				if t.Node != "" {
					who = "node " + t.Node
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Metadata.Name, orDash(who), t.Scope, exp, age(t.Metadata.CreationTimestamp, now))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's tokens (admin tokens)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", outputHelp)
	return cmd
}

func newTokenRevokeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke ID...",
		Short: "Revoke tokens by ID; the next request with one gets 401",
		Long: `Revoke tokens by their ID (from cube token ls). The server reads the token on
every request, so a revoked token fails from the very next one. A tenant token
may revoke its own tenant's tokens (itself included); admin tokens any.`,
		Example: `  cube token revoke tok-0123456789ab
  cube token ls -o name | xargs cube token revoke`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := c.RevokeToken(cmd.Context(), id); err != nil {
					return err
				}
				fmt.Fprintln(g.stdout, id)
			}
			return nil
		},
	}
	return cmd
}
