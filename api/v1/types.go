// Package v1 holds Cube's wire types (the REST API's JSON), their validation
// and the OpenAPI document generated from them. It does no I/O and depends
// on nothing else in Cube.
package v1

import "time"

// Version is the apiVersion of every object here.
const Version = "v1"

// ObjectMeta is common to every object.
type ObjectMeta struct {
	// Name is unique per tenant (instances, images) or per cluster (nodes).
	Name string `json:"name"`
	// Tenant owns the object; set by the server from the caller's token.
	Tenant string `json:"tenant,omitempty"`
	// UID is unique across time: a re-created name gets a new UID.
	UID string `json:"uid,omitempty"`
	// ResourceVersion changes on every write; send it back on update for
	// optimistic concurrency (409 Conflict when stale).
	ResourceVersion string            `json:"resourceVersion,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	// CreationTimestamp is set by the server.
	CreationTimestamp time.Time `json:"creationTimestamp,omitzero"`
	// DeletionTimestamp is set when deletion was requested and the node is
	// still tearing the instance down.
	DeletionTimestamp *time.Time `json:"deletionTimestamp,omitempty"`
}

// Instance is the unit users run: 1+ containers sharing one sandbox, one IP
// and one lifecycle.
type Instance struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   ObjectMeta     `json:"metadata"`
	Spec       InstanceSpec   `json:"spec"`
	Status     InstanceStatus `json:"status"`
}

// RestartPolicy says when a container that exited is started again.
type RestartPolicy string

const (
	RestartAlways    RestartPolicy = "Always"
	RestartOnFailure RestartPolicy = "OnFailure"
	RestartNever     RestartPolicy = "Never"
)

// InstanceSpec is what the user asks for.
type InstanceSpec struct {
	Containers []Container `json:"containers"`
	// RestartPolicy defaults to Always.
	RestartPolicy RestartPolicy `json:"restartPolicy,omitempty"`
	// MaxRestarts bounds the restarts of each container under OnFailure
	// (Docker's on-failure:N); 0 means no bound.
	MaxRestarts int `json:"maxRestarts,omitempty"`
	// Priority is the band: system, production (default), batch or
	// best-effort. Higher bands are placed first and may preempt lower ones.
	Priority string `json:"priority,omitempty"`
	// NodeSelector must match node labels exactly.
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// Tolerations let the instance land on nodes with matching taints.
	Tolerations []Toleration `json:"tolerations,omitempty"`
	// Service groups replicas: they are spread over nodes and zones.
	Service string `json:"service,omitempty"`
	// MaxPerNode bounds the replicas of Service on one node (0: no bound).
	MaxPerNode int `json:"maxPerNode,omitempty"`
	// Pids caps the processes and threads of the whole instance, all its
	// containers and execs together: a fork bomb stops there. Default
	// 1024, from 16 to 16384.
	Pids int64 `json:"pids,omitempty"`
	// Disk is the size of the instance's writable layer, shared by its
	// containers ("1Gi"); a write past it fails with ENOSPC. Default 1Gi,
	// from 16Mi to 256Gi.
	Disk string `json:"disk,omitempty"`
	// Runtime isolates the instance, like a Kubernetes RuntimeClass:
	// "microvm" runs all its containers in one lightweight VM of their
	// own, "runc" in namespaces of the node's kernel (trusted workloads
	// only). Empty: the tenant's default. Only runtimes granted to the
	// tenant are accepted; a tenant other than admin has microvm alone
	// unless granted runc.
	Runtime string `json:"runtime,omitempty"`
	// Suspend is the desired state of a microvm instance: true asks its
	// node to save the VM to disk and free its memory and CPU (phase
	// Suspended, IP and writable layer kept), false to resume it. It is
	// set by POST /v1/instances/{name}/suspend and /resume (`cube suspend`,
	// `cube resume`), never at creation, and is the only part of a spec
	// that changes.
	Suspend bool `json:"suspend,omitempty"`
}

// Sandbox runtimes.
const (
	RuntimeMicroVM = "microvm"
	RuntimeRunc    = "runc"
)

// Runtimes are every sandbox runtime, in the order of preference.
var Runtimes = []string{RuntimeMicroVM, RuntimeRunc}

// Priority bands, highest first.
const (
	PrioritySystem     = "system"
	PriorityProduction = "production"
	PriorityBatch      = "batch"
	PriorityBestEffort = "best-effort"
)

// Toleration lets an instance land on a node with a matching taint
// (Kubernetes semantics).
type Toleration struct {
	Key string `json:"key,omitempty"`
	// Operator is Equal (default) or Exists.
	Operator string `json:"operator,omitempty"`
	Value    string `json:"value,omitempty"`
	// Effect to tolerate; empty tolerates every effect.
	Effect string `json:"effect,omitempty"`
}

// Taint repels instances that do not tolerate it.
type Taint struct {
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
	// Effect is NoSchedule.
	Effect string `json:"effect"`
}

// Container is one process tree of an instance.
type Container struct {
	// Name defaults to "main" for a single container.
	Name string `json:"name"`
	// Image is a reference the tenant imported or pulled ("busybox",
	// "127.0.0.1:5000/app:v1").
	Image string `json:"image"`
	// ImageDigest is the manifest digest the image resolved to at
	// admission; set by the server.
	ImageDigest string `json:"imageDigest,omitempty"`
	// Command replaces the image's entrypoint.
	Command []string `json:"command,omitempty"`
	// Args replaces the image's cmd.
	Args       []string        `json:"args,omitempty"`
	Env        []EnvVar        `json:"env,omitempty"`
	WorkingDir string          `json:"workingDir,omitempty"`
	Ports      []ContainerPort `json:"ports,omitempty"`
	Resources  Resources       `json:"resources,omitempty"`
}

// EnvVar is one environment variable.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// ContainerPort is a port the container listens on, optionally published
// on the node.
type ContainerPort struct {
	ContainerPort int `json:"containerPort"`
	// HostPort publishes the port on the node (0: not published).
	HostPort int `json:"hostPort,omitempty"`
	// Protocol is "TCP" (default) or "UDP".
	Protocol string `json:"protocol,omitempty"`
}

// Resources are limits, which are also what the scheduler reserves.
type Resources struct {
	// CPU in cores: "0.5", "2", or millicores "500m". Default "1".
	CPU string `json:"cpu,omitempty"`
	// Memory in bytes with an optional unit: "256Mi", "1Gi", "512M".
	// Default "256Mi".
	Memory string `json:"memory,omitempty"`
}

// Phase of an instance.
type Phase string

const (
	PhasePending   Phase = "Pending"
	PhaseScheduled Phase = "Scheduled"
	PhaseCreating  Phase = "Creating"
	PhaseRunning   Phase = "Running"
	// PhaseSuspended: the VM's whole state is saved on its node's disk;
	// nothing runs and nothing is billed until it is resumed.
	PhaseSuspended Phase = "Suspended"
	PhaseSucceeded Phase = "Succeeded"
	PhaseFailed    Phase = "Failed"
)

// Reasons a node gives while a suspend or resume it was asked for fails
// (it keeps trying, with back-off, while spec.suspend asks for it).
const (
	ReasonSuspendFailed = "SuspendFailed"
	ReasonResumeFailed  = "ResumeFailed"
)

// Terminal reports whether nothing will run in this phase again.
func (p Phase) Terminal() bool { return p == PhaseSucceeded || p == PhaseFailed }

// InstanceStatus is what the platform observed.
type InstanceStatus struct {
	Phase Phase `json:"phase,omitempty"`
	// Reason is a CamelCase word (Unschedulable, OOMKilled, Error…).
	Reason string `json:"reason,omitempty"`
	// Message explains Reason to a person.
	Message string `json:"message,omitempty"`
	// Node the instance is bound to.
	Node string `json:"node,omitempty"`
	// IP on the node's instance network.
	IP string `json:"ip,omitempty"`
	// Accelerator runs a microvm instance's VM: "kvm", or "tcg" (QEMU's
	// software emulation, where the node has no usable KVM).
	Accelerator string `json:"accelerator,omitempty"`
	// VMBoot is how a microvm instance's VM last started: "template" (a
	// clone of its node's template for its size) or "cold" (its kernel
	// booted). VMBootWarning says why a VM given a template booted cold.
	VMBoot        string            `json:"vmBoot,omitempty"`
	VMBootWarning string            `json:"vmBootWarning,omitempty"`
	Containers    []ContainerStatus `json:"containers,omitempty"`
	// Timestamps of each phase.
	ScheduledAt *time.Time `json:"scheduledAt,omitempty"`
	CreatingAt  *time.Time `json:"creatingAt,omitempty"`
	RunningAt   *time.Time `json:"runningAt,omitempty"`
	FinishedAt  *time.Time `json:"finishedAt,omitempty"`
	// Suspension times, for metering: an instance runs (and is billed)
	// from runningAt to finishedAt (or now), less suspendedTotal, less
	// now-suspendedAt while it is suspended. Each transition is also an
	// event (Suspended, Resumed) with its time.
	//
	// SuspendedAt is when the current suspension took effect (the VM was
	// saved); set only while the phase is Suspended.
	SuspendedAt *time.Time `json:"suspendedAt,omitempty"`
	// ResumedAt is when the last resume took effect (it ran again).
	ResumedAt *time.Time `json:"resumedAt,omitempty"`
	// SuspendedTotal is the time spent in suspensions that ended, in all,
	// a duration such as "1h2m3.5s" (absent: none).
	SuspendedTotal string `json:"suspendedTotal,omitempty"`
	// Preemption, when set, asks the node to stop the instance gracefully
	// so a higher band can take its place.
	Preemption *Preemption `json:"preemption,omitempty"`
}

// Preemption records why and when an instance was preempted.
type Preemption struct {
	// By names the instance that takes the room when it belongs to the
	// same tenant; it is empty when another tenant's instance does (no
	// tenant learns another's names).
	By      string    `json:"by"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// ContainerState is the state of one container.
type ContainerState string

const (
	ContainerWaiting    ContainerState = "Waiting"
	ContainerRunning    ContainerState = "Running"
	ContainerTerminated ContainerState = "Terminated"
)

// ContainerStatus reports one container.
type ContainerStatus struct {
	Name         string         `json:"name"`
	State        ContainerState `json:"state"`
	ExitCode     int            `json:"exitCode"`
	Signal       int            `json:"signal,omitempty"`
	OOMKilled    bool           `json:"oomKilled,omitempty"`
	RestartCount int            `json:"restartCount"`
	Reason       string         `json:"reason,omitempty"`
	StartedAt    *time.Time     `json:"startedAt,omitempty"`
	FinishedAt   *time.Time     `json:"finishedAt,omitempty"`
	// LastExit is how the previous run ended, once the container restarted.
	LastExit *ContainerExit `json:"lastExit,omitempty"`
}

// ContainerExit is how one run of a container ended.
type ContainerExit struct {
	ExitCode   int       `json:"exitCode"`
	Signal     int       `json:"signal,omitempty"`
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	FinishedAt time.Time `json:"finishedAt"`
}

// Node is a host that runs instances.
type Node struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       NodeSpec   `json:"spec"`
	Status     NodeStatus `json:"status"`
}

