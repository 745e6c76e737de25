package scheduler_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cube-platform/cube/scheduler"
)

// randomCase builds a small random fleet (labels, taints, zones, bounds,
// cordoned and down nodes), instances already running on it and a queue.
func randomCase(seed int64) (*scheduler.Snapshot, []scheduler.Request) {
	rng := rand.New(rand.NewPCG(uint64(seed), 42))
	snap := &scheduler.Snapshot{}
	for i := range 1 + rng.IntN(40) {
		n := node(fmt.Sprintf("n%02d", i), int64(1+rng.IntN(16)), int64(1+rng.IntN(64)))
		n.Labels["zone"] = []string{"a", "b", "c"}[rng.IntN(3)]
		if rng.IntN(4) == 0 {
			n.Labels["arch"] = "arm64"
		}
		if rng.IntN(6) == 0 {
			n.Taints = []scheduler.Taint{{Key: "gpu", Value: "true", Effect: scheduler.NoSchedule}}
		}
		if rng.IntN(3) == 0 {
			n.MaxInstances = 1 + rng.IntN(8)
		}
		n.Ready = rng.IntN(15) != 0
		n.Unschedulable = rng.IntN(15) == 0
		snap.Nodes = append(snap.Nodes, n)
	}
	for i := range rng.IntN(60) {
		k := rng.IntN(len(snap.Nodes))
		n := &snap.Nodes[k]
		milli, mem := int64(100*(1+rng.IntN(30))), int64(1+rng.IntN(8))
		if n.Allocated.MilliCPU+milli > n.Capacity.MilliCPU || n.Allocated.MemoryBytes+mem*gib > n.Capacity.MemoryBytes ||
			(n.MaxInstances > 0 && n.Instances >= n.MaxInstances) {
			continue
		}
		running(snap, fmt.Sprintf("run-%d", i), fmt.Sprintf("t%d", rng.IntN(4)), scheduler.Band(rng.IntN(4)), n.Name,
			milli, mem, t0.Add(time.Duration(rng.IntN(100))*time.Minute))
		if rng.IntN(2) == 0 {
			snap.Running[len(snap.Running)-1].ServiceKey = fmt.Sprintf("svc%d", rng.IntN(3))
		}
	}
	for i := range 4 {
		snap.Tenants = append(snap.Tenants, scheduler.Tenant{Name: fmt.Sprintf("t%d", i), Weight: float64(1 + rng.IntN(3))})
	}
	var queue []scheduler.Request
	for i := range rng.IntN(150) {
		r := req(fmt.Sprintf("q-%03d", i), fmt.Sprintf("t%d", rng.IntN(5)), scheduler.Band(rng.IntN(4)),
			int64(100*rng.IntN(40)), int64(rng.IntN(10)), rng.IntN(50))
		switch rng.IntN(8) {
		case 0:
			r.NodeSelector = map[string]string{"arch": "arm64"}
		case 1:
			r.NodeSelector = map[string]string{"zone": "b"}
		case 2:
			r.Tolerations = []scheduler.Toleration{{Key: "gpu", Operator: scheduler.OpExists}}
		}
		if rng.IntN(2) == 0 {
			r.ServiceKey = fmt.Sprintf("svc%d", rng.IntN(3))
			r.MaxPerNode = rng.IntN(3)
		}
		queue = append(queue, r)
	}
	return snap, queue
}

// Over random fleets and workloads, under every configuration: each request
// is decided once; victims are strictly lower-band instances on the node of
// the request they make room for; applying the preemptions and then the
// bindings in order never meets a binding that Fits refuses, so no node is
// ever overcommitted.
func TestPropertyPlansAreFeasible(t *testing.T) {
	sampled := scheduler.DefaultConfig()
	sampled.FeasibleSample, sampled.SmallClass, sampled.PreemptionSample = 2, 0, 1
	configs := map[string]scheduler.Config{
		"default":    scheduler.DefaultConfig(),
		"exhaustive": scheduler.DefaultConfig().Exhaustive(),
		"spread":     scheduler.DefaultSpreadConfig(),
		"sampled":    sampled,
	}
	noPreempt := sampled
	noPreempt.DisablePreemption = true
	configs["sampled, no preemption"] = noPreempt
	var bound, evicted, refused int
	for seed := int64(0); seed < 300; seed++ {
		snap, queue := randomCase(seed)
		for name, cfg := range configs {
			cfg.Seed = seed
			p := schedule(t, cfg, snap, queue)
			if err := check(snap, queue, p, cfg.DisablePreemption); err != nil {
				t.Fatalf("seed %d, config %s: %v", seed, name, err)
			}
			bound, evicted, refused = bound+len(p.Bindings), evicted+len(p.Preemptions), refused+len(p.Unschedulable)
		}
	}
	if bound == 0 || evicted == 0 || refused == 0 {
		t.Errorf("random cases made %d bindings, %d preemptions, %d refusals; want some of each", bound, evicted, refused)
	}
}

