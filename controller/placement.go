// Package controller holds the control-plane loops that act on the store:
// placement (binding pending instances to nodes). It talks to etcd through
// store and decides through pure functions; it never touches a node.
package controller

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/store"
)

// NodeState is what placement knows of one node.
type NodeState struct {
	Name          string
	Ready         bool
	Unschedulable bool
	// Capacity and allocation in millicores and bytes.
	CapCPU, CapMem     int64
	AllocCPU, AllocMem int64
	// HostPorts in use, as "8080/TCP".
	HostPorts map[string]bool
}

// PlaceFunc picks a node for an instance, or returns "" and a reason.
type PlaceFunc func(nodes []*NodeState, in *v1.Instance) (node string, reason string)

// Placement binds pending instances to nodes.
type Placement struct {
	Store *store.Store
	Log   *slog.Logger
	Now   func() time.Time
	Place PlaceFunc
}

// Run places until ctx ends. It wakes on every instance change and at
// least every second (to notice nodes coming and going).
func (p *Placement) Run(ctx context.Context) error {
	log := p.Log.With("component", "placement")
	insts := p.Store.Instances()
	for ctx.Err() == nil {
		events := insts.Watch(ctx, insts.Prefix(), 0)
		if err := p.pass(ctx); err != nil {
			log.Warn("placement pass failed", "err", err)
		}
		tick := time.NewTicker(time.Second)
	loop:
		for {
			select {
			case <-ctx.Done():
				tick.Stop()
				return nil
			case _, ok := <-events:
				if !ok {
					break loop
				}
				// Drain the burst, then do one pass.
				for drained := false; !drained; {
					select {
					case _, ok := <-events:
						if !ok {
							break loop
						}
					default:
						drained = true
					}
				}
			case <-tick.C:
			}
			if err := p.pass(ctx); err != nil {
				log.Warn("placement pass failed", "err", err)
			}
		}
		tick.Stop()
	}
	return nil
}

// pass reads the whole state once and binds every pending instance it can,
// oldest first.
func (p *Placement) pass(ctx context.Context) error {
	insts := p.Store.Instances()
	all, _, err := insts.List(ctx, insts.Prefix())
	if err != nil {
		return err
	}
	var pending []*v1.Instance
	for _, in := range all {
		if in.Status.Node == "" && in.Status.Phase == v1.PhasePending && in.Metadata.DeletionTimestamp == nil {
			pending = append(pending, in)
		}
	}
	if len(pending) == 0 {
		return nil
	}
	nodes, err := p.nodeStates(ctx, all)
	if err != nil {
		return err
	}
	sort.Slice(pending, func(i, j int) bool {
		return pending[i].Metadata.CreationTimestamp.Before(pending[j].Metadata.CreationTimestamp)
	})
	byName := map[string]*NodeState{}
	for _, n := range nodes {
		byName[n.Name] = n
	}
	for _, in := range pending {
		node, reason := p.Place(nodes, in)
		key := insts.Key(in.Metadata.Tenant, in.Metadata.Name)
		if node == "" {
			if in.Status.Reason != "Unschedulable" || in.Status.Message != reason {
				in.Status.Reason, in.Status.Message = "Unschedulable", reason
				_ = insts.Update(ctx, key, in) // a conflict means news; the next pass sees it
			}
			continue
		}
		now := p.Now().UTC()
		in.Status.Node, in.Status.Phase, in.Status.ScheduledAt = node, v1.PhaseScheduled, &now
		in.Status.Reason, in.Status.Message = "", ""
		if err := insts.Update(ctx, key, in); err != nil {
			continue // changed under us; the next pass retries
		}
		ns := byName[node]
		cpu, mem := in.Requests()
		ns.AllocCPU += cpu
		ns.AllocMem += mem
		for _, port := range hostPorts(in) {
			ns.HostPorts[port] = true
		}
		p.Log.Debug("bound", "tenant", in.Metadata.Tenant, "name", in.Metadata.Name, "node", node)
	}
	return nil
}

func (p *Placement) nodeStates(ctx context.Context, all []*v1.Instance) ([]*NodeState, error) {
	nodes, _, err := p.Store.Nodes().List(ctx, p.Store.Nodes().Prefix())
	if err != nil {
		return nil, err
	}
	alive, err := p.Store.AliveNodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*NodeState, 0, len(nodes))
	byName := map[string]*NodeState{}
	for _, n := range nodes {
		cpu, _ := v1.ParseCPU(n.Status.Capacity.CPU)
		mem, _ := v1.ParseMemory(n.Status.Capacity.Memory)
		_, ready := alive[n.Metadata.Name]
		ns := &NodeState{Name: n.Metadata.Name, Ready: ready, Unschedulable: n.Spec.Unschedulable, CapCPU: cpu, CapMem: mem, HostPorts: map[string]bool{}}
		out = append(out, ns)
		byName[ns.Name] = ns
	}
	for _, in := range all {
		ns := byName[in.Status.Node]
		if ns == nil || in.Status.Phase.Terminal() {
			continue
		}
		cpu, mem := in.Requests()
		ns.AllocCPU += cpu
		ns.AllocMem += mem
		for _, port := range hostPorts(in) {
			ns.HostPorts[port] = true
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func hostPorts(in *v1.Instance) []string {
	var out []string
	for _, c := range in.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				out = append(out, fmt.Sprintf("%d/%s", p.HostPort, p.Protocol))
			}
		}
	}
	return out
}

// FirstFit places on the first ready node with room, and explains a
// failure node by node: "0/3 nodes: 2 insufficient memory, 1 not ready".
func FirstFit(nodes []*NodeState, in *v1.Instance) (string, string) {
	if len(nodes) == 0 {
		return "", "0/0 nodes are registered: start a node agent (cube up)"
	}
	cpu, mem := in.Requests()
	ports := hostPorts(in)
	why := map[string]int{}
	for _, n := range nodes {
		switch {
		case !n.Ready:
			why["not ready"]++
		case n.Unschedulable:
			why["unschedulable"]++
		case n.CapCPU-n.AllocCPU < cpu:
			why["insufficient cpu"]++
		case n.CapMem-n.AllocMem < mem:
			why["insufficient memory"]++
		case anyUsed(n.HostPorts, ports):
			why["host port in use"]++
		default:
			return n.Name, ""
		}
	}
	keys := make([]string, 0, len(why))
	for k := range why {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", why[k], k))
	}
	return "", fmt.Sprintf("0/%d nodes: %s", len(nodes), strings.Join(parts, ", "))
}

func anyUsed(used map[string]bool, ports []string) bool {
	for _, p := range ports {
		if used[p] {
			return true
		}
	}
	return false
}
