package bench

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestRunSmall(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Nodes, cfg.Instances, cfg.Tenants, cfg.Chunk = 200, 4000, 10, 500
	r, err := Run(cfg)
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	t.Logf("\n%s", r.Table())
	if r.Placed == 0 || r.Utilization <= 0 || r.ExhaustiveUtilization <= 0 {
		t.Errorf("Run(small) = %+v; want placements and utilization", r)
	}
	if r.FairnessJain < 0.9 {
		t.Errorf("FairnessJain = %v; want >= 0.9", r.FairnessJain)
	}
	b, _ := json.Marshal(r)
	for _, k := range []string{`"bench":"scheduler"`, `"nodes":`, `"instances":`, `"placements_per_sec":`,
		`"p99_decision_us":`, `"utilization":`, `"exhaustive_utilization":`, `"fairness_jain":`, `"preemptions":`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON %s lacks %s", b, k)
		}
	}
	r2, err := Run(cfg)
	if err != nil || r2.Placed != r.Placed || r2.Utilization != r.Utilization || r2.Preemptions != r.Preemptions {
		t.Errorf("second Run with the same seed = %+v, %v; want the same placements as %+v", r2, err, r)
	}
}

func TestRunEdges(t *testing.T) {
	for _, c := range []struct{ nodes, instances, tenants, chunk int }{
		{1, 1, 1, 1}, {3, 50, 7, 4}, {10, 5, 2, 100},
	} {
		cfg := DefaultConfig()
		cfg.Nodes, cfg.Instances, cfg.Tenants, cfg.Chunk = c.nodes, c.instances, c.tenants, c.chunk
		r, err := Run(cfg)
		if err != nil {
			t.Errorf("Run(%+v) = %v", c, err)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Errorf("json.Marshal(Run(%+v)) = %v", c, err)
		}
	}
	bad := DefaultConfig()
	bad.Chunk = 0
	if _, err := Run(bad); err == nil {
		t.Errorf("Run with chunk 0 = nil error; want one")
	}
}

// BenchmarkRun is the headline run (`-benchtime=1x`): 5,000 nodes,
// 100,000 instances, 50 tenants, seed 1.
func BenchmarkRun(b *testing.B) {
	cfg := DefaultConfig()
	for b.Loop() {
		r, err := Run(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("\n%s", r.Table())
		b.ReportMetric(r.PlacementsPerSec, "placements/s")
		b.ReportMetric(r.P99DecisionUS, "p99-µs")
		b.ReportMetric(r.Utilization, "util")
		b.ReportMetric(r.ExhaustiveUtilization, "exh-util")
		b.ReportMetric(r.FairnessJain, "jain")
	}
}
