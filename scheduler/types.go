package scheduler

import (
	"fmt"
	"time"
)

// Band is a priority band. A higher band is scheduled first and may preempt
// instances of strictly lower bands.
type Band int

const (
	BandBestEffort Band = iota
	BandBatch
	BandProduction
	BandSystem

	numBands = 4
)

var bandNames = [numBands]string{"best-effort", "batch", "production", "system"}

func (b Band) String() string {
	if b < 0 || b >= numBands {
		return fmt.Sprintf("band(%d)", int(b))
	}
	return bandNames[b]
}

// Valid reports whether b is one of the four bands.
func (b Band) Valid() bool { return b >= 0 && b < numBands }

// ParseBand turns "system", "production", "batch" or "best-effort" into a Band.
func ParseBand(s string) (Band, error) {
	for i, n := range bandNames {
		if n == s {
			return Band(i), nil
		}
	}
	return 0, fmt.Errorf("unknown priority band %q (want system, production, batch or best-effort)", s)
}

// Resources is an amount of compute. Zero fields ask for nothing.
type Resources struct {
	MilliCPU    int64 `json:"milliCPU"`
	MemoryBytes int64 `json:"memoryBytes"`
	DiskBytes   int64 `json:"diskBytes"`
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{r.MilliCPU + o.MilliCPU, r.MemoryBytes + o.MemoryBytes, r.DiskBytes + o.DiskBytes}
}

// Sub returns r - o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{r.MilliCPU - o.MilliCPU, r.MemoryBytes - o.MemoryBytes, r.DiskBytes - o.DiskBytes}
}

// LessEq reports whether every field of r is at most the same field of o.
func (r Resources) LessEq(o Resources) bool {
	return r.MilliCPU <= o.MilliCPU && r.MemoryBytes <= o.MemoryBytes && r.DiskBytes <= o.DiskBytes
}

// TaintEffect says what a taint does. Only NoSchedule constrains placement;
// taints with any other effect are ignored by the scheduler.
type TaintEffect string

const NoSchedule TaintEffect = "NoSchedule"

// Taint repels requests that do not tolerate it: key=value:effect.
type Taint struct {
	Key    string      `json:"key"`
	Value  string      `json:"value,omitempty"`
	Effect TaintEffect `json:"effect"`
}

func (t Taint) String() string { return t.Key + "=" + t.Value + ":" + string(t.Effect) }

// TolerationOperator is how a toleration compares a taint's value.
type TolerationOperator string

const (
	// OpEqual (the default when empty) tolerates a taint with the same key and value.
	OpEqual TolerationOperator = "Equal"
	// OpExists tolerates any value of the key; with an empty key, every taint.
	OpExists TolerationOperator = "Exists"
)

// Toleration lets a request land on a node with a matching taint.
type Toleration struct {
	Key      string             `json:"key,omitempty"`
	Operator TolerationOperator `json:"operator,omitempty"`
	Value    string             `json:"value,omitempty"`
	// Effect to tolerate; empty tolerates every effect.
	Effect TaintEffect `json:"effect,omitempty"`
}

// Tolerates reports whether t tolerates taint (Kubernetes semantics).
func (t Toleration) Tolerates(taint Taint) bool {
	if t.Effect != "" && t.Effect != taint.Effect {
		return false
	}
	if t.Key == "" {
		return t.Operator == OpExists
	}
	if t.Key != taint.Key {
		return false
	}
	return t.Operator == OpExists || t.Value == taint.Value
}

// ZoneLabel is the node label that names a node's failure zone; replicas of a
// service are preferably spread across its values.
const ZoneLabel = "zone"