// NodeSpec is set by the operator.
type NodeSpec struct {
	// Unschedulable keeps new instances off the node.
	Unschedulable bool `json:"unschedulable,omitempty"`
	// Taints repel instances that do not tolerate them.
	Taints []Taint `json:"taints,omitempty"`
	// MaxInstances bounds the instances on the node (0: no bound).
	MaxInstances int `json:"maxInstances,omitempty"`
}

// NodeStatus is reported by the node agent and completed by the server.
type NodeStatus struct {
	// Capacity of the node ("cpu" in cores, "memory" in bytes with unit).
	Capacity Resources `json:"capacity"`
	// Allocated is the sum of the limits of the instances bound here;
	// computed by the server.
	Allocated Resources `json:"allocated"`
	// Instances bound here (not finished); computed by the server.
	Instances int `json:"instances"`
	// Address is where the node agent serves logs and exec to the server.
	Address string `json:"address,omitempty"`
	// Runtimes are the sandbox runtimes the node runs now ("microvm",
	// "runc"); instances land only on nodes that offer their runtime.
	Runtimes []string `json:"runtimes,omitempty"`
	// Accelerator is what runs the node's VMs: "kvm", or "tcg" where KVM
	// does not work ("": the node runs no VMs).
	Accelerator string `json:"accelerator,omitempty"`
	// GuestKernel tells how the node's guest kernel comes along: "ready",
	// "building 42%", "failed: …", or "" where it runs no VMs.
	GuestKernel string `json:"guestKernel,omitempty"`
	// Templates are the node's VM templates, one per VM size it runs:
	// microvm instances of a size whose template is ready start as its
	// clones, in a fraction of a cold boot.
	Templates []TemplateStatus `json:"templates,omitempty"`
	// Images are the digests the node holds locally; the scheduler prefers
	// nodes that already have an instance's image.
	Images []string `json:"images,omitempty"`
	// Ready is true while the node's heartbeat lease is alive.
	Ready         bool       `json:"ready"`
	LastHeartbeat *time.Time `json:"lastHeartbeat,omitempty"`
}

