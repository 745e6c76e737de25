package cli

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"

	"github.com/spf13/cobra"
)

func newTenantCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tenant",
		Short: "Manage tenants: create, update, ls, rm (admin tokens only)",
		Long: `Tenants own instances, images and tokens. Only an admin token of the admin
tenant may manage them. A tenant starts with no grants: its instances run in
microVMs only, and runc, priority system and every toleration must be granted
to it (cube tenant update --allow-runtime, --allow-priority,
--allow-toleration). Creating a tenant that exists is refused; use update,
which changes only the flags you give, and mint more tokens with
cube token create.`,
		Example: `  CUBE_TOKEN=$(cube tenant create acme) cube ps
  cube tenant update acme --allow-priority system --allow-toleration gpu
  cube tenant ls
  cube tenant rm acme`,
	}
	cmd.AddCommand(newTenantCreateCmd(g), newTenantUpdateCmd(g), newTenantLsCmd(g), newTenantRmCmd(g))
	return cmd
}

// parseQuotas reads repeated --quota flags into quotas by band (nil for
// none).
func parseQuotas(flags []string) (map[string]v1.Quota, error) {
	var out map[string]v1.Quota
	for _, q := range flags {
		band, quota, err := parseQuota(q)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = map[string]v1.Quota{}
		}
		out[band] = quota
	}
	return out, nil
}

// parseQuota reads BAND=cpu=C,memory=M,instances=N.
func parseQuota(q string) (string, v1.Quota, error) {
	band, spec, ok := strings.Cut(q, "=")
	if !ok {
		return "", v1.Quota{}, fmt.Errorf("--quota %q: want BAND=cpu=C,memory=M,instances=N", q)
	}
	var quota v1.Quota
	for _, kv := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "cpu":
			quota.CPU = v
		case "memory":
			quota.Memory = v
		case "instances":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return "", v1.Quota{}, fmt.Errorf("--quota %q: instances must be a number", q)
			}
			quota.Instances = n
		default:
			return "", v1.Quota{}, fmt.Errorf("--quota %q: unknown limit %q (use cpu, memory, instances)", q, k)
		}
	}
	return band, quota, nil
}

func newTenantCreateCmd(g *globals) *cobra.Command {
	var weight float64
	var quotas, prios, tols, rts []string
	var maxInstances int
	var ttl, output, imageStorage string
	cmd := &cobra.Command{
		Use:   "create NAME [--weight W] [--quota BAND=cpu=C,memory=M,instances=N]... [--allow-priority BAND]... [--allow-toleration KEY]...",
		Short: "Create a tenant and print its first API token (shown once)",
		Long: `Create a tenant and print a new token of scope tenant for it (shown once;
only its hash is stored). A tenant that exists is refused (409): change it
with cube tenant update, and mint more tokens with cube token create.
--weight scales the tenant's fair share of a full fleet (default 1).
--quota limits what the tenant may hold at once in one priority band
(system, production, batch, best-effort); an instance over quota is refused
at once with HTTP 429 and never waits in the queue.
--allow-priority grants a band above production (system); without it the
tenant's instances of that band are refused with 403.
--allow-toleration grants tolerating the taint KEY ('*': every key).
--allow-runtime runc lets the tenant run instances with --runtime runc, in
namespaces of the node's own kernel: only for tenants you trust as much as
the node. Without it every instance of the tenant runs in a microVM.
--max-instances bounds the instances it may store, Pending and finished ones
included (default 100).
--ttl is the first token's lifetime (default 8760h, one year; 0: never expires).`,
		Example: `  cube tenant create acme
  cube tenant create acme --weight 2 --quota production=cpu=8,memory=16Gi,instances=20
  cube tenant create ml --allow-priority system --allow-toleration gpu --ttl 720h
  cube tenant create ci --allow-runtime runc
  CUBE_TOKEN=$(cube tenant create acme) cube ps`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			qs, err := parseQuotas(quotas)
			if err != nil {
				return err
			}
			req := v1.TenantRequest{Name: args[0], Weight: weight, Quotas: qs,
				AllowPriorities: prios, AllowTolerations: tols, AllowRuntimes: rts, MaxInstances: maxInstances, TokenTTL: ttl,
				ImageStorage: imageStorage}
			tt, err := c.CreateTenant(cmd.Context(), req)
			if err != nil {
				return err
			}
			if done, err := printData(g.stdout, output, tt, []string{tt.Name}); done {
				return err
			}
			fmt.Fprintln(g.stdout, tt.Token)
			return nil
		},
	}
	cmd.Flags().Float64Var(&weight, "weight", 1, "fair-share weight")
	cmd.Flags().StringArrayVar(&quotas, "quota", nil, "quota of one band: BAND=cpu=C,memory=M,instances=N (repeatable)")
	cmd.Flags().StringArrayVar(&prios, "allow-priority", nil, "grant a priority band above production, i.e. system (repeatable)")
	cmd.Flags().StringArrayVar(&tols, "allow-toleration", nil, "grant tolerating taint KEY, '*' for every key (repeatable)")
	cmd.Flags().StringArrayVar(&rts, "allow-runtime", nil, "grant a runtime beyond microvm, i.e. runc (repeatable)")
	cmd.Flags().IntVar(&maxInstances, "max-instances", 0, "bound on stored instances (0: the server's default, 100)")
	cmd.Flags().StringVar(&imageStorage, "image-storage", "", "image storage quota, blobs and unpacked layers (default 10Gi)")
	cmd.Flags().StringVar(&ttl, "ttl", "", "lifetime of the first token (default 8760h; 0: never expires)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table prints the token only; "+outputHelp)
	return cmd
}

