package shim

import (
	"testing"

	"github.com/cube-platform/cube/sandbox"
)

func TestDerivePhase(t *testing.T) {
	creating := ContainerStatus{ContainerState: sandbox.ContainerState{Name: "a", Phase: sandbox.PhaseCreated}, Reason: ReasonContainerCreating}
	running := ContainerStatus{ContainerState: sandbox.ContainerState{Name: "a", Phase: sandbox.PhaseRunning}}
	ok := ContainerStatus{ContainerState: sandbox.ContainerState{Name: "b", Phase: sandbox.PhaseExited}, Reason: ReasonCompleted}
	failed := ContainerStatus{ContainerState: sandbox.ContainerState{Name: "c", Phase: sandbox.PhaseExited, ExitCode: 2}, Reason: ReasonError}
	oom := ContainerStatus{ContainerState: sandbox.ContainerState{Name: "d", Phase: sandbox.PhaseExited, ExitCode: 137, OOMKilled: true}, Reason: ReasonOOMKilled}
	backoff := failed
	backoff.Reason, backoff.WillRestart = ReasonCrashLoopBackOff, true
	vmDied := ContainerStatus{ContainerState: sandbox.ContainerState{Name: "f", Phase: sandbox.PhaseExited, ExitCode: 137, Reason: sandbox.ReasonGuestPanic}}
	vmDied.Reason = terminationReason(vmDied.ContainerState, false)
	startErr := ContainerStatus{ContainerState: sandbox.ContainerState{Name: "e", Phase: sandbox.PhaseExited, ExitCode: 127}, Reason: ReasonStartError, Message: "exec: not found"}

	tests := []struct {
		name       string
		createErr  string
		stopped    bool
		cs         []ContainerStatus
		wantPhase  string
		wantReason string
	}{
		{"sandbox failed", "boom", false, []ContainerStatus{creating}, PhaseFailed, ReasonSandboxCreateFailed},
		{"not all started", "", false, []ContainerStatus{running, creating}, PhaseCreating, ""},
		{"stopped before start", "", true, []ContainerStatus{ok, creating}, PhaseSucceeded, ReasonCompleted},
		{"one running", "", false, []ContainerStatus{running, failed}, PhaseRunning, ""},
		{"restarting", "", false, []ContainerStatus{ok, backoff}, PhaseRunning, ""},
		{"all ok", "", false, []ContainerStatus{ok, ok}, PhaseSucceeded, ReasonCompleted},
		{"one failed", "", false, []ContainerStatus{ok, failed}, PhaseFailed, ReasonError},
		{"oom wins", "", false, []ContainerStatus{failed, oom}, PhaseFailed, ReasonOOMKilled},
		{"start error", "", false, []ContainerStatus{startErr}, PhaseFailed, ReasonStartError},
		{"vm died", "", false, []ContainerStatus{ok, vmDied}, PhaseFailed, sandbox.ReasonGuestPanic},
	}
	for _, tt := range tests {
		phase, reason, _ := derivePhase(tt.createErr, tt.stopped, tt.cs)
		if phase != tt.wantPhase || reason != tt.wantReason {
			t.Errorf("%s: derivePhase = %s, %s; want %s, %s", tt.name, phase, reason, tt.wantPhase, tt.wantReason)
		}
	}
}

func TestShouldRestart(t *testing.T) {
	tests := []struct {
		policy string
		code   int
		want   bool
	}{
		{RestartAlways, 0, true}, {RestartAlways, 1, true},
		{RestartOnFailure, 0, false}, {RestartOnFailure, 137, true},
		{RestartNever, 1, false},
	}
	for _, tt := range tests {
		if got := shouldRestart(tt.policy, tt.code); got != tt.want {
			t.Errorf("shouldRestart(%s, %d) = %v; want %v", tt.policy, tt.code, got, tt.want)
		}
	}
}

func TestFilesFor(t *testing.T) {
	got := FilesFor("/run/cube/i1/shim.sock")
	want := Files{Config: "/run/cube/i1/shim.json", Pid: "/run/cube/i1/shim.pid", Log: "/run/cube/i1/shim.log"}
	if got != want {
		t.Errorf("FilesFor = %+v; want %+v", got, want)
	}
}
