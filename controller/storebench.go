package controller

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/scheduler"
	"github.com/cube-platform/cube/scheduler/bench"
	"github.com/cube-platform/cube/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// StoreBenchResult is what a scheduling pass through embedded etcd costs.
type StoreBenchResult struct {
	// PlacementsPerSec is bindings committed per second of schedule+apply.
	PlacementsPerSec float64
	Bound, Rechecked int
	Load, Read       time.Duration // loading the fleet; reading it back
	Schedule, Apply  time.Duration
}

// BenchThroughStore loads the synthetic fleet and workload of cfg into the
// store as real nodes and pending instances, then runs one leader pass
// (read state, schedule, apply through the Applier's transactions) and
// times it.
func BenchThroughStore(ctx context.Context, st *store.Store, cfg bench.Config, log *slog.Logger) (StoreBenchResult, error) {
	var res StoreBenchResult
	nodes, tenants, reqs, err := bench.Workload(cfg)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	var names []string
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := st.Client().Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	put := func(key string, obj v1.Object) error {
		val, err := store.Encode(obj)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(key, val))
		if len(ops) == 100 {
			return flush()
		}
		return nil
	}
	for _, n := range nodes {
		vn := &v1.Node{APIVersion: v1.Version, Kind: "Node", Metadata: v1.ObjectMeta{Name: n.Name, Labels: n.Labels},
			Spec:   v1.NodeSpec{MaxInstances: n.MaxInstances, Unschedulable: n.Unschedulable},
			Status: v1.NodeStatus{Capacity: v1.Resources{CPU: v1.FormatCPU(n.Capacity.MilliCPU), Memory: v1.FormatMemory(n.Capacity.MemoryBytes)}}}
		for _, t := range n.Taints {
			vn.Spec.Taints = append(vn.Spec.Taints, v1.Taint{Key: t.Key, Value: t.Value, Effect: string(t.Effect)})
		}
		if err := put(st.Nodes().Key(n.Name), vn); err != nil {
			return res, err
		}
		if n.Ready {
			names = append(names, n.Name)
		}
	}
	for i, r := range reqs {
		name := fmt.Sprintf("r%d", i)
		in := &v1.Instance{APIVersion: v1.Version, Kind: "Instance",
			Metadata: v1.ObjectMeta{Name: name, Tenant: r.Tenant, UID: fmt.Sprintf("u%d", i), CreationTimestamp: r.Created},
			Spec: v1.InstanceSpec{Priority: r.Band.String(), NodeSelector: r.NodeSelector, MaxPerNode: r.MaxPerNode,
				Containers: []v1.Container{{Name: "main", Image: "bench", ImageDigest: r.Image,
					Resources: v1.Resources{CPU: v1.FormatCPU(r.Resources.MilliCPU), Memory: v1.FormatMemory(r.Resources.MemoryBytes)}}}},
			Status: v1.InstanceStatus{Phase: v1.PhasePending}}
		for _, t := range r.Tolerations {
			in.Spec.Tolerations = append(in.Spec.Tolerations, v1.Toleration{Key: t.Key, Operator: string(t.Operator), Value: t.Value, Effect: string(t.Effect)})
		}
		if err := put(st.Instances().Key(r.Tenant, name), in); err != nil {
			return res, err
		}
	}
	if err := flush(); err != nil {
		return res, err
	}
	for _, t := range tenants {
		if err := st.PutTenant(ctx, store.Tenant{Name: t.Name, Weight: t.Weight}); err != nil {
			return res, err
		}
	}
	if err := st.MarkAlive(ctx, names, 10*time.Minute, time.Now()); err != nil {
		return res, err
	}
	res.Load = time.Since(t0)

	t1 := time.Now()
	state, err := ReadState(ctx, st)
	if err != nil {
		return res, err
	}
	queue, byID := state.Pending()
	res.Read = time.Since(t1)
	sched, err := scheduler.New(cfg.Scheduler)
	if err != nil {
		return res, err
	}
	t2 := time.Now()
	plan := sched.Schedule(state.Snapshot(), queue, time.Now())
	res.Schedule = time.Since(t2)
	t3 := time.Now()
	stats, err := (&Applier{Store: st, Log: log}).Apply(ctx, state, plan, byID)
	if err != nil {
		return res, err
	}
	res.Apply = time.Since(t3)
	res.Bound, res.Rechecked = stats.Bound, stats.Rechecked
	res.PlacementsPerSec = float64(stats.Bound) / (res.Schedule + res.Apply).Seconds()
	return res, nil
}
