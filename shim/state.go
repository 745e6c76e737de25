package shim

import (
	"time"

	"fmt"

	"github.com/cube-platform/cube/sandbox"
)

// Instance phases.
const (
	PhaseCreating  = "Creating"  // the sandbox or some container has not started yet
	PhaseRunning   = "Running"   // some container runs or will be restarted
	PhaseSuspended = "Suspended" // the sandbox is saved to disk and runs nothing (sandbox.Suspender)
	PhaseSucceeded = "Succeeded" // all exited 0 and none will restart
	PhaseFailed    = "Failed"    // none will restart and some failed
)

// Reasons, for an instance or a container.
const (
	ReasonContainerCreating   = "ContainerCreating"   // not started yet
	ReasonCompleted           = "Completed"           // exited 0
	ReasonError               = "Error"               // exited non-zero
	ReasonOOMKilled           = "OOMKilled"           // the OOM killer struck in its cgroup
	ReasonStartError          = "StartError"          // runc could not start the command (exit 126/127/128)
	ReasonCrashLoopBackOff    = "CrashLoopBackOff"    // exited, waiting to be restarted
	ReasonSandboxCreateFailed = "SandboxCreateFailed" // the sandbox itself could not be made
)

// State is the instance as the shim sees it. Version grows on every change.
type State struct {
	Version    uint64            `json:"version"`
	Phase      string            `json:"phase"`
	Reason     string            `json:"reason,omitempty"`
	Message    string            `json:"message,omitempty"`
	Containers []ContainerStatus `json:"containers"`
	// SuspendedAt is when this shim suspended the sandbox, while it is
	// suspended (zero when a shim before it did).
	SuspendedAt time.Time `json:"suspendedAt,omitzero"`
	// ResumedAt is when this shim last resumed it (zero: never).
	ResumedAt time.Time `json:"resumedAt,omitzero"`
}

// ContainerStatus is one container's backend state plus supervision facts.
type ContainerStatus struct {
	sandbox.ContainerState
	// RestartCount counts restarts done by the restart policy.
	RestartCount int `json:"restartCount"`
	// Reason is one of the Reason constants ("" while running).
	Reason string `json:"reason,omitempty"`
	// Message explains a failure (runc's error for a StartError).
	Message string `json:"message,omitempty"`
	// WillRestart is set while the container waits out its back-off.
	WillRestart bool `json:"willRestart,omitempty"`
	// LastExit is how the run before the current one ended, once the
	// container was restarted: a watcher that missed the exit learns it here.
	LastExit *Exit `json:"lastExit,omitempty"`
}

// Exit is how one run of a container ended.
type Exit struct {
	ExitCode   int       `json:"exitCode"`
	Signal     int       `json:"signal,omitempty"`
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	FinishedAt time.Time `json:"finishedAt"`
}

// RestartsAgain tells whether a container that exited with exitCode after
// restarts restarts is started again under policy and maxRestarts (0: no
// bound).
func RestartsAgain(policy string, exitCode, restarts, maxRestarts int) bool {
	return shouldRestart(policy, exitCode) && (maxRestarts == 0 || restarts < maxRestarts)
}

// shouldRestart applies a restart policy to an exit code.
func shouldRestart(policy string, exitCode int) bool {
	switch policy {
	case RestartAlways:
		return true
	case RestartOnFailure:
		return exitCode != 0
	default:
		return false
	}
}

// terminationReason says why a container's run ended.
func terminationReason(st sandbox.ContainerState, startErr bool) string {
	switch {
	case startErr:
		return ReasonStartError
	case st.Reason != "":
		return st.Reason // its sandbox ended under it (a VM died)
	case st.OOMKilled:
		return ReasonOOMKilled
	case st.ExitCode != 0:
		return ReasonError
	default:
		return ReasonCompleted
	}
}

// derivePhase computes the instance phase from its containers. createErr is
// the sandbox creation failure, if any; stopped tells that Stop was called
// (containers never started then no longer hold the instance in Creating).
func derivePhase(createErr string, stopped bool, cs []ContainerStatus) (phase, reason, message string) {
	if createErr != "" {
		return PhaseFailed, ReasonSandboxCreateFailed, createErr
	}
	running, pending := false, false
	for _, c := range cs {
		switch {
		case c.Reason == ReasonContainerCreating:
			pending = pending || !stopped
		case c.Phase == sandbox.PhaseRunning || c.WillRestart:
			running = true
		}
	}
	if pending {
		return PhaseCreating, "", ""
	}
	if running {
		return PhaseRunning, "", ""
	}
	var failed *ContainerStatus
	for i, c := range cs {
		if c.Phase == sandbox.PhaseExited && c.ExitCode != 0 {
			if failed == nil || c.OOMKilled && !failed.OOMKilled {
				failed = &cs[i]
			}
		}
	}
	if failed == nil {
		return PhaseSucceeded, ReasonCompleted, ""
	}
	message = fmt.Sprintf("container %s exited with code %d", failed.Name, failed.ExitCode)
	if failed.Message != "" {
		message += ": " + failed.Message
	}
	reason = failed.Reason
	if reason == ReasonCrashLoopBackOff || reason == "" {
		reason = ReasonError
	}
	for _, c := range cs {
		if c.OOMKilled {
			reason = ReasonOOMKilled
		}
	}
	return PhaseFailed, reason, message
}