// Node is one host as the store last saw it.
type Node struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Taints []Taint           `json:"taints,omitempty"`
	// Capacity is what instances may use (allocatable, after system reserve).
	Capacity Resources `json:"capacity"`
	// Allocated is the sum of the requests of the instances bound to the node,
	// including every entry of Snapshot.Running on it.
	Allocated Resources `json:"allocated"`
	// MaxInstances bounds the instances on the node; 0 means no bound.
	MaxInstances int `json:"maxInstances,omitempty"`
	// Instances is how many instances are bound to the node now.
	Instances     int  `json:"instances"`
	Ready         bool `json:"ready"`
	Unschedulable bool `json:"unschedulable,omitempty"`
	// CachedImages lists the image digests the node holds locally.
	CachedImages []string `json:"cachedImages,omitempty"`
	// Runtimes are the sandbox runtimes the node can run ("microvm",
	// "runc"); a request with a Runtime lands only where it is listed.
	Runtimes []string `json:"runtimes,omitempty"`
	// Revision is opaque to the scheduler (the store's mod revision of the
	// node); it is echoed in each Binding so the applier can detect staleness.
	Revision int64 `json:"revision"`
}

// Request is one instance waiting for a node.
type Request struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	Band   Band   `json:"band"`
	// Resources the instance asks for (reserved on the node while it runs).
	Resources Resources `json:"resources"`
	// NodeSelector must match node labels exactly (every key, equal value).
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	Tolerations  []Toleration      `json:"tolerations,omitempty"`
	// Runtime the instance runs in ("microvm", "runc"); empty: any node.
	Runtime string `json:"runtime,omitempty"`
	// ServiceKey groups replicas of one service for anti-affinity; empty: none.
	ServiceKey string `json:"serviceKey,omitempty"`
	// MaxPerNode bounds the replicas of ServiceKey on one node; 0: no bound.
	// Replicas are in any case preferably spread across zones and nodes.
	MaxPerNode int `json:"maxPerNode,omitempty"`
	// Image is the digest of the instance's image (for image locality).
	Image   string    `json:"image,omitempty"`
	Created time.Time `json:"created"`
}

// Running is an instance already bound to a node: a preemption candidate
// and part of its tenant's usage.
type Running struct {
	ID         string    `json:"id"`
	Tenant     string    `json:"tenant"`
	Band       Band      `json:"band"`
	Node       string    `json:"node"`
	Resources  Resources `json:"resources"`
	ServiceKey string    `json:"serviceKey,omitempty"`
	Started    time.Time `json:"started"`
}

// Tenant is an owner of instances. Weight scales its fair share (a tenant
// of weight 2 is entitled to twice the dominant share of a tenant of
// weight 1); a weight <= 0 counts as 1. Tenants absent from the snapshot
// get weight 1.
type Tenant struct {
	Name   string  `json:"name"`
	Weight float64 `json:"weight"`
}

// Snapshot is the state Schedule decides against. Schedule does not modify it.
type Snapshot struct {
	Nodes   []Node    `json:"nodes"`
	Running []Running `json:"running"`
	Tenants []Tenant  `json:"tenants"`
}

// Plan is the outcome of one Schedule call. Bindings are in decision order.
// Applying every Preemption and then every Binding in order never
// overcommits a node of the snapshot.
type Plan struct {
	// Time is the now Schedule was given: when the decisions were made (the
	// applier records it as the instances' scheduled time).
	Time          time.Time    `json:"time"`
	Bindings      []Binding    `json:"bindings"`
	Preemptions   []Preemption `json:"preemptions"`
	Unschedulable []Unplaced   `json:"unschedulable"`
}

// Binding places a request on a node. NodeRevision is the snapshot's
// Node.Revision; the applier refuses the binding if the node changed since
// (or re-checks it with Fits).
type Binding struct {
	RequestID    string `json:"requestID"`
	Node         string `json:"node"`
	NodeRevision int64  `json:"nodeRevision"`
}

// Preemption evicts a running instance so that request For can take its place.
// Reason is meant for the victim's status.
type Preemption struct {
	Victim string `json:"victim"`
	Node   string `json:"node"`
	Reason string `json:"reason"`
	For    string `json:"for"`
}

// Unplaced is a request that could not be placed; Reason says why, counted
// over the nodes, e.g. "0/5000 nodes: 4990 insufficient memory, 10 taint gpu".
type Unplaced struct {
	RequestID string `json:"requestID"`
	Reason    string `json:"reason"`
}
