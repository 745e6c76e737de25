package scheduler_test

import (
	"fmt"
	"testing"

	"github.com/cube-platform/cube/scheduler"
)

func zoned(name, zone string, cores, mem int64) scheduler.Node {
	n := node(name, cores, mem)
	n.Labels[scheduler.ZoneLabel] = zone
	return n
}

func TestAntiAffinityMaxPerNode(t *testing.T) {
	snap := &scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 16, 64), node("n2", 16, 64), node("n3", 16, 64)}}
	var queue []scheduler.Request
	for i := range 7 {
		r := req(fmt.Sprintf("web-%d", i), "t", scheduler.BandBatch, 1000, 1, i)
		r.ServiceKey, r.MaxPerNode = "t/web", 2
		queue = append(queue, r)
	}
	p := schedule(t, scheduler.DefaultConfig(), snap, queue)
	per := map[string]int{}
	for _, b := range p.Bindings {
		per[b.Node]++
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		if per[n] != 2 {
			t.Errorf("replicas on %s = %d; want 2 (all: %v)", n, per[n], per)
		}
	}
	if got, want := reasonOf(p, "web-6"), "0/3 nodes: 3 service t/web at 2 per node"; got != want {
		t.Errorf("reason for web-6 = %q; want %q", got, want)
	}
}

func TestAntiAffinitySpreadsOverZonesAndNodes(t *testing.T) {
	snap := &scheduler.Snapshot{Nodes: []scheduler.Node{
		zoned("a1", "a", 64, 256), zoned("a2", "a", 64, 256), zoned("a3", "a", 64, 256),
		zoned("b1", "b", 64, 256), zoned("b2", "b", 64, 256), zoned("b3", "b", 64, 256),
	}}
	// One replica already runs in zone a: the next goes to zone b.
	running(snap, "web-old", "t", scheduler.BandBatch, "a1", 1000, 1, t0)
	snap.Running[0].ServiceKey = "t/web"
	var queue []scheduler.Request
	for i := range 5 {
		r := req(fmt.Sprintf("web-%d", i), "t", scheduler.BandBatch, 1000, 1, i)
		r.ServiceKey = "t/web"
		queue = append(queue, r)
	}
	for i := range 3 { // no service: bin-packed together
		queue = append(queue, req(fmt.Sprintf("job-%d", i), "t", scheduler.BandBatch, 1000, 1, 10+i))
	}
	p := schedule(t, scheduler.DefaultConfig(), snap, queue)
	if got := bindingOf(p, "web-0"); got[0] != 'b' {
		t.Errorf("web-0 bound to %s; want zone b (zone a already has a replica)", got)
	}
	zone := map[byte]int{'a': 1}
	nodes := map[string]int{"a1": 1}
	for _, b := range p.Bindings {
		if b.RequestID[:3] == "web" {
			zone[b.Node[0]]++
			nodes[b.Node]++
		}
	}
	if zone['a'] != 3 || zone['b'] != 3 {
		t.Errorf("replicas per zone = a:%d b:%d; want 3 and 3", zone['a'], zone['b'])
	}
	if len(nodes) != 6 {
		t.Errorf("replicas per node = %v; want one on each of 6 nodes", nodes)
	}
	jobs := map[string]bool{}
	for _, b := range p.Bindings {
		if b.RequestID[:3] == "job" {
			jobs[b.Node] = true
		}
	}
	if len(jobs) != 1 {
		t.Errorf("jobs without a service landed on %v; want one node (bin-packing)", jobs)
	}
}

func TestImageLocality(t *testing.T) {
	cached := node("cached", 16, 64)
	cached.CachedImages = []string{"sha256:other", "sha256:app"}
	snap := &scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 16, 64), cached, node("n3", 16, 64)}}
	r := req("r", "t", scheduler.BandBatch, 1000, 1, 0)
	r.Image = "sha256:app"
	p := schedule(t, scheduler.DefaultConfig(), snap, []scheduler.Request{r})
	if got := bindingOf(p, "r"); got != "cached" {
		t.Errorf("r bound to %q; want the node that caches its image", got)
	}
}

func TestSpreadConfig(t *testing.T) {
	snap := &scheduler.Snapshot{Nodes: []scheduler.Node{node("n1", 16, 64), node("n2", 16, 64), node("n3", 16, 64)}}
	var queue []scheduler.Request
	for i := range 3 {
		queue = append(queue, req(fmt.Sprintf("r%d", i), "t", scheduler.BandBatch, 1000, 1, i))
	}
	for _, tt := range []struct {
		name  string
		cfg   scheduler.Config
		nodes int
	}{
		{"bin-packing", scheduler.DefaultConfig(), 1},
		{"spreading", scheduler.DefaultSpreadConfig(), 3},
	} {
		p := schedule(t, tt.cfg, snap, queue)
		used := map[string]bool{}
		for _, b := range p.Bindings {
			used[b.Node] = true
		}
		if len(used) != tt.nodes {
			t.Errorf("%s used nodes %v; want %d", tt.name, used, tt.nodes)
		}
	}
}
