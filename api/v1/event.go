package v1

import "time"

// Event types: Warning events are the ones an operator should look at.
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

// Event is one step in an instance's life (created, scheduled, started,
// a container exited or restarted, preempted, failed, removed), recorded
// by the control plane from the instance's own changes and kept for a
// retention period (an hour by default). Events are read-only.
type Event struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Metadata.Name is "<instance>.<revision>"; Metadata.Tenant owns it.
	Metadata ObjectMeta `json:"metadata"`
	// Instance is the name of the instance, InstanceUID tells apart
	// instances that reused a name.
	Instance    string `json:"instance"`
	InstanceUID string `json:"instanceUID,omitempty"`
	// Type is Normal or Warning.
	Type string `json:"type"`
	// Reason is a CamelCase word: Created, FailedScheduling, Scheduled,
	// Creating, ShimLost, Started, Exited, Restarted, Preempting,
	// Completed, Failed, Stopping, Removed, Suspending, Suspended,
	// SuspendFailed, Resuming, Resumed, ResumeFailed.
	Reason  string `json:"reason"`
	Message string `json:"message"`
	// Time the change was recorded in the store.
	Time time.Time `json:"time"`
	Node string    `json:"node,omitempty"`
	// Container names the container of a container event.
	Container string `json:"container,omitempty"`
	// The outcome of the container's last run, and its restarts so far:
	// on container events, and on Failed and Completed (the container
	// that decided the outcome).
	ExitCode     *int `json:"exitCode,omitempty"`
	Signal       int  `json:"signal,omitempty"`
	OOMKilled    bool `json:"oomKilled,omitempty"`
	RestartCount int  `json:"restartCount,omitempty"`
}

func (e *Event) Meta() *ObjectMeta { return &e.Metadata }
