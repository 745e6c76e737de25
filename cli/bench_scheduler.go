package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"

	"github.com/cube-platform/cube/controller"
	"github.com/cube-platform/cube/scheduler/bench"
	"github.com/cube-platform/cube/store"
	"github.com/spf13/cobra"
)

// schedulerBenchJSON is bench.Result plus the through-store figure.
type schedulerBenchJSON struct {
	bench.Result
	ThroughStorePerSec *float64 `json:"through_store_placements_per_sec,omitempty"`
}

func newBenchSchedulerCmd(g *globals) *cobra.Command {
	cfg := bench.DefaultConfig()
	var throughStore bool
	cmd := &cobra.Command{
		Use:   "scheduler [--nodes N] [--instances N] [--tenants N] [--seed S] [--through-store]",
		Short: "Benchmark the pure scheduler on a synthetic fleet",
		Long: `Run the scheduler on a synthetic fleet and workload (mixed sizes, bands and
tenant weights; demand exceeds capacity) and report placements/s, the p99
decision time, utilization against scoring every node (exhaustive), Jain's
fairness index over weighted dominant shares, and preemptions.
--through-store also loads the same fleet into an embedded etcd and times one
leader pass that commits every binding through the applier's transactions.
The last line is JSON.`,
		Example: `  cube bench scheduler --nodes 5000 --instances 100000 --tenants 50 --seed 1
  cube bench scheduler --nodes 1000 --instances 20000 --through-store`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(g.stderr, "scheduling %d instances of %d tenants on %d nodes (seed %d)...\n", cfg.Instances, cfg.Tenants, cfg.Nodes, cfg.Seed)
			res, err := bench.Run(cfg)
			if err != nil {
				return err
			}
			fmt.Fprint(g.stdout, res.Table())
			out := schedulerBenchJSON{Result: res}
			if throughStore {
				sr, err := runThroughStore(cmd.Context(), g, cfg)
				if err != nil {
					return err
				}
				v := math.Round(sr.PlacementsPerSec)
				out.ThroughStorePerSec = &v
				fmt.Fprintf(g.stdout, "through store: %d bound (%d re-checked) in schedule %s + apply %s = %.0f placements/s (load %s, read %s)\n",
					sr.Bound, sr.Rechecked, sr.Schedule.Round(1e6), sr.Apply.Round(1e6), sr.PlacementsPerSec, sr.Load.Round(1e6), sr.Read.Round(1e6))
			}
			b, _ := json.Marshal(out)
			fmt.Fprintln(g.stdout, string(b))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "nodes in the synthetic fleet")
	fl.IntVar(&cfg.Instances, "instances", cfg.Instances, "instances to place")
	fl.IntVar(&cfg.Tenants, "tenants", cfg.Tenants, "tenants (with mixed weights)")
	fl.Int64Var(&cfg.Seed, "seed", cfg.Seed, "random seed: the same seed gives the same fleet, workload and plan")
	fl.BoolVar(&cfg.SkipExhaustive, "skip-exhaustive", false, "skip the exhaustive baseline run (faster; exhaustive_utilization is then 0)")
	fl.BoolVar(&throughStore, "through-store", false, "also commit one leader pass through embedded etcd and report its placements/s")
	return cmd
}

func runThroughStore(ctx context.Context, g *globals, cfg bench.Config) (controller.StoreBenchResult, error) {
	dir, err := os.MkdirTemp("", "cube-bench-etcd")
	if err != nil {
		return controller.StoreBenchResult{}, err
	}
	defer os.RemoveAll(dir)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := store.StartEmbedded(ctx, dir, log)
	if err != nil {
		return controller.StoreBenchResult{}, err
	}
	defer e.Close()
	fmt.Fprintln(g.stderr, "loading the fleet into embedded etcd...")
	return controller.BenchThroughStore(ctx, store.New(e.Client), cfg, log)
}
