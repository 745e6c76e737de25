// Package sandbox defines the isolation boundary of one instance: a Sandbox
// holds every container of the instance and the namespaces (runc) or VM
// (microvm) they share. Backends live in subpackages (sandbox/runc, later
// sandbox/microvm/...). The package must not depend on the control plane,
// the store or the node agent: the shim drives a Sandbox and nothing else does.
package sandbox

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cube-platform/cube/errdefs"
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
	// WritableLayer is the file that holds the sandbox's writable layer:
	// a sparse filesystem image of DiskBytes that the backend makes when
	// it is missing and keeps when it is there (a restarted shim finds
	// the files its containers wrote). Empty: <StateDir>/disk.img.
	WritableLayer string `json:"writableLayer,omitempty"`
	// VCPUs and MemoryBytes size the sandbox as a whole: a VM's virtual
	// CPUs and guest memory. 0: the backend derives them from the
	// containers (see microvm). Namespace backends ignore them; the
	// containers' own limits still apply.
	VCPUs       int   `json:"vcpus,omitempty"`
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
	// Containers of the instance, started in order.
	Containers []ContainerSpec `json:"containers"`
}

// MilliCPU is the CPU the sandbox asked for, in thousandths of a core:
// its containers' limits added up, a container without one counted as a
// whole core. It sizes a VM's vCPUs and weighs the sandbox against the
// others on the node (see cpuweight).
func (s Spec) MilliCPU() int64 {
	var milli int64
	for _, c := range s.Containers {
		milli += cmp.Or(c.MilliCPU, 1000)
	}
	return milli
}

// RootFS describes a container's read-only image: an unpacked directory,
// or a block image holding a filesystem (a VM attaches it as a read-only
// drive; a namespace backend would loop-mount it). A backend runs one of
// them: runc Dir, microvm Image, which may come with Dir, the same image
// unpacked, for the host to read from (its /etc/passwd).
type RootFS struct {
	// Dir is the shared unpacked image, an absolute path.
	Dir string `json:"dir,omitempty"`
	// Image is a read-only block image file, shared by every sandbox of
	// the node, with FSType its filesystem ("erofs" or "ext4").
	Image  string `json:"image,omitempty"`
	FSType string `json:"fsType,omitempty"`
}

// Interface is the network interface the node made for the sandbox in
// Spec.NetNS (by CNI), as a VM's guest must repeat it: the guest takes
// the same MAC and address, so the node's packet filter and port
// publishing see one instance whatever the backend.
type Interface struct {
	// Name of the interface in the namespace, e.g. "eth0".
	Name string `json:"name"`
	// MAC is the interface's hardware address (aa:bb:cc:dd:ee:ff).
	MAC string `json:"mac"`
	// Address is the IPv4 address with its prefix, e.g. "10.88.0.5/16".
	Address string `json:"address"`
	// Gateway is the default route's next hop ("" for none).
	Gateway string `json:"gateway,omitempty"`
	// Routes beyond the default one.
	Routes []Route `json:"routes,omitempty"`
	// MTU of the link (0: 1500).
	MTU int `json:"mtu,omitempty"`
	// DNS for the containers' /etc/resolv.conf.
	DNS DNS `json:"dns,omitzero"`
}

// Route is one IPv4 route: Dst in CIDR form, through Via ("" for on-link).
type Route struct {
	Dst string `json:"dst"`
	Via string `json:"via,omitempty"`
}