// check verifies p. Without preemption nodes only fill up during a call, so
// a request refused then fits no node at the end either: the sampled scan
// never refuses a request some node could take.
func check(snap *scheduler.Snapshot, queue []scheduler.Request, p scheduler.Plan, noPreemption bool) error {
	nodes := slices.Clone(snap.Nodes)
	nodeIdx := map[string]int{}
	for i, n := range nodes {
		nodeIdx[n.Name] = i
	}
	reqs := map[string]*scheduler.Request{}
	for i := range queue {
		reqs[queue[i].ID] = &queue[i]
	}
	decided := map[string]int{}
	boundTo := map[string]string{}
	for _, b := range p.Bindings {
		decided[b.RequestID]++
		boundTo[b.RequestID] = b.Node
		if b.NodeRevision != nodes[nodeIdx[b.Node]].Revision {
			return fmt.Errorf("binding %+v: revision %d; want the snapshot's", b, b.NodeRevision)
		}
	}
	for _, u := range p.Unschedulable {
		decided[u.RequestID]++
		if !strings.HasPrefix(u.Reason, fmt.Sprintf("0/%d nodes: ", len(nodes))) && !strings.HasPrefix(u.Reason, "invalid request") {
			return fmt.Errorf("unplaced %+v: reason does not count nodes", u)
		}
	}
	for _, r := range queue {
		if decided[r.ID] != 1 {
			return fmt.Errorf("request %s decided %d times", r.ID, decided[r.ID])
		}
	}
	replicas := map[[2]string]int{}
	runIdx := map[string]scheduler.Running{}
	for _, ru := range snap.Running {
		runIdx[ru.ID] = ru
		replicas[[2]string{ru.ServiceKey, ru.Node}]++
	}
	for _, pr := range p.Preemptions {
		v, ok := runIdx[pr.Victim]
		if !ok {
			return fmt.Errorf("preemption %+v: victim not running (or evicted twice)", pr)
		}
		delete(runIdx, pr.Victim)
		r := reqs[pr.For]
		if r == nil || boundTo[r.ID] != pr.Node || v.Node != pr.Node || v.Band >= r.Band {
			return fmt.Errorf("preemption %+v of %+v: want a strictly lower band on the node %s was bound to", pr, v, pr.For)
		}
		n := &nodes[nodeIdx[v.Node]]
		n.Allocated = n.Allocated.Sub(v.Resources)
		n.Instances--
		replicas[[2]string{v.ServiceKey, v.Node}]--
	}
	for _, b := range p.Bindings {
		r := reqs[b.RequestID]
		n := &nodes[nodeIdx[b.Node]]
		key := [2]string{r.ServiceKey, n.Name}
		if err := scheduler.Fits(n, r, replicas[key]); err != nil {
			return fmt.Errorf("binding %+v does not fit: %v", b, err)
		}
		n.Allocated = n.Allocated.Add(r.Resources)
		n.Instances++
		replicas[key]++
	}
	for _, u := range p.Unschedulable {
		r := reqs[u.RequestID]
		if !noPreemption || strings.HasPrefix(u.Reason, "invalid") {
			continue
		}
		for i := range nodes {
			if scheduler.Fits(&nodes[i], r, replicas[[2]string{r.ServiceKey, nodes[i].Name}]) == nil {
				return fmt.Errorf("request %s refused (%s) but fits node %s", r.ID, u.Reason, nodes[i].Name)
			}
		}
	}
	for _, n := range nodes {
		if !n.Allocated.LessEq(n.Capacity) {
			return fmt.Errorf("node %s overcommitted: %+v of %+v", n.Name, n.Allocated, n.Capacity)
		}
	}
	return nil
}
