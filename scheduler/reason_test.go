package scheduler_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/cube-platform/cube/scheduler"
)

// TestRuntimeClasses: requests of different runtimes are different
// classes, each placed only on nodes that offer its runtime.
func TestRuntimeClasses(t *testing.T) {
	vm, plain := node("vm", 8, 16), node("plain", 8, 16)
	vm.Runtimes, plain.Runtimes = []string{"microvm", "runc"}, []string{"runc"}
	withRuntime := func(id, rt string) scheduler.Request {
		r := req(id, "t", scheduler.BandProduction, 1000, 1, 0)
		r.Runtime = rt
		return r
	}
	reqs := []scheduler.Request{withRuntime("m1", "microvm"), withRuntime("r1", "runc"), withRuntime("m2", "microvm"), withRuntime("r2", "runc")}
	p := schedule(t, scheduler.DefaultConfig(), &scheduler.Snapshot{Nodes: []scheduler.Node{plain, vm}}, reqs)
	placed := map[string]string{}
	for _, b := range p.Bindings {
		placed[b.RequestID] = b.Node
	}
	if placed["m1"] != "vm" || placed["m2"] != "vm" || placed["r1"] == "" || placed["r2"] == "" {
		t.Errorf("placements %v; want the microvm requests on vm and the runc ones anywhere", placed)
	}
	p = schedule(t, scheduler.DefaultConfig(), &scheduler.Snapshot{Nodes: []scheduler.Node{plain}}, []scheduler.Request{withRuntime("m", "microvm")})
	if got, want := reasonOf(p, "m"), "0/1 nodes: 1 runtime microvm not offered"; got != want {
		t.Errorf("reason = %q; want %q", got, want)
	}
}

func TestUnschedulableReason(t *testing.T) {
	gpuNode := func(name string) scheduler.Node {
		n := node(name, 64, 512)
		n.Taints = []scheduler.Taint{{Key: "gpu", Value: "true", Effect: scheduler.NoSchedule}}
		return n
	}
	fleet := func(small, gpus int) []scheduler.Node {
		var ns []scheduler.Node
		for i := range small {
			ns = append(ns, node(fmt.Sprintf("n%04d", i), 4, 8))
		}
		for i := range gpus {
			ns = append(ns, gpuNode(fmt.Sprintf("g%02d", i)))
		}
		return ns
	}
	notReady := node("down", 64, 512)
	notReady.Ready = false
	cordoned := node("cordoned", 64, 512)
	cordoned.Unschedulable = true
	busy := node("busy", 1, 512)
	full := node("full", 64, 512)
	full.MaxInstances = 0
	full.MaxInstances, full.Instances = 3, 3

	tests := []struct {
		name  string
		nodes []scheduler.Node
		req   scheduler.Request
		want  string
	}{
		{"the example", fleet(4990, 10), req("r", "t", scheduler.BandBestEffort, 1000, 16, 0),
			"0/5000 nodes: 4990 insufficient memory, 10 taint gpu"},
		{"every kind", []scheduler.Node{node("small", 4, 8), notReady, cordoned, busy, full, gpuNode("g")},
			req("r", "t", scheduler.BandBestEffort, 2000, 16, 0),
			"0/6 nodes: 1 insufficient cpu, 1 insufficient memory, 1 node not ready, 1 node unschedulable, 1 taint gpu, 1 too many instances"},
		{"no nodes", nil, req("r", "t", scheduler.BandBestEffort, 1000, 1, 0), "0/0 nodes: no nodes"},
		{"invalid", []scheduler.Node{node("n", 4, 8)}, req("r", "t", scheduler.Band(9), 1000, 1, 0),
			"invalid request: unknown priority band band(9)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := schedule(t, scheduler.DefaultConfig(), &scheduler.Snapshot{Nodes: tt.nodes}, []scheduler.Request{tt.req})
			if got := reasonOf(p, "r"); got != tt.want {
				t.Errorf("reason = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	for seed := int64(1); seed <= 5; seed++ {
		snap, queue := randomCase(seed)
		cfg := scheduler.DefaultConfig()
		cfg.Seed = seed
		cfg.FeasibleSample, cfg.SmallClass = 3, 0 // take the sampled path
		a := schedule(t, cfg, snap, queue)
		b := schedule(t, cfg, snap, queue)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("seed %d: two Schedule calls on the same input differ:\n%+v\n%+v", seed, a, b)
		}
	}
}
