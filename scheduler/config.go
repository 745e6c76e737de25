package scheduler

import (
	"errors"
	"fmt"
)

// ScanOrder is the order in which nodes are visited when only a sample of
// the feasible nodes is scored. Nodes are kept in a grid by free memory and
// free cpu; the order picks which corner of that grid is sampled first, so
// that a bounded sample still holds the nodes the scorers like best.
type ScanOrder int

const (
	// ScanTightest visits first the nodes with the least free memory and
	// cpu that can still hold the request: the right order for bin-packing.
	ScanTightest ScanOrder = iota
	// ScanLoosest visits first the nodes with the most free memory and cpu:
	// the right order for spreading.
	ScanLoosest
)

func (o ScanOrder) String() string {
	switch o {
	case ScanTightest:
		return "tightest"
	case ScanLoosest:
		return "loosest"
	}
	return fmt.Sprintf("scan(%d)", int(o))
}

// Config tunes Schedule. DefaultConfig returns a complete one.
type Config struct {
	// Seed makes the rotating scan offsets, and so tie-breaks between equal
	// nodes, reproducible: the same seed gives the same plan.
	Seed int64
	// Scorers rank feasible nodes; a node's score is the weighted sum of
	// theirs and the highest wins (ties: the first visited).
	Scorers []WeightedScorer
	// Scan is the order in which nodes are sampled; pair ScanTightest with
	// bin-packing and ScanLoosest with spreading.
	Scan ScanOrder
	// FeasibleSample is how many feasible nodes are scored per request. The
	// scan goes on until it has found that many or has visited every node
	// that could hold the request, so a scarce fit is still found (that is
	// a full scan). 0 scores every feasible node: the quality baseline.
	FeasibleSample int
	// SmallClass: a request whose selector and tolerations admit at most
	// this many nodes is checked against all of them (exhaustively) without
	// walking the free-resource grid.
	SmallClass int
	// PreemptionSample is how many nodes on which an eviction set exists
	// are compared when a request of a band above best-effort fits nowhere;
	// 0 compares all of them.
	PreemptionSample int
	// DisablePreemption turns preemption off.
	DisablePreemption bool
	// OnDecision, when set, is called after each request is decided (placed
	// or refused), in decision order. The scheduler reads no clock: a
	// benchmark that wants per-decision latency reads its own clock here.
	// It must not call back into the Scheduler.
	OnDecision func(requestID string, placed bool)
}

// WeightedScorer is one scorer and the weight of its score.
type WeightedScorer struct {
	Scorer Scorer
	Weight float64
}

// DefaultConfig bin-packs (most-allocated), with a small bonus for nodes
// that hold the image and for spreading a service's replicas over zones.
// Adding BalancedAllocation trades some packing for less stranded cpu or
// memory (on the bench workload: about one point more utilization at the
// end, and a wider gap to the exhaustive baseline).
func DefaultConfig() Config {
	return Config{
		Seed: 1,
		Scorers: []WeightedScorer{
			{MostAllocated{}, 1},
			{ImageLocality{}, 0.05},
			{ServiceSpread{}, 0.1},
		},
		Scan:             ScanTightest,
		FeasibleSample:   32,
		SmallClass:       256,
		PreemptionSample: 32,
	}
}

// DefaultSpreadConfig spreads load (least-allocated) instead of packing it.
func DefaultSpreadConfig() Config {
	c := DefaultConfig()
	c.Scorers = []WeightedScorer{
		{LeastAllocated{}, 1},
		{ImageLocality{}, 0.05},
		{ServiceSpread{}, 0.1},
	}
	c.Scan = ScanLoosest
	return c
}

// Exhaustive returns c changed to score every feasible node and compare
// every preemption candidate: slow, and the yardstick for sampling quality.
func (c Config) Exhaustive() Config {
	c.FeasibleSample = 0
	c.PreemptionSample = 0
	return c
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	if len(c.Scorers) == 0 {
		return errors.New("scheduler config: no scorers (use DefaultConfig)")
	}
	for i, s := range c.Scorers {
		if s.Scorer == nil {
			return fmt.Errorf("scheduler config: scorer %d is nil", i)
		}
		if s.Weight < 0 {
			return fmt.Errorf("scheduler config: scorer %d has negative weight %v", i, s.Weight)
		}
	}
	if c.Scan != ScanTightest && c.Scan != ScanLoosest {
		return fmt.Errorf("scheduler config: unknown scan order %d", int(c.Scan))
	}
	if c.FeasibleSample < 0 || c.SmallClass < 0 || c.PreemptionSample < 0 {
		return errors.New("scheduler config: FeasibleSample, SmallClass and PreemptionSample must be >= 0")
	}
	return nil
}
