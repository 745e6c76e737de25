package controller

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	v1 "github.com/cube-platform/cube/api/v1"
)

// step returns a copy of in with its status changed by fn.
func step(in *v1.Instance, fn func(*v1.InstanceStatus)) *v1.Instance {
	cp := *in
	cp.Status.Containers = append([]v1.ContainerStatus(nil), in.Status.Containers...)
	fn(&cp.Status)
	return &cp
}

func reasons(evs []v1.Event) string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type+"/"+e.Reason)
	}
	return strings.Join(out, ",")
}

func TestInstanceEvents(t *testing.T) {
	at := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	pending := &v1.Instance{Metadata: v1.ObjectMeta{Name: "web", Tenant: "acme", UID: "u1"},
		Spec:   v1.InstanceSpec{Containers: []v1.Container{{Name: "main", Image: "busybox"}}},
		Status: v1.InstanceStatus{Phase: v1.PhasePending}}
	unschedulable := step(pending, func(s *v1.InstanceStatus) { s.Reason, s.Message = "Unschedulable", "0/1 nodes: 1 insufficient cpu" })
	scheduled := step(pending, func(s *v1.InstanceStatus) { s.Phase, s.Node = v1.PhaseScheduled, "n1" })
	creating := step(scheduled, func(s *v1.InstanceStatus) { s.Phase = v1.PhaseCreating })
	finished := at.Add(time.Minute)
	running := step(creating, func(s *v1.InstanceStatus) {
		s.Phase, s.IP = v1.PhaseRunning, "10.0.0.2"
		s.Containers = []v1.ContainerStatus{{Name: "main", State: v1.ContainerRunning}}
	})
	exited := step(running, func(s *v1.InstanceStatus) {
		s.Containers[0] = v1.ContainerStatus{Name: "main", State: v1.ContainerTerminated, ExitCode: 137, Signal: 9, OOMKilled: true, FinishedAt: &finished}
	})
	restarted := step(exited, func(s *v1.InstanceStatus) {
		s.Containers[0] = v1.ContainerStatus{Name: "main", State: v1.ContainerRunning, RestartCount: 1,
			LastExit: &v1.ContainerExit{ExitCode: 137, Signal: 9, OOMKilled: true, Reason: "OOMKilled", FinishedAt: finished}}
	})
	finishedAgain := finished.Add(time.Second)
	exitedAgain := step(restarted, func(s *v1.InstanceStatus) {
		s.Containers[0].State, s.Containers[0].ExitCode, s.Containers[0].FinishedAt = v1.ContainerTerminated, 0, &finishedAgain
	})
	failed := step(exited, func(s *v1.InstanceStatus) {
		s.Phase, s.Reason, s.Message = v1.PhaseFailed, "OOMKilled", "container main ran out of memory"
	})
	succeeded := step(running, func(s *v1.InstanceStatus) {
		s.Phase = v1.PhaseSucceeded
		s.Containers[0] = v1.ContainerStatus{Name: "main", State: v1.ContainerTerminated, FinishedAt: &finished}
	})
	shimLost := step(running, func(s *v1.InstanceStatus) {
		s.Phase, s.Reason, s.Message = v1.PhaseCreating, "ShimLost", "the instance's shim stopped"
	})
	preempted := step(running, func(s *v1.InstanceStatus) {
		s.Preemption = &v1.Preemption{By: "acme/big", Message: "preempted by acme/big (production)", At: at}
	})
	deleting := *running
	deleting.Metadata.DeletionTimestamp = &at
	suspending := step(running, func(*v1.InstanceStatus) {})
	suspending.Spec.Suspend = true
	suspended := step(suspending, func(s *v1.InstanceStatus) { s.Phase, s.SuspendedAt = v1.PhaseSuspended, &at })
	suspendFailed := step(suspending, func(s *v1.InstanceStatus) { s.Reason, s.Message = v1.ReasonSuspendFailed, "migrate: disk full" })
	resuming := step(suspended, func(*v1.InstanceStatus) {})
	resuming.Spec.Suspend = false
	resumeFailed := step(resuming, func(s *v1.InstanceStatus) { s.Reason, s.Message = v1.ReasonResumeFailed, "restore: bad state" })
	resumed := step(resuming, func(s *v1.InstanceStatus) { s.Phase, s.SuspendedAt, s.ResumedAt = v1.PhaseRunning, nil, &at })
	startedCold := step(creating, func(s *v1.InstanceStatus) {
		s.Phase, s.VMBoot, s.VMBootWarning = v1.PhaseRunning, "cold", "the node's template for this VM size could not be cloned; it booted cold"
		s.Containers = []v1.ContainerStatus{{Name: "main", State: v1.ContainerRunning}}
	})
	startedTemplate := step(running, func(s *v1.InstanceStatus) { s.VMBoot = "template" })

	tests := []struct {
		name      string
		prev, cur *v1.Instance
		want      string
	}{
		{"created", nil, pending, "Normal/Created"},
		{"unschedulable", pending, unschedulable, "Warning/FailedScheduling"},
		{"same reason again", unschedulable, step(unschedulable, func(*v1.InstanceStatus) {}), ""},
		{"scheduled", unschedulable, scheduled, "Normal/Scheduled"},
		{"creating", scheduled, creating, "Normal/Creating"},
		{"started", creating, running, "Normal/Started"},
		{"exited", running, exited, "Warning/Exited"},
		{"restarted", exited, restarted, "Normal/Restarted"},
		{"exit and restart seen at once", running, restarted, "Warning/Exited,Normal/Restarted"},
		{"exit, restart and exit seen at once", running, exitedAgain, "Warning/Exited,Normal/Restarted,Normal/Exited"},
		{"restart and exit seen at once", exited, exitedAgain, "Normal/Restarted,Normal/Exited"},
		{"failed", exited, failed, "Warning/Failed"},
		{"exit and failure at once", running, failed, "Warning/Exited,Warning/Failed"},
		{"start and exit at once", creating, exited, "Normal/Started,Warning/Exited"},
		{"succeeded", running, succeeded, "Normal/Exited,Normal/Completed"},
		{"shim lost", running, shimLost, "Warning/ShimLost"},
		{"preempted", running, preempted, "Warning/Preempting"},
		{"stopping", running, &deleting, "Normal/Stopping"},
		{"removed", &deleting, nil, "Normal/Removed"},
		{"restored while running", nil, running, "Normal/Created,Normal/Started"},
		{"suspend requested", running, suspending, "Normal/Suspending"},
		{"suspended", suspending, suspended, "Normal/Suspended"},
		{"suspend failed", suspending, suspendFailed, "Warning/SuspendFailed"},
		{"suspended after a failure", suspendFailed, suspended, "Normal/Suspended"},
		{"resume requested", suspended, resuming, "Normal/Resuming"},
		{"resume failed", resuming, resumeFailed, "Warning/ResumeFailed"},
		{"resumed, not started", resuming, resumed, "Normal/Resumed"},
		{"suspended and resumed between two looks", running, resumed, ""},
		{"template fallback", creating, startedCold, "Warning/TemplateFallback,Normal/Started"},
		{"same fallback again", startedCold, step(startedCold, func(*v1.InstanceStatus) {}), ""},
		{"from a template", running, startedTemplate, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs := InstanceEvents(tt.prev, tt.cur, at)
			if got := reasons(evs); got != tt.want {
				t.Fatalf("events %q; want %q", got, tt.want)
			}
			for _, e := range evs {
				if e.Instance != "web" || e.Metadata.Tenant != "acme" || e.InstanceUID != "u1" || !e.Time.Equal(at) || e.Message == "" {
					t.Errorf("event %+v; want instance acme/web u1 at %s with a message", e, at)
				}
			}
		})
	}

	e := InstanceEvents(running, exited, at)[0]
	if e.Container != "main" || e.ExitCode == nil || *e.ExitCode != 137 || e.Signal != 9 || !e.OOMKilled ||
		e.Message != "container main exited with code 137 (signal 9), killed for running out of memory" {
		t.Errorf("exit event %+v; want container main, code 137, signal 9, OOM, and all of it in the message", e)
	}
	f := InstanceEvents(exited, failed, at)[0]
	if f.Container != "main" || f.ExitCode == nil || *f.ExitCode != 137 || !f.OOMKilled || f.Message != "OOMKilled: container main ran out of memory" {
		t.Errorf("failed event %+v; want the deciding container's outcome", f)
	}
	if r := InstanceEvents(exited, restarted, at)[0]; r.RestartCount != 1 || r.ExitCode == nil || *r.ExitCode != 137 || !r.OOMKilled {
		t.Errorf("restart event %+v; want restart count 1 and the last run's exit code 137, OOM-killed", r)
	}
	if e := InstanceEvents(running, restarted, at)[0]; e.Reason != "Exited" || e.ExitCode == nil || *e.ExitCode != 137 ||
		e.Message != "container main exited with code 137 (signal 9), killed for running out of memory" {
		t.Errorf("exit learnt from lastExit: %+v; want code 137 with signal and OOM", e)
	}
}

