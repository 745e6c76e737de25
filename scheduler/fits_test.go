package scheduler_test

import (
	"testing"

	"github.com/cube-platform/cube/scheduler"
)

func TestFits(t *testing.T) {
	gpuTaint := scheduler.Taint{Key: "gpu", Value: "true", Effect: scheduler.NoSchedule}
	withNode := func(f func(*scheduler.Node)) scheduler.Node {
		n := node("n1", 4, 8)
		n.Labels["zone"] = "a"
		n.Labels["arch"] = "arm64"
		f(&n)
		return n
	}
	withReq := func(f func(*scheduler.Request)) scheduler.Request {
		r := req("r", "t", scheduler.BandBatch, 1000, 1, 0)
		f(&r)
		return r
	}
	plain := func(*scheduler.Node) {}
	none := func(*scheduler.Request) {}
	tests := []struct {
		name     string
		node     scheduler.Node
		req      scheduler.Request
		replicas int
		want     string // "" means fits
	}{
		{"fits", withNode(plain), withReq(none), 0, ""},
		{"not ready", withNode(func(n *scheduler.Node) { n.Ready = false }), withReq(none), 0, "node n1: node not ready"},
		{"cordoned", withNode(func(n *scheduler.Node) { n.Unschedulable = true }), withReq(none), 0, "node n1: node unschedulable"},
		{"runtime offered", withNode(func(n *scheduler.Node) { n.Runtimes = []string{"runc", "microvm"} }), withReq(func(r *scheduler.Request) { r.Runtime = "microvm" }), 0, ""},
		{"runtime not offered", withNode(func(n *scheduler.Node) { n.Runtimes = []string{"runc"} }), withReq(func(r *scheduler.Request) { r.Runtime = "microvm" }), 0, "node n1: runtime microvm not offered"},
		{"no runtime asked", withNode(func(n *scheduler.Node) { n.Runtimes = nil }), withReq(none), 0, ""},
		{"selector matches", withNode(plain), withReq(func(r *scheduler.Request) { r.NodeSelector = map[string]string{"arch": "arm64", "zone": "a"} }), 0, ""},
		{"selector value differs", withNode(plain), withReq(func(r *scheduler.Request) { r.NodeSelector = map[string]string{"arch": "amd64"} }), 0, "node n1: node selector mismatch"},
		{"selector label missing", withNode(plain), withReq(func(r *scheduler.Request) { r.NodeSelector = map[string]string{"gpu": "true"} }), 0, "node n1: node selector mismatch"},
		{"taint not tolerated", withNode(func(n *scheduler.Node) { n.Taints = []scheduler.Taint{gpuTaint} }), withReq(none), 0, "node n1: taint gpu"},
		{"taint tolerated (Equal)", withNode(func(n *scheduler.Node) { n.Taints = []scheduler.Taint{gpuTaint} }),
			withReq(func(r *scheduler.Request) {
				r.Tolerations = []scheduler.Toleration{{Key: "gpu", Value: "true", Effect: scheduler.NoSchedule}}
			}), 0, ""},
		{"taint tolerated (Exists, any effect)", withNode(func(n *scheduler.Node) { n.Taints = []scheduler.Taint{gpuTaint} }),
			withReq(func(r *scheduler.Request) {
				r.Tolerations = []scheduler.Toleration{{Key: "gpu", Operator: scheduler.OpExists}}
			}), 0, ""},
		{"toleration value differs", withNode(func(n *scheduler.Node) { n.Taints = []scheduler.Taint{gpuTaint} }),
			withReq(func(r *scheduler.Request) { r.Tolerations = []scheduler.Toleration{{Key: "gpu", Value: "false"}} }), 0, "node n1: taint gpu"},
		{"toleration effect differs", withNode(func(n *scheduler.Node) { n.Taints = []scheduler.Taint{gpuTaint} }),
			withReq(func(r *scheduler.Request) {
				r.Tolerations = []scheduler.Toleration{{Key: "gpu", Operator: scheduler.OpExists, Effect: "NoExecute"}}
			}), 0, "node n1: taint gpu"},
		{"empty key Exists tolerates all", withNode(func(n *scheduler.Node) {
			n.Taints = []scheduler.Taint{gpuTaint, {Key: "dedicated", Value: "x", Effect: scheduler.NoSchedule}}
		}), withReq(func(r *scheduler.Request) { r.Tolerations = []scheduler.Toleration{{Operator: scheduler.OpExists}} }), 0, ""},
		{"second taint not tolerated", withNode(func(n *scheduler.Node) {
			n.Taints = []scheduler.Taint{gpuTaint, {Key: "dedicated", Value: "x", Effect: scheduler.NoSchedule}}
		}), withReq(func(r *scheduler.Request) {
			r.Tolerations = []scheduler.Toleration{{Key: "gpu", Operator: scheduler.OpExists}}
		}), 0, "node n1: taint dedicated"},
		{"PreferNoSchedule ignored", withNode(func(n *scheduler.Node) {
			n.Taints = []scheduler.Taint{{Key: "soft", Effect: "PreferNoSchedule"}}
		}), withReq(none), 0, ""},
		{"memory", withNode(func(n *scheduler.Node) { n.Allocated.MemoryBytes = 7*gib + 1 }), withReq(none), 0,
			"node n1: insufficient memory (free 1024.0MiB, request 1GiB)"},
		{"cpu", withNode(func(n *scheduler.Node) { n.Allocated.MilliCPU = 3500 }), withReq(none), 0,
			"node n1: insufficient cpu (free 500m, request 1000m)"},
		{"disk", withNode(plain), withReq(func(r *scheduler.Request) { r.Resources.DiskBytes = 101 * gib }), 0,
			"node n1: insufficient disk (free 100GiB, request 101GiB)"},
		{"exactly full fits", withNode(func(n *scheduler.Node) { n.Allocated = scheduler.Resources{MilliCPU: 3000, MemoryBytes: 7 * gib} }), withReq(none), 0, ""},
		{"max instances", withNode(func(n *scheduler.Node) { n.MaxInstances, n.Instances = 2, 2 }), withReq(none), 0, "node n1: too many instances (2 of 2)"},
		{"service bound", withNode(plain), withReq(func(r *scheduler.Request) { r.ServiceKey, r.MaxPerNode = "web", 2 }), 2,
			"node n1: service web at 2 per node (2 of 2 replicas of web)"},
		{"service below bound", withNode(plain), withReq(func(r *scheduler.Request) { r.ServiceKey, r.MaxPerNode = "web", 2 }), 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := scheduler.Fits(&tt.node, &tt.req, tt.replicas)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Fits = %q; want %q", got, tt.want)
			}
		})
	}
}

