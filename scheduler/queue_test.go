package scheduler_test

import (
	"slices"
	"testing"

	"github.com/cube-platform/cube/scheduler"
)

// Decision order is visible as the order of Bindings when everything fits.
func TestQueueOrder(t *testing.T) {
	big := func() *scheduler.Snapshot {
		return &scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 1000, 4000)}}
	}
	tests := []struct {
		name    string
		snap    *scheduler.Snapshot
		tenants []scheduler.Tenant
		queue   []scheduler.Request
		want    []string
	}{
		{
			name: "bands first, highest first",
			snap: big(),
			queue: []scheduler.Request{
				req("be", "a", scheduler.BandBestEffort, 1000, 1, 0),
				req("batch", "a", scheduler.BandBatch, 1000, 1, 1),
				req("prod", "a", scheduler.BandProduction, 1000, 1, 2),
				req("sys", "a", scheduler.BandSystem, 1000, 1, 3),
			},
			want: []string{"sys", "prod", "batch", "be"},
		},
		{
			name: "FIFO within a tenant: created, then ID",
			snap: big(),
			queue: []scheduler.Request{
				req("c", "a", scheduler.BandBatch, 1000, 1, 5),
				req("b", "a", scheduler.BandBatch, 1000, 1, 1),
				req("a", "a", scheduler.BandBatch, 1000, 1, 5),
			},
			want: []string{"b", "a", "c"},
		},
		{
			name:    "DRF with weights: weight 2 gets two for one",
			snap:    big(),
			tenants: []scheduler.Tenant{{Name: "a", Weight: 1}, {Name: "b", Weight: 2}},
			queue: []scheduler.Request{
				req("a1", "a", scheduler.BandBatch, 1000, 1, 1), req("a2", "a", scheduler.BandBatch, 1000, 1, 2),
				req("a3", "a", scheduler.BandBatch, 1000, 1, 3),
				req("b1", "b", scheduler.BandBatch, 1000, 1, 1), req("b2", "b", scheduler.BandBatch, 1000, 1, 2),
				req("b3", "b", scheduler.BandBatch, 1000, 1, 3), req("b4", "b", scheduler.BandBatch, 1000, 1, 4),
				req("b5", "b", scheduler.BandBatch, 1000, 1, 5), req("b6", "b", scheduler.BandBatch, 1000, 1, 6),
			},
			// shares: a k/1, b k/2; ties go to the name that sorts first.
			want: []string{"a1", "b1", "b2", "a2", "b3", "b4", "a3", "b5", "b6"},
		},
		{
			name: "DRF counts running usage and the dominant resource",
			snap: func() *scheduler.Snapshot {
				s := big()
				// a holds 10% of the cpu, b 20% of the memory: b's dominant
				// share is larger, so a goes first until it passes 20%.
				running(s, "ra", "a", scheduler.BandBatch, "n1", 100_000, 1, t0)
				running(s, "rb", "b", scheduler.BandBatch, "n1", 1000, 800, t0)
				return s
			}(),
			queue: []scheduler.Request{
				req("b1", "b", scheduler.BandBatch, 1000, 1, 0),
				req("a1", "a", scheduler.BandBatch, 50_000, 1, 1),
				req("a2", "a", scheduler.BandBatch, 50_000, 1, 2),
				req("a3", "a", scheduler.BandBatch, 50_000, 1, 3),
			},
			// a: 10% -> 15% -> 20% (tie with b at 20%: a sorts first) -> 25%.
			want: []string{"a1", "a2", "a3", "b1"},
		},
		{
			name: "band beats fair share",
			snap: func() *scheduler.Snapshot {
				s := big()
				running(s, "ra", "a", scheduler.BandBatch, "n1", 500_000, 1, t0)
				return s
			}(),
			queue: []scheduler.Request{
				req("b-batch", "b", scheduler.BandBatch, 1000, 1, 0),
				req("a-prod", "a", scheduler.BandProduction, 1000, 1, 1),
			},
			want: []string{"a-prod", "b-batch"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.snap.Tenants = tt.tenants
			p := schedule(t, scheduler.DefaultConfig(), tt.snap, tt.queue)
			if got := boundIDs(p); !slices.Equal(got, tt.want) {
				t.Errorf("Schedule order = %v; want %v (unschedulable %v)", got, tt.want, p.Unschedulable)
			}
		})
	}
}

// Placements made in one call count toward the tenant's share at once.
func TestDRFUpdatesWithinCall(t *testing.T) {
	snap := &scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 8, 8)}}
	var queue []scheduler.Request
	for i, tn := range []string{"a", "a", "a", "a", "a", "a", "a", "a", "b", "b", "b", "b"} {
		queue = append(queue, req(tn+string(rune('0'+i)), tn, scheduler.BandBatch, 1000, 1, i))
	}
	p := schedule(t, scheduler.DefaultConfig(), snap, queue)
	count := map[string]int{}
	for _, id := range boundIDs(p) {
		count[id[:1]]++
	}
	// 8 slots, demand a:8 b:4: max-min fairness gives 4 each.
	if count["a"] != 4 || count["b"] != 4 {
		t.Errorf("placements per tenant = %v; want a:4 b:4", count)
	}
}
