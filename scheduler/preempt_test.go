package scheduler_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cube-platform/cube/scheduler"
)

type run struct {
	id, node   string
	band       scheduler.Band
	milli, mem int64
	age        time.Duration // started at t0 + age: larger is younger
}

func TestPreemption(t *testing.T) {
	const (
		be    = scheduler.BandBestEffort
		batch = scheduler.BandBatch
		prod  = scheduler.BandProduction
		sys   = scheduler.BandSystem
	)
	tests := []struct {
		name        string
		nodes       []scheduler.Node
		running     []run
		request     scheduler.Request
		wantVictims []string // sorted
		wantNode    string   // "" means unschedulable
		wantReason  string   // for unschedulable
	}{
		{
			name:  "fewest victims",
			nodes: []scheduler.Node{node("n1", 4, 8), node("n2", 4, 8)},
			running: []run{
				{"big", "n1", be, 4000, 8, 0},
				{"small-1", "n2", be, 2000, 4, time.Hour}, {"small-2", "n2", be, 2000, 4, time.Hour},
			},
			request:     req("p", "t", prod, 3000, 6, 0),
			wantVictims: []string{"big"}, wantNode: "n1",
		},
		{
			name:        "then lowest band",
			nodes:       []scheduler.Node{node("n1", 4, 8), node("n2", 4, 8)},
			running:     []run{{"batch", "n1", batch, 4000, 8, time.Hour}, {"be", "n2", be, 4000, 8, 0}},
			request:     req("p", "t", prod, 3000, 6, 0),
			wantVictims: []string{"be"}, wantNode: "n2",
		},
		{
			name:        "then youngest",
			nodes:       []scheduler.Node{node("n1", 4, 8), node("n2", 4, 8)},
			running:     []run{{"old", "n1", be, 4000, 8, 0}, {"young", "n2", be, 4000, 8, time.Hour}},
			request:     req("p", "t", prod, 3000, 6, 0),
			wantVictims: []string{"young"}, wantNode: "n2",
		},
		{
			name:  "on one node: lowest band, then youngest",
			nodes: []scheduler.Node{node("n1", 12, 24)},
			running: []run{
				{"batch", "n1", batch, 4000, 8, 2 * time.Minute},
				{"be-old", "n1", be, 4000, 8, 0}, {"be-young", "n1", be, 4000, 8, time.Minute},
			},
			request:     req("p", "t", prod, 4000, 8, 0),
			wantVictims: []string{"be-young"}, wantNode: "n1",
		},
		{
			name:  "several small victims: only as many as needed, the youngest",
			nodes: []scheduler.Node{node("n1", 4, 8)},
			running: []run{
				{"v1", "n1", be, 1000, 2, 0}, {"v2", "n1", be, 1000, 2, time.Minute},
				{"v3", "n1", be, 1000, 2, 2 * time.Minute}, {"v4", "n1", be, 1000, 2, 3 * time.Minute},
			},
			request:     req("p", "t", prod, 2000, 4, 0),
			wantVictims: []string{"v3", "v4"}, wantNode: "n1",
		},
		{
			name:    "production is never preempted by production",
			nodes:   []scheduler.Node{node("n1", 4, 8)},
			running: []run{{"prod", "n1", prod, 4000, 8, time.Hour}},
			request: req("p", "t", prod, 1000, 1, 0),
			wantReason: "0/1 nodes: 1 insufficient memory; " +
				"preemption: evicting lower-band instances frees room on no node",
		},
		{
			name:        "system preempts production",
			nodes:       []scheduler.Node{node("n1", 4, 8)},
			running:     []run{{"prod", "n1", prod, 4000, 8, time.Hour}},
			request:     req("s", "t", sys, 1000, 1, 0),
			wantVictims: []string{"prod"}, wantNode: "n1",
		},
		{
			name:        "production preempts batch, not system",
			nodes:       []scheduler.Node{node("n1", 4, 8)},
			running:     []run{{"sys", "n1", sys, 2000, 4, time.Hour}, {"batch", "n1", batch, 2000, 4, 0}},
			request:     req("p", "t", prod, 2000, 4, 0),
			wantVictims: []string{"batch"}, wantNode: "n1",
		},
		{
			name:       "best-effort preempts nothing",
			nodes:      []scheduler.Node{node("n1", 4, 8)},
			running:    []run{{"be", "n1", be, 4000, 8, time.Hour}},
			request:    req("b", "t", be, 1000, 1, 0),
			wantReason: "0/1 nodes: 1 insufficient memory",
		},
		{
			name: "instance bound is relieved too",
			nodes: func() []scheduler.Node {
				n := node("n1", 64, 256)
				n.MaxInstances = 2
				return []scheduler.Node{n}
			}(),
			running:     []run{{"a", "n1", batch, 1000, 1, 0}, {"b", "n1", be, 1000, 1, 0}},
			request:     req("p", "t", prod, 1000, 1, 0),
			wantVictims: []string{"b"}, wantNode: "n1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, cfg := range []scheduler.Config{scheduler.DefaultConfig(), scheduler.DefaultConfig().Exhaustive()} {
				snap := &scheduler.Snapshot{Nodes: slices.Clone(tt.nodes)}
				for _, r := range tt.running {
					running(snap, r.id, "other", r.band, r.node, r.milli, r.mem, t0.Add(r.age))
				}
				p := schedule(t, cfg, snap, []scheduler.Request{tt.request})
				var victims []string
				for _, pr := range p.Preemptions {
					victims = append(victims, pr.Victim)
					if pr.Node != tt.wantNode || pr.For != tt.request.ID {
						t.Errorf("preemption %+v; want node %s for %s", pr, tt.wantNode, tt.request.ID)
					}
					want := "preempted by a higher-priority instance (band " + tt.request.Band.String() + ")" // victims are tenant other
					if pr.Reason != want {
						t.Errorf("preemption reason = %q; want %q", pr.Reason, want)
					}
				}
				slices.Sort(victims)
				if !slices.Equal(victims, tt.wantVictims) {
					t.Errorf("victims = %v; want %v", victims, tt.wantVictims)
				}
				if got := bindingOf(p, tt.request.ID); got != tt.wantNode {
					t.Errorf("bound to %q; want %q (reason %q)", got, tt.wantNode, reasonOf(p, tt.request.ID))
				}
				if got := reasonOf(p, tt.request.ID); got != tt.wantReason {
					t.Errorf("reason = %q; want %q", got, tt.wantReason)
				}
			}
		})
	}
}

