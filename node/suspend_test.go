package node

import (
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/shim"
)

// TestSuspendedShimOf: the shim replacing a suspended instance's lost one
// counts no restart (nothing ran again), keeps what ended for good, and
// keeps the network if it fails.
func TestSuspendedShimOf(t *testing.T) {
	in := &v1.Instance{Spec: v1.InstanceSpec{RestartPolicy: v1.RestartNever}, Status: v1.InstanceStatus{Phase: v1.PhaseSuspended,
		Containers: []v1.ContainerStatus{
			{Name: "app", State: v1.ContainerRunning, RestartCount: 2},
			{Name: "setup", State: v1.ContainerTerminated, ExitCode: 0},
		}}}
	l := suspendedShimOf(in)
	if l.restarts["app"] != 2 || !l.keepNetwork {
		t.Errorf("restarts %v, keepNetwork %v; want app's 2 unchanged and the network kept", l.restarts, l.keepNetwork)
	}
	if _, ended := l.exited["setup"]; !ended {
		t.Errorf("setup, ended for good, is not carried over: %v", l.exited)
	}
	if lostShimOf(in).restarts["app"] != 3 {
		t.Error("lostShimOf no longer counts the loss of a running instance's shim as a restart")
	}
}

// TestSuspensionTimes: the status keeps the first suspendedAt across a
// new shim, and a resume adds the suspension to suspendedTotal.
func TestSuspensionTimes(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	running := v1.InstanceStatus{Phase: v1.PhaseRunning, RunningAt: &t0}
	susp := shim.State{Phase: shim.PhaseSuspended, SuspendedAt: t0.Add(time.Minute)}
	s1 := statusFromShim(running, susp, "10.0.0.2", t0.Add(61*time.Second))
	if s1.Phase != v1.PhaseSuspended || s1.SuspendedAt == nil || !s1.SuspendedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("suspended status %+v; want suspendedAt the shim's time", s1)
	}
	// A new shim after the old one died knows no time: the first stays.
	s2 := statusFromShim(s1, shim.State{Phase: shim.PhaseSuspended}, "10.0.0.2", t0.Add(5*time.Minute))
	if !s2.SuspendedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("suspendedAt after a new shim = %v; want the first", s2.SuspendedAt)
	}
	s3 := statusFromShim(s2, shim.State{Phase: shim.PhaseRunning, ResumedAt: t0.Add(11 * time.Minute)}, "10.0.0.2", t0.Add(12*time.Minute))
	if s3.SuspendedAt != nil || s3.ResumedAt == nil || !s3.ResumedAt.Equal(t0.Add(11*time.Minute)) || s3.SuspendedTotal != "10m0s" {
		t.Fatalf("resumed status %+v; want suspendedAt cleared, resumedAt the shim's, 10m suspended", s3)
	}
	s4 := statusFromShim(statusFromShim(s3, susp, "", t0.Add(20*time.Minute)), shim.State{Phase: shim.PhaseRunning}, "", t0.Add(25*time.Minute))
	// A shim time older than the last resume is not this suspension's:
	// it began when the node saw it (t0+20m), and lasted 5m.
	if s4.SuspendedTotal != "15m0s" || s4.ResumedAt == nil || !s4.ResumedAt.Equal(t0.Add(25*time.Minute)) {
		t.Errorf("second resume %+v; want 15m suspended in all and resumedAt the node's time", s4)
	}
	if got := s3.RunningTime(t0.Add(12 * time.Minute)); got != 2*time.Minute {
		t.Errorf("RunningTime after a 10m suspension in 12m = %s; want 2m", got)
	}
}
