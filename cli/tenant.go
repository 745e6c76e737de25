package cli

import (
	"fmt"
	"strconv"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"

	"github.com/spf13/cobra"
)

func newTenantCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tenant", Short: "Manage tenants (admin tenant only)"}
	var weight float64
	var quotas []string
	var imageStorage string
	create := &cobra.Command{
		Use:   "create NAME [--weight W] [--quota BAND=cpu=C,memory=M,instances=N]...",
		Short: "Create (or update) a tenant and print a new API token for it (shown once)",
		Long: `Create a tenant, or update its weight and quotas, and print a new token.
--weight scales the tenant's fair share of a full fleet (default 1).
--quota limits what the tenant may hold at once in one priority band
(system, production, batch, best-effort); an instance over quota is refused
at once with HTTP 429 and never waits in the queue.`,
		Example: `  cube tenant create acme
  cube tenant create acme --weight 2 --quota production=cpu=8,memory=16Gi,instances=20
  CUBE_TOKEN=$(cube tenant create acme) cube ps`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			req := v1.TenantRequest{Name: args[0], Weight: weight, Quotas: map[string]v1.Quota{}, ImageStorage: imageStorage}
			for _, q := range quotas {
				band, spec, ok := strings.Cut(q, "=")
				if !ok {
					return fmt.Errorf("--quota %q: want BAND=cpu=C,memory=M,instances=N", q)
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
							return fmt.Errorf("--quota %q: instances must be a number", q)
						}
						quota.Instances = n
					default:
						return fmt.Errorf("--quota %q: unknown limit %q (use cpu, memory, instances)", q, k)
					}
				}
				req.Quotas[band] = quota
			}
			tt, err := c.CreateTenant(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, tt.Token)
			return nil
		},
	}
	create.Flags().Float64Var(&weight, "weight", 1, "fair-share weight")
	create.Flags().StringArrayVar(&quotas, "quota", nil, "quota of one band: BAND=cpu=C,memory=M,instances=N (repeatable)")
	create.Flags().StringVar(&imageStorage, "image-storage", "", "image storage quota, blobs and unpacked layers (default 10Gi)")
	cmd.AddCommand(create)
	return cmd
}
