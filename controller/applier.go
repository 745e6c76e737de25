package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/scheduler"
	"github.com/cube-platform/cube/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ReadState reads instances, nodes and node binding revisions at one etcd
// revision, plus tenants and node liveness.
func ReadState(ctx context.Context, st *store.Store) (*State, error) {
	insts, rev, err := st.Instances().ListAt(ctx, st.Instances().Prefix(), 0)
	if err != nil {
		return nil, err
	}
	nodes, _, err := st.Nodes().ListAt(ctx, st.Nodes().Prefix(), rev)
	if err != nil {
		return nil, err
	}
	s := &State{Revision: rev, Nodes: nodes, Instances: insts, NodeRevisions: map[string]int64{}}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := st.Client().Get(gctx, store.NodeBindingKey(""), clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("%w: read node binding revisions: %v", errdefs.ErrUnavailable, err)
	}
	for _, kv := range resp.Kvs {
		s.NodeRevisions[strings.TrimPrefix(string(kv.Key), store.NodeBindingKey(""))] = kv.ModRevision
	}
	if s.Tenants, err = st.ListTenants(ctx); err != nil {
		return nil, err
	}
	if s.Alive, err = st.AliveNodes(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Applier commits plans. Each binding is written in an etcd transaction
// that compares the instance's revision (still pending, unchanged) and the
// node's binding key (nobody bound anything there since the snapshot), and
// bumps that key. A stale binding is re-checked against fresh state with
// scheduler.Fits and retried, so two appliers racing can never overcommit
// a node.
type Applier struct {
	Store *store.Store
	Log   *slog.Logger
	// BatchSize bindings go in one transaction (etcd allows 128 ops per
	// list; each binding costs at most two).
	BatchSize int
}

// ApplyStats counts what Apply did.
type ApplyStats struct {
	Bound, Rechecked, Refused, Preempted int
}

type pendingBinding struct {
	b  scheduler.Binding
	in *v1.Instance
	r  scheduler.Request
}

// Apply commits plan, made from st. It writes preemptions first (their room
// was counted in the plan), then bindings, then the reasons of unplaced
// instances.
func (a *Applier) Apply(ctx context.Context, st *State, plan scheduler.Plan, byID map[string]*v1.Instance) (ApplyStats, error) {
	var stats ApplyStats
	insts := a.Store.Instances()
	byRunning := map[string]*v1.Instance{}
	for _, in := range st.Instances {
		byRunning[instanceID(in)] = in
	}
	for _, p := range plan.Preemptions {
		victim := byRunning[p.Victim]
		if victim == nil {
			continue
		}
		_, err := insts.Mutate(ctx, insts.Key(victim.Metadata.Tenant, victim.Metadata.Name), func(in *v1.Instance) error {
			if !Holds(in) || in.Status.Node != p.Node {
				return errSkip // already gone: its room is free anyway
			}
			in.Status.Preemption = &v1.Preemption{By: preemptorFor(p.For, in.Metadata.Tenant), Message: p.Reason, At: plan.Time.UTC()}
			in.Status.Reason, in.Status.Message = "Preempted", p.Reason
			return nil
		})
		if err != nil && !errors.Is(err, errSkip) && !errors.Is(err, errdefs.ErrNotFound) {
			return stats, fmt.Errorf("preempt %s: %w", p.Victim, err)
		}
		if err == nil {
			stats.Preempted++
			a.Log.Info("preempted", "victim", p.Victim, "node", p.Node, "for", p.For, "reason", p.Reason)
		}
	}

	expect := map[string]int64{} // node binding revision this applier expects
	for n, r := range st.NodeRevisions {
		expect[n] = r
	}
	var batch []pendingBinding
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		ok, rev, err := a.commit(ctx, batch, expect, plan.Time)
		if err != nil {
			return err
		}
		if ok {
			for _, pb := range batch {
				expect[pb.b.Node] = rev
			}
			stats.Bound += len(batch)
		} else {
			for _, pb := range batch {
				bound, err := a.recheck(ctx, st, pb, plan.Time)
				if err != nil {
					return err
				}
				stats.Rechecked++
				if bound {
					stats.Bound++
				} else {
					stats.Refused++
				}
			}
		}
		batch = batch[:0]
		return nil
	}
	size := a.BatchSize
	if size <= 0 || size > 60 {
		size = 60
	}
	for _, b := range plan.Bindings {
		in := byID[b.RequestID]
		if in == nil {
			continue
		}
		batch = append(batch, pendingBinding{b: b, in: in, r: Request(in)})
		if len(batch) >= size {
			if err := flush(); err != nil {
				return stats, err
			}
		}
	}
	if err := flush(); err != nil {
		return stats, err
	}
	var reasons []*v1.Instance
	for _, u := range plan.Unschedulable {
		in := byID[u.RequestID]
		if in == nil || (in.Status.Reason == "Unschedulable" && in.Status.Message == u.Reason) {
			continue
		}
		cp := *in
		cp.Status.Reason, cp.Status.Message = "Unschedulable", u.Reason
		reasons = append(reasons, &cp)
	}
	return stats, a.writeReasons(ctx, reasons)
}

// reasonsPerTxn bounds the nested transactions of one write of reasons
// (etcd refuses more than 128 operations in one transaction).
const reasonsPerTxn = 60

// writeReasons stores why instances stay Pending, many per transaction:
// each in a nested transaction of its own that puts it only if it did not
// change since the snapshot (a change is news the next pass sees), so one
// stale instance does not hold back the others.
func (a *Applier) writeReasons(ctx context.Context, updated []*v1.Instance) error {
	insts := a.Store.Instances()
	for len(updated) > 0 {
		n := min(len(updated), reasonsPerTxn)
		ops := make([]clientv3.Op, 0, n)
		for _, in := range updated[:n] {
			key := insts.Key(in.Metadata.Tenant, in.Metadata.Name)
			rv, _ := strconv.ParseInt(in.Metadata.ResourceVersion, 10, 64)
			val, err := store.Encode(in)
			if err != nil {
				return err
			}
			ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", rv)}, []clientv3.Op{clientv3.OpPut(key, val)}, nil))
		}
		if _, err := a.Store.Client().Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("record why instances stay pending: %w", err)
		}
		updated = updated[n:]
	}
	return nil
}

