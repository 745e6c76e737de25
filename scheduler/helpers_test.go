package scheduler_test

import (
	"testing"
	"time"

	"github.com/cube-platform/cube/scheduler"
)

const gib = int64(1) << 30

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// node is a ready node with cores cpus and mem GiB of memory and no instances.
func node(name string, cores, mem int64) scheduler.Node {
	return scheduler.Node{
		Name:     name,
		Labels:   map[string]string{},
		Capacity: scheduler.Resources{MilliCPU: cores * 1000, MemoryBytes: mem * gib, DiskBytes: 100 * gib},
		Ready:    true,
		Revision: 7,
	}
}

// req is a request of tenant for cores cpus and mem GiB, created at t0+sec.
func req(id, tenant string, band scheduler.Band, milli, mem int64, sec int) scheduler.Request {
	return scheduler.Request{
		ID: id, Tenant: tenant, Band: band,
		Resources: scheduler.Resources{MilliCPU: milli, MemoryBytes: mem * gib},
		Created:   t0.Add(time.Duration(sec) * time.Second),
	}
}

// running puts an instance on snap's node and accounts for it there.
func running(snap *scheduler.Snapshot, id, tenant string, band scheduler.Band, nodeName string, milli, mem int64, started time.Time) {
	res := scheduler.Resources{MilliCPU: milli, MemoryBytes: mem * gib}
	for i := range snap.Nodes {
		if snap.Nodes[i].Name == nodeName {
			snap.Nodes[i].Allocated = snap.Nodes[i].Allocated.Add(res)
			snap.Nodes[i].Instances++
		}
	}
	snap.Running = append(snap.Running, scheduler.Running{
		ID: id, Tenant: tenant, Band: band, Node: nodeName, Resources: res, Started: started,
	})
}

func schedule(t *testing.T, cfg scheduler.Config, snap *scheduler.Snapshot, queue []scheduler.Request) scheduler.Plan {
	t.Helper()
	s, err := scheduler.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	return s.Schedule(snap, queue, t0.Add(time.Hour))
}

func boundIDs(p scheduler.Plan) []string {
	var ids []string
	for _, b := range p.Bindings {
		ids = append(ids, b.RequestID)
	}
	return ids
}

func bindingOf(p scheduler.Plan, id string) string {
	for _, b := range p.Bindings {
		if b.RequestID == id {
			return b.Node
		}
	}
	return ""
}

func reasonOf(p scheduler.Plan, id string) string {
	for _, u := range p.Unschedulable {
		if u.RequestID == id {
			return u.Reason
		}
	}
	return ""
}
