package controller

import (
	"fmt"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/scheduler"
)

// hostPorts lists the "PORT/PROTO" an instance publishes on its node.
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

// dropPortConflicts removes bindings that would publish a host port already
// published on their node (by a running instance or an earlier binding of
// the plan); the pure scheduler does not model ports. Such instances stay
// Pending with a reason and are tried again on the next pass.
func dropPortConflicts(st *State, plan *scheduler.Plan, byID map[string]*v1.Instance) {
	used := map[string]map[string]string{} // node → port → holder
	claim := func(node, port, holder string) (string, bool) {
		if used[node] == nil {
			used[node] = map[string]string{}
		}
		if h, ok := used[node][port]; ok {
			return h, false
		}
		used[node][port] = holder
		return "", true
	}
	for _, in := range st.Instances {
		if Holds(in) {
			for _, p := range hostPorts(in) {
				claim(in.Status.Node, p, instanceID(in))
			}
		}
	}
	kept := plan.Bindings[:0]
	for _, b := range plan.Bindings {
		in := byID[b.RequestID]
		conflict := ""
		if in != nil {
			for _, p := range hostPorts(in) {
				if h, ok := claim(b.Node, p, b.RequestID); !ok && h != b.RequestID {
					conflict = fmt.Sprintf("host port %s is already published on node %s by %s", p, b.Node, holderFor(h, b.RequestID))
					break
				}
			}
		}
		if conflict != "" {
			plan.Unschedulable = append(plan.Unschedulable, scheduler.Unplaced{RequestID: b.RequestID, Reason: conflict})
			continue
		}
		kept = append(kept, b)
	}
	plan.Bindings = kept
}

// holderFor names the holder of a host port as the requester may see it:
// by name when both belong to one tenant, and anonymously otherwise, so
// that no tenant learns another tenant's instance names.
func holderFor(holder, requester string) string {
	ht, hn, _ := strings.Cut(holder, "/")
	rt, _, _ := strings.Cut(requester, "/")
	if ht == rt {
		return "instance " + hn
	}
	return "another instance"
}

// preemptorFor is Preemption.By as the victim's tenant may see it: the
// preemptor's name when it is the same tenant's, empty otherwise.
func preemptorFor(preemptor, victimTenant string) string {
	t, name, _ := strings.Cut(preemptor, "/")
	if t != victimTenant {
		return ""
	}
	return name
}