// LabelVMBoot set to VMBootCold makes a microvm instance boot its kernel
// instead of cloning its node's template (to measure or debug the cold
// path; it only makes the instance's own start slower).
const (
	LabelVMBoot = "cube.dev/vm-boot"
	VMBootCold  = "cold"
)

// TemplateStatus is one VM size's template on a node.
type TemplateStatus struct {
	// Size is "<vcpus>x<memory MiB>M", e.g. "1x324M".
	Size      string `json:"size"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int    `json:"memoryMiB"`
	// State is "queued", "building", "ready" or "failed: <reason>".
	State string `json:"state"`
	// Warm is how many warm VMs of this size wait for an instance
	// (clones restored and rehearsed ahead; docs/microvm-templates.md).
	Warm int `json:"warm,omitempty"`
	// WarmTaken counts the warm VMs of this size creates took over since
	// the node started.
	WarmTaken int `json:"warmTaken,omitempty"`
}

// MaxNodeTemplates bounds NodeStatus.Templates.
const MaxNodeTemplates = 16

// Image is an image a tenant imported or pulled.
type Image struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"` // Name is the normalized reference
	Digest     string     `json:"digest"`
	Size       int64      `json:"size"`
}

// PullRequest asks the server to pull an image from a registry.
type PullRequest struct {
	Image string `json:"image"`
	// Insecure allows plain HTTP to the registry.
	Insecure bool `json:"insecure,omitempty"`
}

