package controller

import (
	"testing"

	v1 "github.com/cube-platform/cube/api/v1"
)

func inst(cpu, mem string, hostPort int) *v1.Instance {
	in := &v1.Instance{Spec: v1.InstanceSpec{Containers: []v1.Container{{Image: "x", Resources: v1.Resources{CPU: cpu, Memory: mem}}}}}
	if hostPort != 0 {
		in.Spec.Containers[0].Ports = []v1.ContainerPort{{ContainerPort: 80, HostPort: hostPort, Protocol: "TCP"}}
	}
	return in
}

func TestFirstFit(t *testing.T) {
	full := &NodeState{Name: "full", Ready: true, CapCPU: 1000, CapMem: 1 << 30, AllocCPU: 1000, HostPorts: map[string]bool{}}
	down := &NodeState{Name: "down", Ready: false, CapCPU: 4000, CapMem: 8 << 30, HostPorts: map[string]bool{}}
	port := &NodeState{Name: "port", Ready: true, CapCPU: 4000, CapMem: 8 << 30, HostPorts: map[string]bool{"8080/TCP": true}}
	free := &NodeState{Name: "free", Ready: true, CapCPU: 4000, CapMem: 8 << 30, HostPorts: map[string]bool{}}
	tests := []struct {
		name   string
		nodes  []*NodeState
		in     *v1.Instance
		want   string
		reason string
	}{
		{"first with room", []*NodeState{full, down, free}, inst("500m", "256Mi", 0), "free", ""},
		{"host port taken", []*NodeState{port}, inst("500m", "256Mi", 8080), "", "0/1 nodes: 1 host port in use"},
		{"nothing fits", []*NodeState{full, down, port}, inst("8", "256Mi", 0), "", "0/3 nodes: 2 insufficient cpu, 1 not ready"},
		{"no nodes", nil, inst("1", "1Gi", 0), "", "0/0 nodes are registered: start a node agent (cube up)"},
	}
	for _, tt := range tests {
		got, reason := FirstFit(tt.nodes, tt.in)
		if got != tt.want || reason != tt.reason {
			t.Errorf("%s: FirstFit = %q, %q; want %q, %q", tt.name, got, reason, tt.want, tt.reason)
		}
	}
}
