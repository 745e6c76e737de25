package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/internal/apitest"
	"github.com/cube-platform/cube/store"
)

// reportEnv is an API server over a real embedded etcd, a node token for
// node n1, and an instance a/web bound to n1 and running.
type reportEnv struct {
	st   *store.Store
	node *client.Client
	key  string
	at   time.Time // when the scheduler bound it
}

func newReportEnv(t *testing.T) *reportEnv {
	t.Helper()
	ctx := context.Background()
	st, h, _ := apitest.Server(t, "a")
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	tok, err := st.CreateToken(ctx, store.Token{Role: store.RoleNode, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	env := &reportEnv{st: st, node: client.New(hs.URL, tok), key: st.Instances().Key("a", "web"), at: time.Unix(1000, 0).UTC()}
	in := &v1.Instance{Metadata: v1.ObjectMeta{Name: "web", Tenant: "a", UID: "u1"},
		Spec: v1.InstanceSpec{Containers: []v1.Container{{Name: "main", Image: "busybox"}}}}
	in.SetDefaults()
	in.Status = v1.InstanceStatus{Phase: v1.PhaseRunning, Node: "n1", ScheduledAt: &env.at}
	if err := st.Instances().Create(ctx, env.key, in); err != nil {
		t.Fatal(err)
	}
	return env
}

// padRevisions writes a filler key until etcd's revision is just below
// 10, so the next two writes straddle "9" and "10": as strings the newer
// one would sort first.
func (env *reportEnv) padRevisions(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for {
		resp, err := env.st.Client().Put(ctx, "/test/filler", "x")
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Revision >= 8 {
			if resp.Header.Revision > 8 {
				t.Fatalf("revision already %d; the test wants to cross 9 -> 10", resp.Header.Revision)
			}
			return
		}
	}
}

// preempt writes a preemption as the scheduler's applier does.
func (env *reportEnv) preempt(t *testing.T) *v1.Instance {
	t.Helper()
	out, err := env.st.Instances().Mutate(context.Background(), env.key, func(in *v1.Instance) error {
		in.Status.Preemption = &v1.Preemption{By: "a/batch", Message: "preempted for a higher band", At: time.Now().UTC()}
		in.Status.Reason, in.Status.Message = "Preempted", "preempted for a higher band"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (env *reportEnv) stored(t *testing.T) *v1.Instance {
	t.Helper()
	in, err := env.st.Instances().Get(context.Background(), env.key)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func (env *reportEnv) checkSchedulerFields(t *testing.T, in *v1.Instance) {
	t.Helper()
	if in.Status.Preemption == nil || in.Status.Preemption.By != "a/batch" {
		t.Errorf("status.preemption = %+v; want the scheduler's preemption by a/batch", in.Status.Preemption)
	}
	if in.Status.Reason != "Preempted" {
		t.Errorf("status.reason = %q; want Preempted", in.Status.Reason)
	}
	if in.Status.Node != "n1" || in.Status.ScheduledAt == nil || !in.Status.ScheduledAt.Equal(env.at) {
		t.Errorf("binding = node %q scheduledAt %v; want n1 at %v", in.Status.Node, in.Status.ScheduledAt, env.at)
	}
}

// TestStaleReportIsRefused: the node reads the instance, the scheduler
// preempts it, and the node's report computed from its read is refused
// as stale (409); the preemption stays. A report that names no version
// merges only node-owned fields, so even an empty binding in it keeps
// the scheduler's.
func TestStaleReportIsRefused(t *testing.T) {
	env := newReportEnv(t)
	ctx := context.Background()
	env.padRevisions(t)
	read, err := env.node.GetTenantInstance(ctx, "a", "web") // resourceVersion 9
	if err != nil {
		t.Fatal(err)
	}
	if after := env.preempt(t); !v1.NewerResourceVersion(after.Metadata.ResourceVersion, read.Metadata.ResourceVersion) {
		t.Fatalf("preemption at resourceVersion %s is not newer than the read at %s", after.Metadata.ResourceVersion, read.Metadata.ResourceVersion)
	}
	stale := *read
	stale.Status.Phase, stale.Status.IP = v1.PhaseSucceeded, "10.0.0.9"
	if _, err := env.node.UpdateStatus(ctx, &stale); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("stale report: err %v; want a conflict", err)
	}
	got := env.stored(t)
	env.checkSchedulerFields(t, got)
	if got.Status.Phase != v1.PhaseRunning || got.Status.IP != "" {
		t.Errorf("a refused report changed the status: phase %s ip %q", got.Status.Phase, got.Status.IP)
	}

	// No version: only the node's fields are taken.
	blind := *got
	blind.Metadata.ResourceVersion = ""
	blind.Status = v1.InstanceStatus{Phase: v1.PhaseSucceeded, IP: "10.0.0.9", Node: "n1"}
	if _, err := env.node.UpdateStatus(ctx, &blind); err != nil {
		t.Fatal(err)
	}
	got = env.stored(t)
	env.checkSchedulerFields(t, got)
	if got.Status.Phase != v1.PhaseSucceeded || got.Status.IP != "10.0.0.9" {
		t.Errorf("node-owned fields not merged: phase %s ip %q", got.Status.Phase, got.Status.IP)
	}
}

// TestWorkerReportsAgainOnStale: the worker's report, computed from a
// read the scheduler's preemption overtook, is computed again from the
// fresh instance: the stored status has both the node's view (running,
// its IP) and the preemption.
func TestWorkerReportsAgainOnStale(t *testing.T) {
	env := newReportEnv(t)
	ctx := context.Background()
	a := &Agent{cfg: Config{Name: "n1", Client: env.node, Now: time.Now}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	env.padRevisions(t)
	read, err := env.node.GetTenantInstance(ctx, "a", "web")
	if err != nil {
		t.Fatal(err)
	}
	w := newWorker(a, read)
	w.update(read)
	var mu sync.Mutex
	var seen []*v1.Instance
	compute := func(cur *v1.Instance) v1.InstanceStatus {
		mu.Lock()
		seen = append(seen, cur)
		mu.Unlock()
		if len(seen) == 1 {
			env.preempt(t) // between the node's read and its write
		}
		st := cur.Status
		st.IP = "10.0.0.7"
		st.Containers = []v1.ContainerStatus{{Name: "main", State: v1.ContainerRunning}}
		markPreempted(&st)
		return st
	}
	if err := w.report(ctx, read, compute); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[1].Status.Preemption == nil {
		t.Fatalf("report computed %d times; want twice, the second from the preempted version", len(seen))
	}
	got := env.stored(t)
	env.checkSchedulerFields(t, got)
	if got.Status.IP != "10.0.0.7" || len(got.Status.Containers) != 1 {
		t.Errorf("node's view lost: ip %q containers %+v", got.Status.IP, got.Status.Containers)
	}
	if cur := w.current(); cur.Metadata.ResourceVersion != got.Metadata.ResourceVersion {
		t.Errorf("worker holds resourceVersion %s; want the stored %s", cur.Metadata.ResourceVersion, got.Metadata.ResourceVersion)
	}
	// An older version (a late watch event) does not replace a newer one.
	w.observe(read)
	if cur := w.current(); cur.Metadata.ResourceVersion != got.Metadata.ResourceVersion {
		t.Errorf("after a late event of resourceVersion %s the worker holds %s; want %s", read.Metadata.ResourceVersion, cur.Metadata.ResourceVersion, got.Metadata.ResourceVersion)
	}
}
