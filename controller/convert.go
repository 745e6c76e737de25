package controller

import (
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/scheduler"
	"github.com/cube-platform/cube/store"
)

// instanceID names an instance in scheduler requests and plans.
func instanceID(in *v1.Instance) string { return in.Metadata.Tenant + "/" + in.Metadata.Name }

// Band maps an instance's priority onto a scheduler band (production when
// unset or unknown; validation refuses unknown ones at admission).
func Band(priority string) scheduler.Band {
	b, err := scheduler.ParseBand(priority)
	if err != nil {
		return scheduler.BandProduction
	}
	return b
}

// Resources is what an instance reserves on its node.
func Resources(in *v1.Instance) scheduler.Resources {
	cpu, mem := in.Requests()
	return scheduler.Resources{MilliCPU: cpu, MemoryBytes: mem}
}

// Holds reports whether an instance holds resources on its node: bound,
// not finished, and not being preempted (its room is already given away).
func Holds(in *v1.Instance) bool {
	return in.Status.Node != "" && !in.Status.Phase.Terminal() && in.Status.Preemption == nil
}

// Request turns a pending instance into a scheduler request.
func Request(in *v1.Instance) scheduler.Request {
	r := scheduler.Request{
		ID: instanceID(in), Tenant: in.Metadata.Tenant, Band: Band(in.Spec.Priority),
		Resources: Resources(in), NodeSelector: in.Spec.NodeSelector,
		MaxPerNode: in.Spec.MaxPerNode, Created: in.Metadata.CreationTimestamp,
		Runtime: in.Spec.Runtime,
	}
	if in.Spec.Service != "" {
		r.ServiceKey = in.Metadata.Tenant + "/" + in.Spec.Service
	}
	for _, t := range in.Spec.Tolerations {
		r.Tolerations = append(r.Tolerations, scheduler.Toleration{Key: t.Key, Operator: scheduler.TolerationOperator(t.Operator), Value: t.Value, Effect: scheduler.TaintEffect(t.Effect)})
	}
	if len(in.Spec.Containers) > 0 {
		r.Image = in.Spec.Containers[0].ImageDigest
	}
	return r
}

// Running turns a bound instance into a preemption candidate.
func Running(in *v1.Instance) scheduler.Running {
	r := scheduler.Running{ID: instanceID(in), Tenant: in.Metadata.Tenant, Band: Band(in.Spec.Priority),
		Node: in.Status.Node, Resources: Resources(in)}
	if in.Spec.Service != "" {
		r.ServiceKey = in.Metadata.Tenant + "/" + in.Spec.Service
	}
	r.Started = in.Metadata.CreationTimestamp
	if in.Status.RunningAt != nil {
		r.Started = *in.Status.RunningAt
	}
	return r
}

// State is everything placement decides against, read at one revision.
type State struct {
	Revision  int64
	Nodes     []*v1.Node
	Instances []*v1.Instance
	Tenants   []store.Tenant
	Alive     map[string]time.Time
	// NodeRevisions are the mod revisions of each node's binding key.
	NodeRevisions map[string]int64
}

// Snapshot builds the scheduler's view: node allocation is derived from
// the instances that hold resources there.
func (s *State) Snapshot() *scheduler.Snapshot {
	snap := &scheduler.Snapshot{}
	idx := map[string]int{}
	for _, n := range s.Nodes {
		cpu, _ := v1.ParseCPU(n.Status.Capacity.CPU)
		mem, _ := v1.ParseMemory(n.Status.Capacity.Memory)
		_, ready := s.Alive[n.Metadata.Name]
		sn := scheduler.Node{Name: n.Metadata.Name, Labels: n.Metadata.Labels,
			Capacity: scheduler.Resources{MilliCPU: cpu, MemoryBytes: mem}, MaxInstances: n.Spec.MaxInstances,
			Ready: ready, Unschedulable: n.Spec.Unschedulable, Revision: s.NodeRevisions[n.Metadata.Name],
			CachedImages: n.Status.Images, Runtimes: n.Status.Runtimes}
		if len(sn.Runtimes) == 0 {
			// A node agent older than runtimes ran runc alone.
			sn.Runtimes = []string{v1.RuntimeRunc}
		}
		for _, t := range n.Spec.Taints {
			sn.Taints = append(sn.Taints, scheduler.Taint{Key: t.Key, Value: t.Value, Effect: scheduler.TaintEffect(t.Effect)})
		}
		idx[sn.Name] = len(snap.Nodes)
		snap.Nodes = append(snap.Nodes, sn)
	}
	for _, in := range s.Instances {
		if !Holds(in) {
			continue
		}
		i, ok := idx[in.Status.Node]
		if !ok {
			continue
		}
		r := Running(in)
		snap.Running = append(snap.Running, r)
		n := &snap.Nodes[i]
		n.Allocated = n.Allocated.Add(r.Resources)
		n.Instances++
	}
	for _, t := range s.Tenants {
		snap.Tenants = append(snap.Tenants, scheduler.Tenant{Name: t.Name, Weight: t.Weight})
	}
	return snap
}

// Pending returns the instances waiting for a node, as requests, with the
// instances by request ID.
func (s *State) Pending() ([]scheduler.Request, map[string]*v1.Instance) {
	var q []scheduler.Request
	byID := map[string]*v1.Instance{}
	for _, in := range s.Instances {
		if in.Status.Node == "" && in.Status.Phase == v1.PhasePending && in.Metadata.DeletionTimestamp == nil {
			r := Request(in)
			q = append(q, r)
			byID[r.ID] = in
		}
	}
	return q, byID
}
