package controller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/scheduler"
	"github.com/cube-platform/cube/store"
)

func newStore(t *testing.T) *store.Store {
	t.Helper()
	e, err := store.StartEmbedded(context.Background(), t.TempDir(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return store.New(e.Client)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fleet registers n ready nodes of 4 cores / 8Gi and `pending` instances
// of 1 core / 1Gi split over two tenants.
func fleet(t *testing.T, st *store.Store, nodes, pending int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < nodes; i++ {
		name := fmt.Sprintf("n%d", i)
		n := &v1.Node{Metadata: v1.ObjectMeta{Name: name}, Status: v1.NodeStatus{Capacity: v1.Resources{CPU: "4", Memory: "8Gi"}}}
		if err := st.Nodes().Create(ctx, st.Nodes().Key(name), n); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Heartbeat(ctx, name, 30*time.Second, 0, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < pending; i++ {
		tenant := []string{"a", "b"}[i%2]
		in := &v1.Instance{Metadata: v1.ObjectMeta{Name: fmt.Sprintf("i%d", i), Tenant: tenant, UID: fmt.Sprintf("u%d", i),
			CreationTimestamp: time.Unix(int64(i), 0)},
			Spec: v1.InstanceSpec{Containers: []v1.Container{{Name: "main", Image: "x", Resources: v1.Resources{CPU: "1", Memory: "1Gi"}}}}}
		in.SetDefaults()
		in.Status.Phase = v1.PhasePending
		if err := st.Instances().Create(ctx, st.Instances().Key(tenant, in.Metadata.Name), in); err != nil {
			t.Fatal(err)
		}
	}
}

// checkNoOvercommit fails if any node holds more than its capacity, and
// returns how many instances are bound.
func checkNoOvercommit(t *testing.T, st *store.Store) int {
	t.Helper()
	s, err := ReadState(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot()
	bound := 0
	for _, n := range snap.Nodes {
		if !n.Allocated.LessEq(n.Capacity) {
			t.Errorf("node %s overcommitted: allocated %+v > capacity %+v", n.Name, n.Allocated, n.Capacity)
		}
		bound += n.Instances
	}
	return bound
}

func newScheduling(t *testing.T, st *store.Store, id string) *Scheduling {
	sched, err := scheduler.New(scheduler.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return &Scheduling{Store: st, Scheduler: sched, Log: quiet(), Now: time.Now, Identity: id}
}

// TestStalePlanIsRechecked lets two replicas decide on the same snapshot;
// the second to apply must find every node changed, re-check, and bind
// nothing that no longer fits.
func TestStalePlanIsRechecked(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	fleet(t, st, 3, 20) // room for 12
	sa, sb := newScheduling(t, st, "a"), newScheduling(t, st, "b")
	stateA, _ := ReadState(ctx, st)
	stateB, _ := ReadState(ctx, st)
	qa, byA := stateA.Pending()
	qb, byB := stateB.Pending()
	planA := sa.Scheduler.Schedule(stateA.Snapshot(), qa, time.Now())
	planB := sb.Scheduler.Schedule(stateB.Snapshot(), qb, time.Now())
	if len(planA.Bindings) != 12 || len(planB.Bindings) != 12 {
		t.Fatalf("plans bind %d and %d; want 12 each (the fleet's room)", len(planA.Bindings), len(planB.Bindings))
	}
	statsA, err := (&Applier{Store: st, Log: quiet()}).Apply(ctx, stateA, planA, byA)
	if err != nil {
		t.Fatal(err)
	}
	statsB, err := (&Applier{Store: st, Log: quiet()}).Apply(ctx, stateB, planB, byB)
	if err != nil {
		t.Fatal(err)
	}
	if statsA.Bound != 12 || statsB.Bound != 0 || statsB.Rechecked == 0 {
		t.Errorf("A bound %d, B bound %d after %d rechecks; want 12, 0, >0", statsA.Bound, statsB.Bound, statsB.Rechecked)
	}
	if got := checkNoOvercommit(t, st); got != 12 {
		t.Errorf("%d instances bound; want 12", got)
	}
}

// TestTwoAppliersRacing runs two replicas' passes concurrently, over and
// over, while instances arrive; no node may ever be overcommitted and the
// fleet ends full.
func TestTwoAppliersRacing(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	fleet(t, st, 5, 40) // room for 20
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b"} {
		s := newScheduling(t, st, id)
		ap := &Applier{Store: st, Log: quiet(), BatchSize: 3}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 15; i++ {
				if err := s.Pass(ctx, ap); err != nil {
					t.Errorf("replica %s pass: %v", id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := checkNoOvercommit(t, st); got != 20 {
		t.Errorf("%d instances bound; want the fleet full at 20", got)
	}
}

// TestUnschedulableReason keeps an instance that fits nowhere Pending with
// the scheduler's reason in its status.
func TestUnschedulableReason(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	fleet(t, st, 1, 0)
	in := &v1.Instance{Metadata: v1.ObjectMeta{Name: "big", Tenant: "a", UID: "u"},
		Spec: v1.InstanceSpec{Containers: []v1.Container{{Name: "main", Image: "x", Resources: v1.Resources{CPU: "64", Memory: "1Gi"}}}}}
	in.SetDefaults()
	in.Status.Phase = v1.PhasePending
	key := st.Instances().Key("a", "big")
	if err := st.Instances().Create(ctx, key, in); err != nil {
		t.Fatal(err)
	}
	s := newScheduling(t, st, "a")
	if err := s.Pass(ctx, &Applier{Store: st, Log: quiet()}); err != nil {
		t.Fatal(err)
	}
	got, _ := st.Instances().Get(ctx, key)
	if got.Status.Phase != v1.PhasePending || got.Status.Reason != "Unschedulable" || !strings.HasPrefix(got.Status.Message, "0/1 nodes: 1 insufficient cpu") {
		t.Errorf("status = %s %s %q; want Pending Unschedulable \"0/1 nodes: 1 insufficient cpu…\"", got.Status.Phase, got.Status.Reason, got.Status.Message)
	}
}

// TestWriteReasonsSkipsOnlyTheStale writes reasons for more instances than
// one transaction holds; one changed since it was read keeps its change,
// and the others still get their reason.
func TestWriteReasonsSkipsOnlyTheStale(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	fleet(t, st, 0, reasonsPerTxn+5)
	insts := st.Instances()
	list, _, err := insts.List(ctx, insts.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	stale := list[3]
	if _, err := insts.Mutate(ctx, insts.Key(stale.Metadata.Tenant, stale.Metadata.Name), func(in *v1.Instance) error {
		in.Metadata.Labels = map[string]string{"changed": "yes"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, in := range list {
		in.Status.Reason, in.Status.Message = "Unschedulable", "0/0 nodes"
	}
	if err := (&Applier{Store: st, Log: quiet()}).writeReasons(ctx, list); err != nil {
		t.Fatal(err)
	}
	after, _, _ := insts.List(ctx, insts.Prefix())
	for _, in := range after {
		isStale := in.Metadata.Name == stale.Metadata.Name && in.Metadata.Tenant == stale.Metadata.Tenant
		if isStale && (in.Status.Reason != "" || in.Metadata.Labels["changed"] != "yes") {
			t.Errorf("stale %s: reason %q labels %v; want its own change kept and no reason", in.Metadata.Name, in.Status.Reason, in.Metadata.Labels)
		}
		if !isStale && in.Status.Reason != "Unschedulable" {
			t.Errorf("%s/%s: reason %q; want Unschedulable", in.Metadata.Tenant, in.Metadata.Name, in.Status.Reason)
		}
	}
}

// TestLeaderElection runs two replicas: exactly one leads and binds.
func TestLeaderElection(t *testing.T) {
	st := newStore(t)
	fleet(t, st, 2, 6)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b"} {
		s := newScheduling(t, st, id)
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Run(ctx) }()
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && checkNoOvercommit(t, st) < 6 {
		time.Sleep(50 * time.Millisecond)
	}
	if got := checkNoOvercommit(t, st); got != 6 {
		t.Errorf("%d bound; want 6", got)
	}
	resp, err := st.Client().Get(context.Background(), ElectionKey, clientWithPrefix())
	if err != nil || len(resp.Kvs) != 2 {
		t.Errorf("election has %d candidates, %v; want 2 (one leader, one waiting)", len(resp.Kvs), err)
	}
	cancel()
	wg.Wait()
}

// TestHostPortConflict keeps the second instance publishing the same host
// port on a one-node fleet Pending with a reason.
func TestHostPortConflict(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	fleet(t, st, 1, 0)
	for _, name := range []string{"a1", "a2"} {
		in := &v1.Instance{Metadata: v1.ObjectMeta{Name: name, Tenant: "a", UID: name, CreationTimestamp: time.Now()},
			Spec: v1.InstanceSpec{Containers: []v1.Container{{Name: "main", Image: "x", Resources: v1.Resources{CPU: "100m", Memory: "16Mi"},
				Ports: []v1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}}}}}
		in.SetDefaults()
		in.Status.Phase = v1.PhasePending
		if err := st.Instances().Create(ctx, st.Instances().Key("a", name), in); err != nil {
			t.Fatal(err)
		}
	}
	if err := newScheduling(t, st, "a").Pass(ctx, &Applier{Store: st, Log: quiet()}); err != nil {
		t.Fatal(err)
	}
	var boundN, pendingN int
	for _, name := range []string{"a1", "a2"} {
		in, _ := st.Instances().Get(ctx, st.Instances().Key("a", name))
		switch {
		case in.Status.Node != "":
			boundN++
		case strings.Contains(in.Status.Message, "host port 8080/TCP is already published on node n0"):
			pendingN++
		default:
			t.Errorf("%s: %s %q; want bound or pending on the port", name, in.Status.Phase, in.Status.Message)
		}
	}
	if boundN != 1 || pendingN != 1 {
		t.Errorf("bound %d, pending on the port %d; want 1 and 1", boundN, pendingN)
	}
}

// TestTaintsAndSelectorsThroughTheStore checks the conversion of node
// taints, labels and instance tolerations and selectors into the
// scheduler's terms.
func TestTaintsAndSelectorsThroughTheStore(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	n := &v1.Node{Metadata: v1.ObjectMeta{Name: "gpu1", Labels: map[string]string{"zone": "a"}},
		Spec:   v1.NodeSpec{Taints: []v1.Taint{{Key: "gpu", Value: "true", Effect: "NoSchedule"}}},
		Status: v1.NodeStatus{Capacity: v1.Resources{CPU: "4", Memory: "8Gi"}}}
	if err := st.Nodes().Create(ctx, st.Nodes().Key("gpu1"), n); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Heartbeat(ctx, "gpu1", 30*time.Second, 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, mutate func(*v1.Instance)) {
		in := &v1.Instance{Metadata: v1.ObjectMeta{Name: name, Tenant: "a", UID: name, CreationTimestamp: time.Now()},
			Spec: v1.InstanceSpec{Containers: []v1.Container{{Name: "main", Image: "x", Resources: v1.Resources{CPU: "100m", Memory: "16Mi"}}}}}
		in.SetDefaults()
		mutate(in)
		in.Status.Phase = v1.PhasePending
		if err := st.Instances().Create(ctx, st.Instances().Key("a", name), in); err != nil {
			t.Fatal(err)
		}
	}
	mk("plain", func(*v1.Instance) {})
	mk("tolerant", func(in *v1.Instance) {
		in.Spec.Tolerations = []v1.Toleration{{Key: "gpu", Value: "true", Effect: "NoSchedule"}}
		in.Spec.NodeSelector = map[string]string{"zone": "a"}
	})
	mk("wrong-zone", func(in *v1.Instance) {
		in.Spec.Tolerations = []v1.Toleration{{Key: "gpu", Operator: "Exists"}}
		in.Spec.NodeSelector = map[string]string{"zone": "b"}
	})
	if err := newScheduling(t, st, "a").Pass(ctx, &Applier{Store: st, Log: quiet()}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"plain": "taint", "tolerant": "", "wrong-zone": "selector"}
	for name, reason := range want {
		in, _ := st.Instances().Get(ctx, st.Instances().Key("a", name))
		if reason == "" {
			if in.Status.Node != "gpu1" {
				t.Errorf("%s: node %q (%s); want gpu1", name, in.Status.Node, in.Status.Message)
			}
			continue
		}
		if in.Status.Node != "" || !strings.Contains(in.Status.Message, reason) {
			t.Errorf("%s: node %q, message %q; want pending with a %s reason", name, in.Status.Node, in.Status.Message, reason)
		}
	}
}

// TestHostPortConflictNamesNoOtherTenant: two tenants publish the same
// host port on one node; the one left Pending is told the port is taken,
// and never whose instance took it.
func TestHostPortConflictNamesNoOtherTenant(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	fleet(t, st, 1, 0)
	for _, id := range [][2]string{{"acme", "secret-db"}, {"other", "web"}} {
		in := &v1.Instance{Metadata: v1.ObjectMeta{Name: id[1], Tenant: id[0], UID: id[1], CreationTimestamp: time.Now()},
			Spec: v1.InstanceSpec{Containers: []v1.Container{{Name: "main", Image: "x", Resources: v1.Resources{CPU: "100m", Memory: "16Mi"},
				Ports: []v1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}}}}}
		in.SetDefaults()
		in.Status.Phase = v1.PhasePending
		if err := st.Instances().Create(ctx, st.Instances().Key(id[0], id[1]), in); err != nil {
			t.Fatal(err)
		}
	}
	if err := newScheduling(t, st, "a").Pass(ctx, &Applier{Store: st, Log: quiet()}); err != nil {
		t.Fatal(err)
	}
	var pending int
	for _, id := range [][2]string{{"acme", "secret-db"}, {"other", "web"}} {
		in, _ := st.Instances().Get(ctx, st.Instances().Key(id[0], id[1]))
		if in.Status.Node != "" {
			continue
		}
		pending++
		want := "host port 8080/TCP is already published on node n0 by another instance"
		if !strings.Contains(in.Status.Message, want) {
			t.Errorf("%s/%s message %q; want it to contain %q", id[0], id[1], in.Status.Message, want)
		}
		for _, leak := range []string{"acme", "secret-db", "other/", "web"} {
			if leak != id[0] && leak != id[1] && strings.Contains(in.Status.Message, leak) {
				t.Errorf("%s/%s message %q names %q, another tenant's", id[0], id[1], in.Status.Message, leak)
			}
		}
	}
	if pending != 1 {
		t.Errorf("%d instances pending on the port; want 1", pending)
	}
}

// TestPreemptorNamesNoOtherTenant: Preemption.By, which the victim's
// tenant reads, names the preemptor only within one tenant.
func TestPreemptorNamesNoOtherTenant(t *testing.T) {
	for _, tt := range []struct{ preemptor, victimTenant, want string }{
		{"acme/vip", "acme", "vip"},
		{"acme/vip", "other", ""},
		{"acme/vip", "acm", ""},
	} {
		if got := preemptorFor(tt.preemptor, tt.victimTenant); got != tt.want {
			t.Errorf("preemptorFor(%q, %q) = %q; want %q", tt.preemptor, tt.victimTenant, got, tt.want)
		}
	}
	if got := holderFor("acme/db", "other/web"); got != "another instance" {
		t.Errorf("holderFor(another tenant's) = %q; want another instance", got)
	}
	if got := holderFor("acme/db", "acme/web"); got != "instance db" {
		t.Errorf("holderFor(own tenant's) = %q; want instance db", got)
	}
}