// eventsOf lists the recorded events of tenant/name in key order.
func eventsOf(t *testing.T, r *EventRecorder, tenant, name string) []*v1.Event {
	t.Helper()
	evs, _, err := r.Store.Events().List(context.Background(), r.Store.Events().Prefix(tenant, name))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestEventRecorderResumesWithoutLossOrDuplicates(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	insts := st.Instances()
	key := insts.Key("acme", "web")
	in := &v1.Instance{Metadata: v1.ObjectMeta{Name: "web", Tenant: "acme", UID: "u1"},
		Spec:   v1.InstanceSpec{Containers: []v1.Container{{Name: "main", Image: "busybox"}}},
		Status: v1.InstanceStatus{Phase: v1.PhasePending}}
	mutate := func(fn func(*v1.InstanceStatus)) {
		t.Helper()
		if _, err := insts.Mutate(ctx, key, func(in *v1.Instance) error { fn(&in.Status); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	run := func(id string) (*EventRecorder, func()) {
		r := &EventRecorder{Store: st, Log: quiet(), Identity: id, Retention: time.Minute}
		rctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = r.Run(rctx) })
		return r, func() { cancel(); wg.Wait() }
	}
	waitFor := func(r *EventRecorder, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		var got string
		for time.Now().Before(deadline) {
			var rs []string
			for _, e := range eventsOf(t, r, "acme", "web") {
				rs = append(rs, e.Reason)
			}
			if got = strings.Join(rs, ","); got == want {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("recorded %q; want %q", got, want)
	}

	r, stop := run("a")
	// The recorder records changes after it first started: wait until it
	// leads and has written its progress.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp, _ := st.Client().Get(ctx, EventsElectionKey, clientv3.WithPrefix()); resp != nil && len(resp.Kvs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the recorder never led")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // its watch is open
	if err := insts.Create(ctx, key, in); err != nil {
		t.Fatal(err)
	}
	mutate(func(s *v1.InstanceStatus) { s.Phase, s.Node = v1.PhaseScheduled, "n1" })
	waitFor(r, "Created,Scheduled")
	stop()

	// Changes while no recorder runs are recorded by the next one.
	mutate(func(s *v1.InstanceStatus) { s.Phase = v1.PhaseCreating })
	mutate(func(s *v1.InstanceStatus) {
		s.Phase, s.IP = v1.PhaseRunning, "10.0.0.2"
		s.Containers = []v1.ContainerStatus{{Name: "main", State: v1.ContainerRunning}}
	})
	r2, stop2 := run("b")
	defer stop2()
	waitFor(r2, "Created,Scheduled,Creating,Started")
	if err := insts.Delete(ctx, key, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(r2, "Created,Scheduled,Creating,Started,Removed")

	evs := eventsOf(t, r2, "acme", "web")
	for i, e := range evs {
		if !strings.HasPrefix(e.Metadata.Name, "web.") || (i > 0 && e.Metadata.Name <= evs[i-1].Metadata.Name) {
			t.Errorf("event names %q after %q; want web.<revision> in increasing order", e.Metadata.Name, evs[max(i-1, 0)].Metadata.Name)
		}
	}
	resp, err := st.Client().Get(ctx, st.Events().Key("acme", "web")+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		ttl, err := st.Client().TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil || kv.Lease == 0 || ttl.TTL <= 0 || ttl.TTL > int64((time.Minute+5*time.Minute).Seconds()) {
			t.Errorf("event %s: lease %x ttl %v, %v; want a lease expiring within retention + 5m", kv.Key, kv.Lease, ttl, err)
		}
	}
}