// Schedule honours the same predicates as Fits.
func TestScheduleTaintsAndSelectors(t *testing.T) {
	gpu := node("gpu", 64, 256)
	gpu.Labels["gpu"] = "true"
	gpu.Taints = []scheduler.Taint{{Key: "gpu", Value: "true", Effect: scheduler.NoSchedule}}
	arm := node("arm", 4, 8)
	arm.Labels["arch"] = "arm64"
	plain := node("plain", 4, 8)
	snap := &scheduler.Snapshot{Nodes: []scheduler.Node{gpu, arm, plain}}

	train := req("train", "t", scheduler.BandBatch, 1000, 1, 0)
	train.NodeSelector = map[string]string{"gpu": "true"}
	train.Tolerations = []scheduler.Toleration{{Key: "gpu", Operator: scheduler.OpExists}}
	armReq := req("arm", "t", scheduler.BandBatch, 1000, 1, 1)
	armReq.NodeSelector = map[string]string{"arch": "arm64"}
	web := req("web", "t", scheduler.BandBatch, 1000, 1, 2) // would pack onto the big gpu node if it could
	untolerated := req("untolerated", "t", scheduler.BandBatch, 1000, 1, 3)
	untolerated.NodeSelector = map[string]string{"gpu": "true"}

	p := schedule(t, scheduler.DefaultConfig(), snap, []scheduler.Request{train, armReq, web, untolerated})
	for id, want := range map[string]string{"train": "gpu", "arm": "arm"} {
		if got := bindingOf(p, id); got != want {
			t.Errorf("request %s bound to %q; want %q", id, got, want)
		}
	}
	if got := bindingOf(p, "web"); got == "gpu" || got == "" {
		t.Errorf("request web bound to %q; want a node without the gpu taint", got)
	}
	if got, want := reasonOf(p, "untolerated"), "0/3 nodes: 2 node selector mismatch, 1 taint gpu"; got != want {
		t.Errorf("reason for untolerated = %q; want %q", got, want)
	}
}
