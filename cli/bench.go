package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/spf13/cobra"
)

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure Cube (prints a table, then one JSON line)"}
	cmd.AddCommand(newBenchStartCmd(g), newBenchSchedulerCmd(g), newBenchBootCmd(g), newBenchDensityCmd(g))
	return cmd
}

// StartResult is the final JSON line of `cube bench start`.
type StartResult struct {
	Bench   string  `json:"bench"`
	N       int     `json:"n"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MinMs   float64 `json:"min_ms"`
	MaxMs   float64 `json:"max_ms"`
	Backend string  `json:"backend"`
	// PhasesP50Ms splits the start by the status timestamps, median of
	// each: created→scheduled, scheduled→creating (the node picks it up),
	// creating→running (image, network, shim, runc), running→seen by
	// the client.
	PhasesP50Ms map[string]float64 `json:"phases_p50_ms"`
}

// startPhases are the steps of one start, from status timestamps.
var startPhases = []string{"schedule", "dispatch", "create", "report"}

// phaseDurations splits one start; seen is when the client saw Running.
func phaseDurations(in *v1.Instance, seen time.Time) (map[string]time.Duration, bool) {
	st := in.Status
	if st.ScheduledAt == nil || st.CreatingAt == nil || st.RunningAt == nil {
		return nil, false
	}
	return map[string]time.Duration{
		"schedule": st.ScheduledAt.Sub(in.Metadata.CreationTimestamp),
		"dispatch": st.CreatingAt.Sub(*st.ScheduledAt),
		"create":   st.RunningAt.Sub(*st.CreatingAt),
		"report":   seen.Sub(*st.RunningAt),
	}, true
}

// percentile of sorted values (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())/10) / 100 }

func newBenchStartCmd(g *globals) *cobra.Command {
	var n int
	var img, cpu, memory string
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "start --n N --image IMAGE [-- COMMAND...]",
		Short: "Time instance starts, one after another, with a warm image",
		Long: `Create N instances one after another and time each from the create call's
return to the Running status. The image must be imported or pulled already
(warm). The instances are removed at the end. The last line is JSON:
{"bench":"start","n":N,"p50_ms":…,"p99_ms":…,"backend":"runc"}`,
		Example: `  cube bench start --n 50 --image busybox -- sleep 3600`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 1 {
				return errors.New("--n must be at least 1")
			}
			if img == "" {
				return errors.New("--image is required")
			}
			command := args
			if len(command) == 0 {
				command = []string{"sleep", "3600"}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			run := fmt.Sprintf("bench-%d", time.Now().Unix()%100000)
			var names []string
			defer func() {
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				for _, name := range names {
					_ = c.DeleteInstance(cctx, name, true)
				}
				for _, name := range names {
					_, _ = c.WaitInstance(cctx, name, []string{"deleted"}, time.Minute)
				}
			}()
			var lat []time.Duration
			phases := map[string][]time.Duration{}
			backend := "runc"
			for i := 0; i < n; i++ {
				if i > 0 && interval > 0 {
					time.Sleep(interval)
				}
				name := fmt.Sprintf("%s-%d", run, i)
				in := &v1.Instance{Metadata: v1.ObjectMeta{Name: name, Labels: map[string]string{"cube.bench": run}},
					Spec: v1.InstanceSpec{RestartPolicy: v1.RestartNever, Containers: []v1.Container{{
						Image: img, Command: command, Resources: v1.Resources{CPU: cpu, Memory: memory}}}}}
				if _, err := c.CreateInstance(ctx, in); err != nil {
					return fmt.Errorf("instance %d: %w", i, err)
				}
				t0 := time.Now()
				names = append(names, name)
				got, err := waitFor(ctx, c, name, []string{"running"}, 2*time.Minute)
				if err != nil {
					return fmt.Errorf("instance %d: %w", i, err)
				}
				seen := time.Now()
				lat = append(lat, seen.Sub(t0))
				if d, ok := phaseDurations(got, seen); ok {
					for k, v := range d {
						phases[k] = append(phases[k], v)
					}
				}
				fmt.Fprintf(g.stderr, "\r%d/%d started", i+1, n)
			}
			fmt.Fprintln(g.stderr)
			sorted := append([]time.Duration{}, lat...)
			sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
			res := StartResult{Bench: "start", N: n, P50Ms: ms(percentile(sorted, 50)), P99Ms: ms(percentile(sorted, 99)),
				MinMs: ms(sorted[0]), MaxMs: ms(sorted[len(sorted)-1]), Backend: backend}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "N\tMIN\tP50\tP90\tP99\tMAX\tBACKEND")
			fmt.Fprintf(tw, "%d\t%.1fms\t%.1fms\t%.1fms\t%.1fms\t%.1fms\t%s\n", n, res.MinMs, res.P50Ms, ms(percentile(sorted, 90)), res.P99Ms, res.MaxMs, backend)
			fmt.Fprintln(tw, "\nPHASE (P50)\tSCHEDULE\tDISPATCH\tCREATE\tREPORT")
			res.PhasesP50Ms = map[string]float64{}
			row := "start"
			for _, p := range startPhases {
				d := append([]time.Duration{}, phases[p]...)
				sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
				res.PhasesP50Ms[p] = ms(percentile(d, 50))
				row += fmt.Sprintf("\t%.1fms", res.PhasesP50Ms[p])
			}
			fmt.Fprintln(tw, row)
			_ = tw.Flush()
			b, _ := json.Marshal(res)
			fmt.Fprintln(g.stdout, string(b))
			return nil
		},
	}
	cmd.Flags().IntVar(&n, "n", 50, "number of instances")
	cmd.Flags().StringVar(&img, "image", "", "image to run (already imported or pulled)")
	cmd.Flags().StringVar(&cpu, "cpu", "10m", "cpu of each instance (small, so N fit on one node)")
	cmd.Flags().StringVar(&memory, "memory", "16Mi", "memory of each instance")
	cmd.Flags().DurationVar(&interval, "interval", 0, "pause between starts (0: back to back, the worst case; e.g. 500ms: starts on an idle node)")
	return cmd
}
