package scheduler

// MaxScore is the most a Scorer may return.
const MaxScore = 100

// Scorer ranks a feasible node for a request, from 0 to MaxScore (higher is
// better). It is called in the hot loop: it must be cheap, must not
// allocate, must not modify its arguments, and must be deterministic.
type Scorer interface {
	Score(r *Request, c *Candidate) float64
}

// Candidate is a feasible node as the scheduler sees it at that moment of a
// Schedule call.
type Candidate struct {
	// Node is the scheduler's working copy of the node: Allocated and
	// Instances include the placements made earlier in the same call.
	Node *Node
	// ReplicasOnNode counts the replicas of r.ServiceKey on the node.
	ReplicasOnNode int
	// ReplicasInZone counts them in the node's zone (-1: the node has no zone).
	ReplicasInZone int
	// FewestInZone is the fewest replicas of r.ServiceKey in any zone.
	FewestInZone int
}

var (
	_ Scorer = MostAllocated{}
	_ Scorer = LeastAllocated{}
	_ Scorer = ImageLocality{}
	_ Scorer = ServiceSpread{}
	_ Scorer = BalancedAllocation{}
)

// MostAllocated prefers the node that will be fullest after placement (mean
// of the cpu and memory fractions): bin-packing, which keeps large holes
// free for large requests.
type MostAllocated struct{}

func (MostAllocated) Score(r *Request, c *Candidate) float64 {
	return MaxScore * allocatedAfter(r, c.Node)
}

// LeastAllocated prefers the node that will be emptiest after placement:
// spreading, which leaves headroom on every node.
type LeastAllocated struct{}

func (LeastAllocated) Score(r *Request, c *Candidate) float64 {
	return MaxScore * (1 - allocatedAfter(r, c.Node))
}

// allocatedAfter is the mean of the cpu and memory fractions of n allocated
// once r is placed on it (resources with no capacity are left out).
func allocatedAfter(r *Request, n *Node) float64 {
	var sum float64
	var dims int
	if c := n.Capacity.MilliCPU; c > 0 {
		sum += float64(n.Allocated.MilliCPU+r.Resources.MilliCPU) / float64(c)
		dims++
	}
	if c := n.Capacity.MemoryBytes; c > 0 {
		sum += float64(n.Allocated.MemoryBytes+r.Resources.MemoryBytes) / float64(c)
		dims++
	}
	if dims == 0 {
		return 0
	}
	return sum / float64(dims)
}

// BalancedAllocation prefers the node whose cpu and memory fractions will be
// closest to each other after placement, so that neither runs out while the
// other is left stranded. Paired with MostAllocated it packs without
// fragmenting one resource.
type BalancedAllocation struct{}

func (BalancedAllocation) Score(r *Request, c *Candidate) float64 {
	n := c.Node
	if n.Capacity.MilliCPU <= 0 || n.Capacity.MemoryBytes <= 0 {
		return MaxScore
	}
	cpu := float64(n.Allocated.MilliCPU+r.Resources.MilliCPU) / float64(n.Capacity.MilliCPU)
	mem := float64(n.Allocated.MemoryBytes+r.Resources.MemoryBytes) / float64(n.Capacity.MemoryBytes)
	d := cpu - mem
	if d < 0 {
		d = -d
	}
	return MaxScore * (1 - min(d, 1))
}

// ImageLocality gives MaxScore to a node that already holds the request's
// image (no pull before start) and 0 to the others.
type ImageLocality struct{}

func (ImageLocality) Score(r *Request, c *Candidate) float64 {
	if r.Image == "" {
		return 0
	}
	img := r.Image
	for _, d := range c.Node.CachedImages {
		// Digests differ early and late; the last byte rules most out cheaply.
		if len(d) == len(img) && d[len(d)-1] == img[len(img)-1] && d == img {
			return MaxScore
		}
	}
	return 0
}

// ServiceSpread prefers, for a request with a ServiceKey, a node in the zone
// with the fewest replicas of the service and a node with few replicas of it.
// The hard per-node bound is Request.MaxPerNode, checked by Fits.
type ServiceSpread struct{}

func (ServiceSpread) Score(r *Request, c *Candidate) float64 {
	if r.ServiceKey == "" {
		return 0
	}
	zone := MaxScore / 2.0
	if c.ReplicasInZone >= 0 {
		zone = MaxScore * float64(c.FewestInZone+1) / float64(c.ReplicasInZone+1)
	}
	node := MaxScore / float64(c.ReplicasOnNode+1)
	return (zone + node) / 2
}
