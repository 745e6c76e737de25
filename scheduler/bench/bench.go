// Package bench measures the scheduler on a synthetic fleet and workload
// built from a seed: throughput, per-decision latency, packing quality
// against an exhaustive baseline, fairness between tenants and preemptions.
// It plays the leader and the applier around the pure scheduler (feeding
// the queue in chunks and applying each plan to the snapshot), so unlike
// the scheduler it reads the clock. It does no I/O.
package bench

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cube-platform/cube/scheduler"
)

// Config describes one benchmark run.
type Config struct {
	// Nodes is the fleet size.
	Nodes int
	// Instances is how many requests are scheduled in all.
	Instances int
	// Tenants is how many tenants own them (weights 1, 2 or 4).
	Tenants int
	// Seed drives the fleet, the workload and the scheduler.
	Seed int64
	// Chunk is how many requests one Schedule call gets, as a leader that
	// drains its pending queue in batches; the snapshot is updated with the
	// plan between calls.
	Chunk int
	// Oversubscription is total demand over schedulable capacity (cpu and
	// memory alike); above 1 the fleet runs out and fairness is measurable.
	Oversubscription float64
	// Scheduler is the placement configuration measured; its Seed is
	// replaced by Seed. The baseline run uses Scheduler.Exhaustive().
	Scheduler scheduler.Config
	// SkipExhaustive leaves out the (slow) baseline run.
	SkipExhaustive bool
}

// DefaultConfig is the headline run: 5,000 nodes, 100,000 instances, 50 tenants.
func DefaultConfig() Config {
	return Config{
		Nodes: 5000, Instances: 100000, Tenants: 50, Seed: 1,
		Chunk: 5000, Oversubscription: 1.3,
		Scheduler: scheduler.DefaultConfig(),
	}
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	switch {
	case c.Nodes < 1 || c.Instances < 1 || c.Tenants < 1:
		return errors.New("bench: nodes, instances and tenants must be at least 1")
	case c.Chunk < 1:
		return errors.New("bench: chunk must be at least 1")
	case c.Oversubscription <= 0:
		return errors.New("bench: oversubscription must be positive")
	}
	return c.Scheduler.Validate()
}

// Result is what one run measured. The JSON form is the machine-readable
// line of `cube bench scheduler`; the other fields are for the table.
type Result struct {
	Bench     string `json:"bench"`
	Nodes     int    `json:"nodes"`
	Instances int    `json:"instances"`
	// PlacementsPerSec is bindings made / wall time spent inside Schedule
	// (refusals and evictions cost time but are not counted as placements).
	PlacementsPerSec float64 `json:"placements_per_sec"`
	// P99DecisionUS is the 99th percentile of the time between consecutive
	// decisions inside Schedule (read by the bench in the OnDecision hook;
	// the first decision of each call also carries the call's set-up).
	P99DecisionUS float64 `json:"p99_decision_us"`
	// Utilization is the mean of the cpu and memory fractions allocated on
	// the schedulable nodes at the end of the run.
	Utilization float64 `json:"utilization"`
	// ExhaustiveUtilization is the same for the same workload scheduled by
	// scoring every feasible node for every request (the quality baseline).
	ExhaustiveUtilization float64 `json:"exhaustive_utilization"`
	// FairnessJain is Jain's index of the tenants' weighted dominant shares
	// (max(cpu/cpu_total, mem/mem_total)/weight) over the instances running
	// at the end; 1 is perfectly fair.
	FairnessJain float64 `json:"fairness_jain"`
	// Preemptions is how many running instances were evicted.
	Preemptions int `json:"preemptions"`

	Tenants           int     `json:"-"`
	Seed              int64   `json:"-"`
	Chunks            int     `json:"-"`
	Placed            int     `json:"-"` // bindings made (some later evicted)
	Unschedulable     int     `json:"-"` // refusals (a request may be refused once)
	Running           int     `json:"-"` // instances running at the end
	ScheduleSeconds   float64 `json:"-"`
	P50DecisionUS     float64 `json:"-"`
	ExhaustiveSeconds float64 `json:"-"`
	ExhaustiveJain    float64 `json:"-"`
}

// Run builds the fleet and workload of cfg and schedules it twice: once with
// cfg.Scheduler (timed) and once exhaustively (the quality baseline).
func Run(cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	cfg.Scheduler.Seed = cfg.Seed
	w := generate(cfg)
	res := Result{Bench: "scheduler", Nodes: cfg.Nodes, Instances: cfg.Instances,
		Tenants: cfg.Tenants, Seed: cfg.Seed}

	m, err := simulate(w, cfg.Scheduler, cfg.Chunk, true)
	if err != nil {
		return res, err
	}
	res.Chunks = m.chunks
	res.Placed, res.Unschedulable, res.Preemptions, res.Running = m.placed, m.refused, m.evicted, m.running
	res.ScheduleSeconds = m.elapsed.Seconds()
	if m.elapsed > 0 {
		res.PlacementsPerSec = float64(m.placed) / m.elapsed.Seconds()
	}
	res.P50DecisionUS = percentile(m.latencies, 0.50)
	res.P99DecisionUS = percentile(m.latencies, 0.99)
	res.Utilization, res.FairnessJain = m.utilization, m.jain

	if !cfg.SkipExhaustive {
		e, err := simulate(w, cfg.Scheduler.Exhaustive(), cfg.Chunk, false)
		if err != nil {
			return res, fmt.Errorf("exhaustive baseline: %w", err)
		}
		res.ExhaustiveUtilization, res.ExhaustiveJain = e.utilization, e.jain
		res.ExhaustiveSeconds = e.elapsed.Seconds()
	}
	return res, nil
}

func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	k := int(math.Ceil(p*float64(len(s)))) - 1
	return float64(s[max(k, 0)]) / float64(time.Microsecond)
}

// Table renders r for people.
func (r Result) Table() string {
	var b strings.Builder
	row := func(k, v string) { fmt.Fprintf(&b, "%-24s %s\n", k, v) }
	row("bench", r.Bench)
	row("nodes", fmt.Sprint(r.Nodes))
	row("instances", fmt.Sprintf("%d (%d tenants, seed %d, %d Schedule calls)", r.Instances, r.Tenants, r.Seed, r.Chunks))
	row("placed", fmt.Sprintf("%d bindings, %d refused, %d running at end", r.Placed, r.Unschedulable, r.Running))
	row("placements/s", fmt.Sprintf("%.0f (%.2fs inside Schedule)", r.PlacementsPerSec, r.ScheduleSeconds))
	row("decision latency", fmt.Sprintf("p50 %.1fµs, p99 %.1fµs", r.P50DecisionUS, r.P99DecisionUS))
	row("utilization", fmt.Sprintf("%.4f", r.Utilization))
	if r.ExhaustiveSeconds > 0 {
		diff := 0.0
		if r.ExhaustiveUtilization > 0 {
			diff = 100 * (r.Utilization - r.ExhaustiveUtilization) / r.ExhaustiveUtilization
		}
		row("exhaustive utilization", fmt.Sprintf("%.4f (sampled vs exhaustive: %+.2f%%; baseline took %.1fs)",
			r.ExhaustiveUtilization, diff, r.ExhaustiveSeconds))
	}
	row("fairness (Jain)", fmt.Sprintf("%.4f", r.FairnessJain))
	row("preemptions", fmt.Sprint(r.Preemptions))
	return b.String()
}
