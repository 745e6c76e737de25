// Package sandbox defines the isolation boundary of one instance: a Sandbox
// holds every container of the instance and the namespaces (runc) or VM
// (microvm) they share. Backends live in subpackages (sandbox/runc, later
// sandbox/microvm/...). The package must not depend on the control plane,
// the store or the node agent: the shim drives a Sandbox and nothing else does.
package sandbox

import (
	"context"
	"io"
	"time"

	"github.com/cube-platform/cube/internal/stream"
)

// Spec describes one instance's sandbox and all its containers.
type Spec struct {
	// ID names the sandbox on this host; safe as a file name and cgroup
	// component (letters, digits, '-'), unique per instance incarnation.
	ID string `json:"id"`
	// Hostname is set in the sandbox's UTS namespace (the instance name).
	Hostname string `json:"hostname"`
	// NetNS is the path of a pinned network namespace prepared by the node
	// (network package) that all containers join. Empty: a fresh, unconnected one.
	NetNS string `json:"netns,omitempty"`
	// StateDir is private to the backend (bundles, pinned ipc/uts, the
	// writable layer).
	StateDir string `json:"stateDir"`
	// CgroupParent is the cgroup path under which each container gets its own
	// cgroup, e.g. "/cube/<id>".
	CgroupParent string `json:"cgroupParent"`
	// PidsLimit caps the processes and threads of the whole sandbox: all
	// its containers and execs together (a fork bomb stops there). 0: the
	// backend's default.
	PidsLimit int64 `json:"pidsLimit,omitempty"`
	// DiskBytes bounds the sandbox's writable layer: all its containers'
	// writes share it, and a write past it fails with ENOSPC. 0: the
	// backend's default.
	DiskBytes int64 `json:"diskBytes,omitempty"`
	// CacheDir is a node-wide directory, shared by every sandbox of the
	// node, where the backend may keep files it only ever copies, such as
	// an empty filesystem image for the writable layer. Empty: none; the
	// backend makes each from scratch.
	CacheDir string `json:"cacheDir,omitempty"`
	// Containers of the instance, started in order.
	Containers []ContainerSpec `json:"containers"`
}

// ContainerSpec is one process tree in the sandbox.
type ContainerSpec struct {
	Name string `json:"name"`
	// RootFS is the shared, read-only unpacked image; the backend adds a
	// private writable layer (overlayfs) on top of it.
	RootFS string `json:"rootfs"`
	// Args is the full argv (image entrypoint/cmd already resolved).
	Args       []string `json:"args"`
	Env        []string `json:"env,omitempty"` // KEY=VALUE
	WorkingDir string   `json:"workingDir,omitempty"`
	// User is "uid[:gid]" (numeric); empty means root.
	User string `json:"user,omitempty"`
	// MilliCPU is the cpu limit in thousandths of a core (0: unlimited).
	MilliCPU int64 `json:"milliCPU,omitempty"`
	// MemoryBytes is the hard memory limit (0: unlimited); exceeding it
	// gets the container OOM-killed and reported as such.
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
}

// Phase of one container.
type Phase string

const (
	PhaseCreated Phase = "created"
	PhaseRunning Phase = "running"
	PhaseExited  Phase = "exited"
)

// ContainerState is what the backend knows about one container.
type ContainerState struct {
	Name       string    `json:"name"`
	Phase      Phase     `json:"phase"`
	Pid        int       `json:"pid,omitempty"`
	ExitCode   int       `json:"exitCode"`
	Signal     int       `json:"signal,omitempty"`
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Stdio carries a container's or exec's standard streams. Nil fields are
// /dev/null.
type Stdio struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// ExecSpec is a process started inside a running container.
type ExecSpec struct {
	Args []string
	Env  []string
	TTY  bool
	// Resize delivers terminal size changes when TTY is set (may be nil).
	Resize <-chan WindowSize
}

// WindowSize of a terminal.
type WindowSize = stream.WindowSize

// Sandbox is one instance's isolation unit. Implementations are safe for
// concurrent use.
type Sandbox interface {
	// Create prepares the shared namespaces and every container's rootfs.
	// It is idempotent for the same Spec.
	Create(ctx context.Context) error
	// Start starts (or restarts, after it exited) one container; its stdout
	// and stderr go to the given writers until it exits.
	Start(ctx context.Context, name string, stdio Stdio) error
	// Wait blocks until the named container exits and returns its final state.
	Wait(ctx context.Context, name string) (ContainerState, error)
	// Exec runs a process in a running container and returns its exit code.
	Exec(ctx context.Context, name string, spec ExecSpec, stdio Stdio) (int, error)
	// Stop sends SIGTERM, then SIGKILL after grace, and waits for the exit.
	Stop(ctx context.Context, name string, grace time.Duration) error
	// State reports every container.
	State(ctx context.Context) ([]ContainerState, error)
	// Destroy stops everything and removes every trace on the host:
	// processes, mounts, cgroups, pinned namespaces, state files.
	Destroy(ctx context.Context) error
}
