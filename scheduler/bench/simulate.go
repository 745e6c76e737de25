package bench

import (
	"fmt"
	"slices"
	"time"

	"github.com/cube-platform/cube/scheduler"
)

// measured is the outcome of one simulated run.
type measured struct {
	chunks, placed, refused, evicted, running int
	elapsed                                   time.Duration // inside Schedule only
	latencies                                 []time.Duration
	utilization, jain                         float64
}

// simulate feeds w's requests to a Scheduler in chunks, applying each plan
// to the snapshot like the applier would: every binding is re-checked with
// scheduler.Fits against the node as updated so far (after the plan's
// evictions), and a binding that does not fit fails the run. With timed,
// each decision's latency is recorded through the OnDecision hook.
func simulate(w *workload, sc scheduler.Config, chunk int, timed bool) (*measured, error) {
	m := &measured{}
	var last time.Time
	if timed {
		m.latencies = make([]time.Duration, 0, len(w.requests))
		sc.OnDecision = func(string, bool) {
			now := time.Now()
			m.latencies = append(m.latencies, now.Sub(last))
			last = now
		}
	} else {
		sc.OnDecision = nil
	}
	s, err := scheduler.New(sc)
	if err != nil {
		return nil, err
	}
	snap := &scheduler.Snapshot{Nodes: slices.Clone(w.nodes), Tenants: w.tenants}
	a := newApplier(snap)
	for lo := 0; lo < len(w.requests); lo += chunk {
		queue := w.requests[lo:min(lo+chunk, len(w.requests))]
		now := queue[len(queue)-1].Created.Add(time.Millisecond)
		start := time.Now()
		last = start
		plan := s.Schedule(snap, queue, now)
		m.elapsed += time.Since(start)
		m.chunks++
		m.placed += len(plan.Bindings)
		m.refused += len(plan.Unschedulable)
		m.evicted += len(plan.Preemptions)
		if err := a.apply(plan, queue, now); err != nil {
			return nil, fmt.Errorf("chunk %d: %w", m.chunks, err)
		}
	}
	m.running = len(snap.Running)
	m.utilization, m.jain = quality(snap)
	return m, nil
}

// applier keeps the snapshot current between Schedule calls.
type applier struct {
	snap     *scheduler.Snapshot
	nodeIdx  map[string]int
	replicas map[[2]string]int // (service, node) -> running replicas
}

func newApplier(snap *scheduler.Snapshot) *applier {
	a := &applier{snap: snap, nodeIdx: map[string]int{}, replicas: map[[2]string]int{}}
	for i, n := range snap.Nodes {
		a.nodeIdx[n.Name] = i
	}
	return a
}

func (a *applier) apply(plan scheduler.Plan, queue []scheduler.Request, now time.Time) error {
	if len(plan.Preemptions) > 0 {
		gone := make(map[string]bool, len(plan.Preemptions))
		for _, p := range plan.Preemptions {
			gone[p.Victim] = true
		}
		kept := a.snap.Running[:0]
		for _, ru := range a.snap.Running {
			if !gone[ru.ID] {
				kept = append(kept, ru)
				continue
			}
			n := &a.snap.Nodes[a.nodeIdx[ru.Node]]
			n.Allocated = n.Allocated.Sub(ru.Resources)
			n.Instances--
			n.Revision++
			if ru.ServiceKey != "" {
				a.replicas[[2]string{ru.ServiceKey, ru.Node}]--
			}
			delete(gone, ru.ID)
		}
		a.snap.Running = kept
		if len(gone) > 0 {
			return fmt.Errorf("plan evicts %d instances that are not running", len(gone))
		}
	}
	byID := make(map[string]*scheduler.Request, len(queue))
	for i := range queue {
		byID[queue[i].ID] = &queue[i]
	}
	for _, b := range plan.Bindings {
		r := byID[b.RequestID]
		ni, ok := a.nodeIdx[b.Node]
		if r == nil || !ok {
			return fmt.Errorf("binding %s -> %s names an unknown request or node", b.RequestID, b.Node)
		}
		n := &a.snap.Nodes[ni]
		key := [2]string{r.ServiceKey, n.Name}
		if err := scheduler.Fits(n, r, a.replicas[key]); err != nil {
			return fmt.Errorf("binding %s does not fit: %w", r.ID, err)
		}
		n.Allocated = n.Allocated.Add(r.Resources)
		n.Instances++
		n.Revision++
		if r.ServiceKey != "" {
			a.replicas[key]++
		}
		a.snap.Running = append(a.snap.Running, scheduler.Running{
			ID: r.ID, Tenant: r.Tenant, Band: r.Band, Node: n.Name,
			Resources: r.Resources, ServiceKey: r.ServiceKey, Started: now,
		})
	}
	return nil
}

// quality returns the utilization (mean of the cpu and memory fractions
// allocated on schedulable nodes) and Jain's index of the tenants' weighted
// dominant shares.
func quality(snap *scheduler.Snapshot) (util, jain float64) {
	var capCPU, capMem, useCPU, useMem float64
	for _, n := range snap.Nodes {
		if n.Ready && !n.Unschedulable {
			capCPU += float64(n.Capacity.MilliCPU)
			capMem += float64(n.Capacity.MemoryBytes)
			useCPU += float64(n.Allocated.MilliCPU)
			useMem += float64(n.Allocated.MemoryBytes)
		}
	}
	if capCPU == 0 || capMem == 0 {
		return 0, 1 // no schedulable capacity: nothing to share
	}
	util = (useCPU/capCPU + useMem/capMem) / 2
	cpu := map[string]float64{}
	mem := map[string]float64{}
	for _, ru := range snap.Running {
		cpu[ru.Tenant] += float64(ru.Resources.MilliCPU)
		mem[ru.Tenant] += float64(ru.Resources.MemoryBytes)
	}
	var sum, sq float64
	for _, t := range snap.Tenants {
		w := t.Weight
		if w <= 0 {
			w = 1
		}
		x := max(cpu[t.Name]/capCPU, mem[t.Name]/capMem) / w
		sum += x
		sq += x * x
	}
	if sq == 0 {
		return util, 1
	}
	return util, sum * sum / (float64(len(snap.Tenants)) * sq)
}