// A shape cached as fitting nowhere must notice the room a preemption left.
func TestPreemptionLeftoverIsUsed(t *testing.T) {
	snap := &scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 4, 8)}}
	running(snap, "be", "other", scheduler.BandBestEffort, "n1", 4000, 8, t0)
	queue := []scheduler.Request{
		req("p1", "t", scheduler.BandProduction, 2000, 4, 0),
		req("p2", "t", scheduler.BandProduction, 2000, 4, 1),
		req("p3", "t", scheduler.BandProduction, 2000, 4, 2),
	}
	p := schedule(t, scheduler.DefaultConfig(), snap, queue)
	if got := boundIDs(p); !slices.Equal(got, []string{"p1", "p2"}) {
		t.Errorf("bound %v; want [p1 p2]", got)
	}
	if len(p.Preemptions) != 1 {
		t.Errorf("preemptions = %+v; want one", p.Preemptions)
	}
	if got := reasonOf(p, "p3"); got == "" {
		t.Errorf("p3 has no reason; want it refused")
	}
}

func TestPreemptionDisabled(t *testing.T) {
	snap := &scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 4, 8)}}
	running(snap, "be", "other", scheduler.BandBestEffort, "n1", 4000, 8, t0)
	cfg := scheduler.DefaultConfig()
	cfg.DisablePreemption = true
	p := schedule(t, cfg, snap, []scheduler.Request{req("p", "t", scheduler.BandSystem, 1000, 1, 0)})
	if len(p.Preemptions) != 0 || reasonOf(p, "p") != "0/1 nodes: 1 insufficient memory" {
		t.Errorf("plan = %+v; want p refused without preemption", p)
	}
}

// TestPreemptReasonNamesNoOtherTenant: the victim's tenant reads the
// reason, so it names the preemptor only within one tenant.
func TestPreemptReasonNamesNoOtherTenant(t *testing.T) {
	for _, tt := range []struct{ victimTenant, want string }{
		{"other", "preempted by a higher-priority instance (band system)"},
		{"acme", "preempted by vip (band system)"},
	} {
		snap := &scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 4, 8)}}
		running(snap, "be", tt.victimTenant, scheduler.BandBestEffort, "n1", 4000, 8, t0)
		p := schedule(t, scheduler.DefaultConfig(), snap, []scheduler.Request{req("acme/vip", "acme", scheduler.BandSystem, 1000, 1, 0)})
		if len(p.Preemptions) != 1 || p.Preemptions[0].Reason != tt.want {
			t.Errorf("victim of tenant %s: preemptions %+v; want one with reason %q", tt.victimTenant, p.Preemptions, tt.want)
		}
	}
}
