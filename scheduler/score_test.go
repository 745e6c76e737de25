package scheduler_test

import (
	"math"
	"testing"

	"github.com/cube-platform/cube/scheduler"
)

func TestScorers(t *testing.T) {
	n := node("n", 10, 10) // 10 cpus, 10 GiB
	n.Allocated = scheduler.Resources{MilliCPU: 5000, MemoryBytes: 2 * gib}
	n.CachedImages = []string{"sha256:aa", "sha256:bb"}
	r := req("r", "t", scheduler.BandBatch, 1000, 2, 0) // after: cpu 0.6, mem 0.4
	r.Image = "sha256:bb"
	svc := r
	svc.ServiceKey = "web"
	tests := []struct {
		name   string
		scorer scheduler.Scorer
		req    scheduler.Request
		cand   scheduler.Candidate
		want   float64
	}{
		{"most allocated", scheduler.MostAllocated{}, r, scheduler.Candidate{}, 50},
		{"least allocated", scheduler.LeastAllocated{}, r, scheduler.Candidate{}, 50},
		{"balanced", scheduler.BalancedAllocation{}, r, scheduler.Candidate{}, 80},
		{"image cached", scheduler.ImageLocality{}, r, scheduler.Candidate{}, 100},
		{"image not cached", scheduler.ImageLocality{}, func() scheduler.Request { x := r; x.Image = "sha256:cb"; return x }(), scheduler.Candidate{}, 0},
		{"no service", scheduler.ServiceSpread{}, r, scheduler.Candidate{ReplicasOnNode: 3, ReplicasInZone: 3}, 0},
		{"emptiest zone, empty node", scheduler.ServiceSpread{}, svc, scheduler.Candidate{ReplicasInZone: 1, FewestInZone: 1}, 100},
		{"busier zone, one on node", scheduler.ServiceSpread{}, svc, scheduler.Candidate{ReplicasOnNode: 1, ReplicasInZone: 3, FewestInZone: 1}, (50 + 50) / 2},
		{"node without zone", scheduler.ServiceSpread{}, svc, scheduler.Candidate{ReplicasInZone: -1}, (50 + 100) / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cand
			c.Node = &n
			if got := tt.scorer.Score(&tt.req, &c); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Score = %v; want %v", got, tt.want)
			}
		})
	}
}