var errSkip = errors.New("skip")

func bound(in *v1.Instance, node string, at time.Time) *v1.Instance {
	cp := *in
	t := at.UTC()
	cp.Status.Node, cp.Status.Phase, cp.Status.ScheduledAt = node, v1.PhaseScheduled, &t
	cp.Status.Reason, cp.Status.Message = "", ""
	return &cp
}

// commit writes a batch of bindings in one transaction. ok is false when
// any instance or node changed since the snapshot.
func (a *Applier) commit(ctx context.Context, batch []pendingBinding, expect map[string]int64, at time.Time) (ok bool, rev int64, err error) {
	insts := a.Store.Instances()
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	nodes := map[string]bool{}
	for _, pb := range batch {
		key := insts.Key(pb.in.Metadata.Tenant, pb.in.Metadata.Name)
		rv, _ := strconv.ParseInt(pb.in.Metadata.ResourceVersion, 10, 64)
		val, err := store.Encode(bound(pb.in, pb.b.Node, at))
		if err != nil {
			return false, 0, err
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", rv))
		ops = append(ops, clientv3.OpPut(key, val))
		if !nodes[pb.b.Node] {
			nodes[pb.b.Node] = true
			nk := store.NodeBindingKey(pb.b.Node)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(nk), "=", expect[pb.b.Node]))
			ops = append(ops, clientv3.OpPut(nk, at.UTC().Format(time.RFC3339Nano)))
		}
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := a.Store.Client().Txn(tctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, 0, fmt.Errorf("%w: commit bindings: %v", errdefs.ErrUnavailable, err)
	}
	return resp.Succeeded, resp.Header.Revision, nil
}

// recheck binds one instance against fresh state: it re-reads everything
// at one revision, re-checks the fit on the chosen node, and commits with
// the same compares; it retries a few times when it loses a race.
func (a *Applier) recheck(ctx context.Context, st *State, pb pendingBinding, at time.Time) (bool, error) {
	for attempt := 0; attempt < 5; attempt++ {
		fresh, err := ReadState(ctx, a.Store)
		if err != nil {
			return false, err
		}
		var in *v1.Instance
		for _, x := range fresh.Instances {
			if x.Metadata.UID == pb.in.Metadata.UID {
				in = x
			}
		}
		if in == nil || in.Status.Node != "" || in.Status.Phase != v1.PhasePending || in.Metadata.DeletionTimestamp != nil {
			return false, nil // gone or bound by someone else
		}
		snap := fresh.Snapshot()
		var node *scheduler.Node
		for i := range snap.Nodes {
			if snap.Nodes[i].Name == pb.b.Node {
				node = &snap.Nodes[i]
			}
		}
		if node == nil {
			return false, nil
		}
		replicas := 0
		if pb.r.ServiceKey != "" {
			for _, r := range snap.Running {
				if r.Node == node.Name && r.ServiceKey == pb.r.ServiceKey {
					replicas++
				}
			}
		}
		if err := scheduler.Fits(node, &pb.r, replicas); err != nil {
			a.Log.Debug("binding no longer fits", "instance", pb.r.ID, "node", node.Name, "reason", err)
			return false, nil // the next pass places it elsewhere
		}
		ok, _, err := a.commit(ctx, []pendingBinding{{b: pb.b, in: in, r: pb.r}}, fresh.NodeRevisions, at)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}
