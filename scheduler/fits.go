package scheduler

import (
	"fmt"
	"slices"
)

// FitError says why a request does not fit a node.
type FitError struct {
	Node string
	// Reason is short and the same text Schedule counts in Unplaced reasons,
	// e.g. "insufficient memory" or "taint gpu".
	Reason string
	// Detail adds numbers where there are some, e.g. "free 1GiB, request 2GiB".
	Detail string
}

func (e *FitError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("node %s: %s", e.Node, e.Reason)
	}
	return fmt.Sprintf("node %s: %s (%s)", e.Node, e.Reason, e.Detail)
}

// Fits reports whether r can be placed on n as n is now: n ready and not
// cordoned, runtime offered, selector matched, NoSchedule taints tolerated, instance bound,
// service bound (replicasOnNode is how many replicas of r.ServiceKey n runs
// already) and cpu, memory and disk free. It returns nil or a *FitError.
// Schedule uses the same predicates, so the applier can re-check a binding
// against the latest node state with it.
func Fits(n *Node, r *Request, replicasOnNode int) error {
	why, taint := staticFit(n, r)
	if why == fitOK {
		why = dynamicFit(n.Capacity.Sub(n.Allocated), n.Instances, n.MaxInstances, replicasOnNode, r)
	}
	if why == fitOK {
		return nil
	}
	e := &FitError{Node: n.Name, Reason: why.text(taint, r)}
	free := n.Capacity.Sub(n.Allocated)
	switch why {
	case rMemory:
		e.Detail = fmt.Sprintf("free %s, request %s", bytesText(free.MemoryBytes), bytesText(r.Resources.MemoryBytes))
	case rCPU:
		e.Detail = fmt.Sprintf("free %dm, request %dm", free.MilliCPU, r.Resources.MilliCPU)
	case rDisk:
		e.Detail = fmt.Sprintf("free %s, request %s", bytesText(free.DiskBytes), bytesText(r.Resources.DiskBytes))
	case rMaxInstances:
		e.Detail = fmt.Sprintf("%d of %d", n.Instances, n.MaxInstances)
	case rAntiAffinity:
		e.Detail = fmt.Sprintf("%d of %d replicas of %s", replicasOnNode, r.MaxPerNode, r.ServiceKey)
	}
	return e
}

// reason is why a node cannot take a request; the order of the constants is
// the order of the checks, and each node counts under its first failure.
type reason uint8

const (
	fitOK reason = iota
	rNotReady
	rUnschedulable
	rRuntime
	rSelector
	rTaint
	rMemory
	rCPU
	rDisk
	rMaxInstances
	rAntiAffinity
	rInvalid
)

func (w reason) text(taintKey string, r *Request) string {
	switch w {
	case rNotReady:
		return "node not ready"
	case rUnschedulable:
		return "node unschedulable"
	case rRuntime:
		return "runtime " + r.Runtime + " not offered"
	case rSelector:
		return "node selector mismatch"
	case rTaint:
		return "taint " + taintKey
	case rMaxInstances:
		return "too many instances"
	case rAntiAffinity:
		return fmt.Sprintf("service %s at %d per node", r.ServiceKey, r.MaxPerNode)
	case rMemory:
		return "insufficient memory"
	case rCPU:
		return "insufficient cpu"
	case rDisk:
		return "insufficient disk"
	case rInvalid:
		return "invalid request"
	}
	return "fits"
}

// staticFit checks what cannot change during one Schedule call; it is
// evaluated once per equivalence class and node. For rTaint it also returns
// the key of the first taint not tolerated.
func staticFit(n *Node, r *Request) (reason, string) {
	if !n.Ready {
		return rNotReady, ""
	}
	if n.Unschedulable {
		return rUnschedulable, ""
	}
	if r.Runtime != "" && !slices.Contains(n.Runtimes, r.Runtime) {
		return rRuntime, ""
	}
	for k, v := range r.NodeSelector {
		if lv, ok := n.Labels[k]; !ok || lv != v {
			return rSelector, ""
		}
	}
	for _, t := range n.Taints {
		if t.Effect != NoSchedule || tolerated(r.Tolerations, t) {
			continue
		}
		return rTaint, t.Key
	}
	return fitOK, ""
}

func tolerated(ts []Toleration, t Taint) bool {
	for _, tol := range ts {
		if tol.Tolerates(t) {
			return true
		}
	}
	return false
}

// dynamicFit checks what placements change: free resources (memory first:
// it is the usual binding constraint), then the instance and service bounds.
func dynamicFit(free Resources, instances, maxInstances, replicasOnNode int, r *Request) reason {
	switch {
	case free.MemoryBytes < r.Resources.MemoryBytes:
		return rMemory
	case free.MilliCPU < r.Resources.MilliCPU:
		return rCPU
	case free.DiskBytes < r.Resources.DiskBytes:
		return rDisk
	case maxInstances > 0 && instances >= maxInstances:
		return rMaxInstances
	case r.MaxPerNode > 0 && r.ServiceKey != "" && replicasOnNode >= r.MaxPerNode:
		return rAntiAffinity
	}
	return fitOK
}

// bytesText renders n bytes compactly, e.g. "512MiB", "1.5GiB".
func bytesText(n int64) string {
	const (
		mi = 1 << 20
		gi = 1 << 30
	)
	switch {
	case n >= gi || n <= -gi:
		if n%gi == 0 {
			return fmt.Sprintf("%dGiB", n/gi)
		}
		return fmt.Sprintf("%.1fGiB", float64(n)/gi)
	case n >= mi || n <= -mi:
		if n%mi == 0 {
			return fmt.Sprintf("%dMiB", n/mi)
		}
		return fmt.Sprintf("%.1fMiB", float64(n)/mi)
	}
	return fmt.Sprintf("%dB", n)
}