func newTenantUpdateCmd(g *globals) *cobra.Command {
	var weight float64
	var quotas, noQuotas, prios, denyPrios, tols, denyTols, rts, denyRts []string
	var maxInstances int
	var output, imageStorage string
	cmd := &cobra.Command{
		Use:   "update NAME [flags]",
		Short: "Change a tenant's weight, quotas and grants; only the flags given change",
		Long: `Change only what the flags name; everything else (other bands' quotas, other
grants, its tokens) stays as it is.
--allow-priority / --deny-priority grant or withdraw a band above production.
--allow-toleration / --deny-toleration grant or withdraw tolerating a taint key
('*' is every key, which a toleration without a key needs).
--allow-runtime / --deny-runtime grant or withdraw runc (microvm is always
allowed).
Withdrawing a grant refuses new instances; running ones keep running.`,
		Example: `  cube tenant update acme --allow-priority system
  cube tenant update acme --allow-toleration gpu --allow-toleration dedicated
  cube tenant update ci --allow-runtime runc
  cube tenant update acme --quota batch=cpu=4,instances=10 --remove-quota production
  cube tenant update acme --max-instances 500 --weight 3`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			u := v1.TenantUpdate{RemoveQuotas: noQuotas, AllowPriorities: prios, DenyPriorities: denyPrios,
				AllowTolerations: tols, DenyTolerations: denyTols, AllowRuntimes: rts, DenyRuntimes: denyRts}
			if cmd.Flags().Changed("weight") {
				u.Weight = &weight
			}
			if cmd.Flags().Changed("max-instances") {
				u.MaxInstances = &maxInstances
			}
			if cmd.Flags().Changed("image-storage") {
				u.ImageStorage = &imageStorage
			}
			if u.Quotas, err = parseQuotas(quotas); err != nil {
				return err
			}
			t, err := c.UpdateTenant(cmd.Context(), args[0], u)
			if err != nil {
				return err
			}
			return printTenants(g, output, []*v1.Tenant{t}, false)
		},
	}
	cmd.Flags().Float64Var(&weight, "weight", 1, "fair-share weight")
	cmd.Flags().StringArrayVar(&quotas, "quota", nil, "set the quota of one band: BAND=cpu=C,memory=M,instances=N (repeatable)")
	cmd.Flags().StringArrayVar(&noQuotas, "remove-quota", nil, "make BAND unlimited again (repeatable)")
	cmd.Flags().StringArrayVar(&prios, "allow-priority", nil, "grant a priority band above production (repeatable)")
	cmd.Flags().StringArrayVar(&denyPrios, "deny-priority", nil, "withdraw a priority grant (repeatable)")
	cmd.Flags().StringArrayVar(&tols, "allow-toleration", nil, "grant tolerating taint KEY, '*' for every key (repeatable)")
	cmd.Flags().StringArrayVar(&denyTols, "deny-toleration", nil, "withdraw a toleration grant (repeatable)")
	cmd.Flags().StringArrayVar(&rts, "allow-runtime", nil, "grant a runtime beyond microvm, i.e. runc (repeatable)")
	cmd.Flags().StringArrayVar(&denyRts, "deny-runtime", nil, "withdraw a runtime grant (repeatable)")
	cmd.Flags().IntVar(&maxInstances, "max-instances", 0, "bound on stored instances (0: the server's default)")
	cmd.Flags().StringVar(&imageStorage, "image-storage", "", "image storage quota, blobs and unpacked layers, e.g. 20Gi")
	cmd.Flags().StringVarP(&output, "output", "o", "table", outputHelp)
	return cmd
}

func newTenantLsCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "ls [NAME]",
		Aliases: []string{"list"},
		Short:   "List tenants with their grants, quotas and instance counts",
		Long: `List every tenant (admin tokens only). With NAME, show that tenant; a tenant's
own token may show itself, to see its grants and bounds.`,
		Example: `  cube tenant ls
  cube tenant ls acme -o json
  cube tenant ls -o jsonpath='{.items[*].metadata.name}'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if len(args) == 1 {
				t, err := c.GetTenant(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return printTenants(g, output, []*v1.Tenant{t}, false)
			}
			l, err := c.ListTenants(cmd.Context())
			if err != nil {
				return err
			}
			return printTenants(g, output, l.Items, true)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", outputHelp)
	return cmd
}

func printTenants(g *globals, format string, items []*v1.Tenant, list bool) error {
	names := make([]string, len(items))
	for i, t := range items {
		names[i] = t.Metadata.Name
	}
	var data any = items
	if !list && len(items) == 1 {
		data = items[0]
	}
	if done, err := printData(g.stdout, format, data, names); done {
		return err
	}
	tw := newTable(g.stdout)
	now := time.Now()
	fmt.Fprintln(tw, "NAME\tWEIGHT\tINSTANCES\tRUNTIMES\tPRIORITIES\tTOLERATIONS\tQUOTAS\tAGE")
	for _, t := range items {
		w := t.Spec.Weight
		if w == 0 {
			w = 1
		}
		var qs []string
		for band, q := range t.Spec.Quotas {
			var parts []string
			if q.CPU != "" {
				parts = append(parts, "cpu="+q.CPU)
			}
			if q.Memory != "" {
				parts = append(parts, "memory="+q.Memory)
			}
			if q.Instances != 0 {
				parts = append(parts, fmt.Sprintf("instances=%d", q.Instances))
			}
			qs = append(qs, band+"("+strings.Join(parts, ",")+")")
		}
		sort.Strings(qs)
		fmt.Fprintf(tw, "%s\t%g\t%d/%d\t%s\t%s\t%s\t%s\t%s\n", t.Metadata.Name, w, t.Status.Instances, t.Status.MaxInstances,
			orDash(strings.Join(t.Status.Runtimes, ",")), orDash(strings.Join(t.Spec.AllowPriorities, ",")), orDash(strings.Join(t.Spec.AllowTolerations, ",")),
			orDash(strings.Join(qs, " ")), age(t.Metadata.CreationTimestamp, now))
	}
	return tw.Flush()
}

func newTenantRmCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm NAME... [--force]",
		Short: "Remove tenants and revoke their tokens",
		Long: `Remove a tenant: its tokens are revoked at once (the next request with one
gets 401). A tenant that still has instances is refused unless --force, which
deletes them too (running ones are stopped, as with cube rm --force). The
admin tenant cannot be removed.`,
		Example: `  cube tenant rm acme
  cube tenant rm --force acme`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := c.DeleteTenant(cmd.Context(), name, force); err != nil {
					return err
				}
				fmt.Fprintln(g.stdout, name)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "also delete the tenant's instances")
	return cmd
}
