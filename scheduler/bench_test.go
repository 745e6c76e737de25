package scheduler_test

import (
	"testing"

	"github.com/cube-platform/cube/scheduler/bench"
)

// BenchmarkSchedule5000Nodes schedules 100,000 instances of 50 tenants onto
// 5,000 nodes in chunks of 5,000 (the bench package's headline workload,
// without its exhaustive baseline). ns/op covers the whole simulation; the
// placements/s metric counts only the time spent inside Schedule.
func BenchmarkSchedule5000Nodes(b *testing.B) {
	cfg := bench.DefaultConfig()
	cfg.SkipExhaustive = true
	for b.Loop() {
		r, err := bench.Run(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.PlacementsPerSec, "placements/s")
		b.ReportMetric(r.P99DecisionUS, "p99-µs")
		b.ReportMetric(r.Utilization, "util")
		b.ReportMetric(r.FairnessJain, "jain")
		b.ReportMetric(float64(r.Preemptions), "preemptions")
	}
}