// EventType of a watch event.
type EventType string

const (
	EventAdded    EventType = "ADDED"
	EventModified EventType = "MODIFIED"
	EventDeleted  EventType = "DELETED"
)

// WatchEvent is one line of a `?watch=true` stream.
type WatchEvent[T any] struct {
	Type   EventType `json:"type"`
	Object T         `json:"object"`
}

// List is the body of a list response.
type List[T any] struct {
	Items []T `json:"items"`
	// ResourceVersion of the list; watch from here to miss nothing. Every
	// page of a paged list has the revision of its first page.
	ResourceVersion string `json:"resourceVersion"`
	// Continue is set when a list asked with ?limit= has more items: pass
	// it back as ?continue= for the next page. It is opaque.
	Continue string `json:"continue,omitempty"`
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail describes one error.
type ErrorDetail struct {
	// Code is a CamelCase class: InvalidArgument, NotFound, AlreadyExists,
	// Conflict, Unauthorized, QuotaExceeded, Timeout, Expired, Internal.
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field is the JSON path of the offending field, when there is one.
	Field string `json:"field,omitempty"`
}

// Object is implemented by every top-level API object.
type Object interface {
	Meta() *ObjectMeta
}

func (in *Instance) Meta() *ObjectMeta { return &in.Metadata }
func (n *Node) Meta() *ObjectMeta      { return &n.Metadata }
func (i *Image) Meta() *ObjectMeta     { return &i.Metadata }

// ExecRequest is the body of POST /v1/instances/{name}/exec. The response
// upgrades the connection ("Upgrade: cube-stream") to a framed stream of
// stdin, stdout, stderr, resize and exit frames.
type ExecRequest struct {
	// Container defaults to the first container.
	Container string   `json:"container,omitempty"`
	Command   []string `json:"command"`
	Env       []string `json:"env,omitempty"`
	// TTY allocates a terminal (stdout and stderr are merged).
	TTY bool `json:"tty,omitempty"`
}

// StreamProtocol is the Upgrade token of exec connections.
const StreamProtocol = "cube-stream"

// TenantRequest creates a tenant (admin only).
type TenantRequest struct {
	Name string `json:"name"`
	// Weight scales the tenant's fair share (default 1).
	Weight float64 `json:"weight,omitempty"`
	// Quotas per priority band; a band without an entry is unlimited.
	Quotas map[string]Quota `json:"quotas,omitempty"`
	// ImageStorage caps the bytes of images the tenant may store, blobs
	// and unpacked layers ("20Gi"); empty means the default (10Gi).
	ImageStorage string `json:"imageStorage,omitempty"`
	// AllowPriorities grants bands above production ("system").
	AllowPriorities []string `json:"allowPriorities,omitempty"`
	// AllowTolerations grants tolerations by taint key ("*": any key).
	AllowTolerations []string `json:"allowTolerations,omitempty"`
	// AllowRuntimes grants runtimes beyond microvm ("runc").
	AllowRuntimes []string `json:"allowRuntimes,omitempty"`
	// MaxInstances bounds the tenant's stored instances, Pending and
	// finished ones included (0: the server's default, 100).
	MaxInstances int `json:"maxInstances,omitempty"`
	// TokenTTL is the first token's lifetime ("8760h" by default; "0":
	// it never expires).
	TokenTTL string `json:"tokenTTL,omitempty"`
}

// Quota limits what a tenant may hold in one band at once (admitted, not
// finished instances). Empty or zero fields are unlimited.
type Quota struct {
	CPU       string `json:"cpu,omitempty"`
	Memory    string `json:"memory,omitempty"`
	Instances int64  `json:"instances,omitempty"`
}

// TenantToken is the answer to a tenant creation: the token is shown once.
type TenantToken struct {
	Name  string `json:"name"`
	Token string `json:"token"`
	// ID names the token in `cube token ls` and `cube token revoke`.
	ID string `json:"id,omitempty"`
	// Expires is when the token stops working; absent: never.
	Expires *time.Time `json:"expires,omitempty"`
}