// DNS settings of a sandbox.
type DNS struct {
	Nameservers []string `json:"nameservers,omitempty"`
	Search      []string `json:"search,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// ContainerSpec is one process tree in the sandbox.
type ContainerSpec struct {
	Name string `json:"name"`
	// RootFS is the shared, read-only image; the backend adds a private
	// writable layer (overlayfs) on top of it.
	RootFS RootFS `json:"rootfs"`
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
	Name      string `json:"name"`
	Phase     Phase  `json:"phase"`
	Pid       int    `json:"pid,omitempty"`
	ExitCode  int    `json:"exitCode"`
	Signal    int    `json:"signal,omitempty"`
	OOMKilled bool   `json:"oomKilled,omitempty"`
	// Reason is set when the container ended because its sandbox did,
	// not by itself: ReasonVMMExited or ReasonGuestPanic. The next Start
	// brings the sandbox back.
	Reason     string    `json:"reason,omitempty"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Reasons a container ended with its sandbox (ContainerState.Reason).
const (
	// ReasonVMMExited: the VM's monitor process died (killed, crashed).
	ReasonVMMExited = "VMMExited"
	// ReasonGuestPanic: the guest kernel panicked.
	ReasonGuestPanic = "GuestPanic"
)

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
// concurrent use. The contract below holds for every backend;
// sandbox/sandboxtest checks it.
//
// A sandbox belongs to one process (the shim). When that process dies
// without Destroy (SIGKILL, a crash), its containers may die with it or
// not; either way, the next Create for the same Spec, in a new process,
// removes what the dead one left (processes, VMs, mounts, devices) except
// the writable layer, and the sandbox runs again from there.
type Sandbox interface {
	// Create prepares the shared namespaces (or boots the VM) and every
	// container's rootfs, and cleans up what a previous owner of the same
	// Spec left behind (see above). No container's command runs until
	// Start. It is idempotent for the same Spec.
	Create(ctx context.Context) error
	// Connect gives the sandbox the interface the node made in Spec.NetNS.
	// The node calls it once, after Create and before the first Start,
	// when NetNS is set. A namespace backend has nothing to do (its
	// containers join NetNS); a VM backend joins the interface to its
	// guest and configures the guest to match it.
	Connect(ctx context.Context, iface Interface) error
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
	// processes, mounts, cgroups, pinned namespaces, state files (the
	// writable layer too). It is idempotent.
	Destroy(ctx context.Context) error
}

// Suspender is a Sandbox whose whole state can be saved to disk, freeing
// its memory and CPU, and restored later: by this process, or by a new one
// built from the same Spec after this one died (SIGKILL included). A
// backend that cannot (runc) does not implement it; the shim refuses to
// suspend it.
type Suspender interface {
	Sandbox
	// Suspend freezes every container and saves the sandbox under
	// Spec.StateDir; nothing of it runs afterwards and it holds no guest
	// memory. Containers keep their phase: a running container is still
	// PhaseRunning, and a Wait on it keeps waiting (it does not return an
	// exit). Suspending a suspended sandbox is a no-op. On error the
	// sandbox is either still running as before or, if it died, its
	// containers' Waits report the exits (ReasonVMMExited).
	Suspend(ctx context.Context) error
	// Resume continues where Suspend left off, in this process or in a new
	// one whose Create loaded the saved state. Running containers' output
	// goes to stdio(name) from then on; stdio may be nil in the process
	// that suspended, which keeps the writers it had. Wait reports their
	// exits again: the caller adopts them with Wait, never Start. Resume
	// consumes the saved state: once it returned, a Create of the same
	// Spec no longer finds the sandbox suspended. The network interface is
	// the one the sandbox had (the node keeps it attached): Resume joins
	// it again itself; nobody calls Connect. Resuming a running sandbox is
	// a no-op.
	Resume(ctx context.Context, stdio func(container string) Stdio) error
	// Suspended reports whether the sandbox is suspended. Create of a
	// sandbox whose StateDir holds a suspended state loads that state
	// instead of booting: Suspended is then true, State reports the
	// containers as they were (running ones PhaseRunning, with their
	// StartedAt), and nothing runs until Resume. Destroy removes the saved
	// state with everything else.
	Suspended() bool
}

// Options are what a backend gets from its host, beside the Spec.
type Options struct {
	// Logger receives the backend's logs. Default slog.Default().
	Logger *slog.Logger
	// Runc is the runc binary of the runc backend: a path or a name in
	// PATH. Default "runc".
	Runc string `json:"runc,omitempty"`
	// VM configures the microvm backend.
	VM VMOptions `json:"vm,omitzero"`
}

// VMOptions are the host-side parts of a microVM: what boots it and how.
type VMOptions struct {
	// Kernel is the guest kernel (an uncompressed vmlinux, PVH).
	Kernel string `json:"kernel,omitempty"`
	// Initrd is the initramfs whose /init is the guest agent.
	Initrd string `json:"initrd,omitempty"`
	// VMM is the VMM binary, e.g. qemu-system-x86_64.
	VMM string `json:"vmm,omitempty"`
	// Accel is the accelerator, "kvm" or "tcg", as the node probed it.
	Accel string `json:"accel,omitempty"`
	// BootTimeout bounds the boot to agent ready (0: the backend's
	// default for Accel).
	BootTimeout time.Duration `json:"bootTimeout,omitempty"`
	// TemplateDir and TemplateMemFD are the template to clone the VM
	// from instead of booting it (docs/microvm-templates.md): its
	// directory, and its sealed memory as an fd this process holds (the
	// node hands it to the shim). Empty: boot cold.
	TemplateDir   string `json:"templateDir,omitempty"`
	TemplateMemFD int    `json:"templateMemFD,omitempty"`
}

// Factory builds a backend's sandbox for spec. It touches nothing on the
// host; Create does.
type Factory func(spec Spec, opts Options) (Sandbox, error)

// Backends are the sandbox backends a process can build, by name.
type Backends map[string]Factory

// New builds the named backend's sandbox for spec.
func (b Backends) New(name string, spec Spec, opts Options) (Sandbox, error) {
	f, ok := b[name]
	if !ok {
		return nil, fmt.Errorf("sandbox backend %q: %w: this build has %s", name, errdefs.ErrInvalid, strings.Join(b.Names(), ", "))
	}
	return f(spec, opts)
}

// Names lists the backends, sorted.
func (b Backends) Names() []string {
	return slices.Sorted(maps.Keys(b))
}

// Backend names.
const (
	BackendRunc    = "runc"
	BackendMicroVM = "microvm"
)
