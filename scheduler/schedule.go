package scheduler

import (
	"math"
	"time"
)

// Scheduler places requests on nodes. It holds only its configuration, so
// one Scheduler may serve concurrent Schedule calls (its Scorers and
// OnDecision hook are then called concurrently too).
type Scheduler struct {
	cfg Config
}

// New returns a Scheduler for cfg, or the error of cfg.Validate.
func New(cfg Config) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Scorers = append([]WeightedScorer(nil), cfg.Scorers...)
	return &Scheduler{cfg: cfg}, nil
}

// Schedule decides, for every request of queue, a node, a node after
// preemption, or a refusal with its reason. It reads nothing but its
// arguments and does not modify them. now is the time of the decisions; it
// is stamped on the plan (Plan.Time) and is the only time Schedule knows.
//
// Order: band (system first); within a band, the tenant with the smallest
// weighted dominant share (updated after every placement and eviction);
// within a tenant, oldest Created first, then ID.
func (s *Scheduler) Schedule(snap *Snapshot, queue []Request, now time.Time) Plan {
	st := newState(&s.cfg, snap, queue, now)
	valid := make([]int32, 0, len(queue))
	for i := range queue {
		r := &queue[i]
		if why := invalid(r); why != "" {
			st.refuse(r, why)
			continue
		}
		valid = append(valid, int32(i))
	}
	st.run(queue, st.order(queue, valid))
	return *st.plan
}

func invalid(r *Request) string {
	switch {
	case !r.Band.Valid():
		return "invalid request: unknown priority band " + r.Band.String()
	case r.Resources.MilliCPU < 0 || r.Resources.MemoryBytes < 0 || r.Resources.DiskBytes < 0:
		return "invalid request: negative resources"
	case r.MaxPerNode < 0:
		return "invalid request: negative maxPerNode"
	}
	return ""
}

// decide places r (from tenant ti), preempting if it must, or refuses it.
func (st *state) decide(r *Request, ti int32) {
	st.rot++
	c := st.classOf(r)
	svc := st.serviceOf(r)
	// A shape that fits nowhere regardless of services also fits nowhere
	// with a service bound, so base answers for every service.
	base := fitKey{cls: c, res: r.Resources}
	key := base
	if r.MaxPerNode > 0 && svc != nil {
		key.svc, key.maxPerNode = svc, r.MaxPerNode
	}
	neg := st.noFit[base]
	if neg != nil && !st.stillNoFit(neg, r, c, nil) {
		neg = nil
	}
	if neg == nil && key != base {
		if neg = st.noFit[key]; neg != nil && !st.stillNoFit(neg, r, c, svc) {
			neg = nil
		}
	}
	if neg == nil {
		if i := st.place(r, c, svc); i >= 0 {
			st.bind(i, r, ti, svc)
			return
		}
		why, spread, room := st.explain(r, c, svc)
		neg = &negative{gen: st.gen, reason: why, room: room > 0}
		st.noFit[key] = neg
		if spread == 0 && key != base {
			st.noFit[base] = &negative{gen: st.gen, reason: why, room: room > 0}
		}
	}
	why := neg.reason
	// Preemption only helps where room is what is missing (not where the
	// selector, taints or service bound say no).
	if !st.cfg.DisablePreemption && r.Band > BandBestEffort && neg.room {
		pk := preemptKey{key, r.Band}
		if msg, ok := st.noPreempt[pk]; ok {
			why = msg
		} else if st.preempt(r, ti, c, svc) {
			return
		} else {
			why += "; preemption: evicting lower-band instances frees room on no node"
			st.noPreempt[pk] = why
		}
	}
	st.refuse(r, why)
}

// stillNoFit reports whether a shape that fit nowhere at generation neg.gen
// still fits nowhere: only the nodes of the preemptions since could have
// gained room (every other change of the call only takes room away). svc
// is nil for an entry that ignores service bounds.
func (st *state) stillNoFit(neg *negative, r *Request, c *class, svc *service) bool {
	for _, i := range st.preemptLog[neg.gen:st.gen] {
		if c.has(i) && st.feasible(i, r, svc) {
			return false
		}
	}
	neg.gen = st.gen
	return true
}

func (st *state) refuse(r *Request, why string) {
	st.plan.Unschedulable = append(st.plan.Unschedulable, Unplaced{RequestID: r.ID, Reason: why})
	if st.cfg.OnDecision != nil {
		st.cfg.OnDecision(r.ID, false)
	}
}

// bind places r on node i and updates every index.
func (st *state) bind(i int32, r *Request, ti int32, svc *service) {
	st.adjust(i, r.Resources, 1)
	st.addReplica(svc, i, 1)
	st.use(ti, r.Resources, 1)
	st.plan.Bindings = append(st.plan.Bindings, Binding{
		RequestID: r.ID, Node: st.nodes[i].Name, NodeRevision: st.nodes[i].Revision,
	})
	if st.cfg.OnDecision != nil {
		st.cfg.OnDecision(r.ID, true)
	}
}

// place returns the best-scoring feasible node for r, or -1 if none is.
//
// It scores up to FeasibleSample feasible nodes. A small class is checked
// node by node. Otherwise the nodes are visited through the free-resource
// grid, only in the cells that can hold r, diagonal by diagonal from the
// tightest corner (or, for ScanLoosest, from the loosest), each cell from a
// rotating offset. The scan stops early only once the sample is full, so
// "no node found" is always the result of a full scan.
func (st *state) place(r *Request, c *class, svc *service) int32 {
	p := placer{st: st, r: r, c: c, svc: svc, best: -1, bestScore: math.Inf(-1),
		fewest: st.fewestInZone(svc)}
	if len(c.nodes) <= st.cfg.SmallClass {
		p.visit(c.nodes, st.rot)
		return p.best
	}
	p.limit = st.cfg.FeasibleSample
	g := &st.grid
	m0, c0 := g.coord(r.Resources)
	const last = 2 * (gridSize - 1)
	diagonal := func(d int) {
		for m := max(m0, d-(gridSize-1)); m <= min(gridSize-1, d-c0) && !p.full(); m++ {
			p.visit(g.cells[m*gridSize+d-m], st.rot)
		}
	}
	if st.cfg.Scan == ScanLoosest {
		for d := last; d >= m0+c0 && !p.full(); d-- {
			diagonal(d)
		}
	} else {
		for d := m0 + c0; d <= last && !p.full(); d++ {
			diagonal(d)
		}
	}
	return p.best
}

// placer is one scan of place.
type placer struct {
	st        *state
	r         *Request
	c         *class
	svc       *service
	fewest    int
	limit     int
	found     int
	best      int32
	bestScore float64
}

func (p *placer) full() bool { return p.limit > 0 && p.found >= p.limit }

// visit considers the nodes of list, starting at offset rot modulo its length.
func (p *placer) visit(list []int32, rot uint64) {
	n := len(list)
	if n == 0 {
		return
	}
	off := int(rot % uint64(n))
	if p.visitRange(list[off:]) {
		return
	}
	p.visitRange(list[:off])
}

// visitRange returns true once the sample is full.
func (p *placer) visitRange(list []int32) bool {
	st, r, c, svc := p.st, p.r, p.c, p.svc
	for _, i := range list {
		if !c.has(i) || !st.feasible(i, r, svc) {
			continue
		}
		if s := st.score(i, r, svc, p.fewest); s > p.bestScore {
			p.best, p.bestScore = i, s
		}
		p.found++
		if p.full() {
			return true
		}
	}
	return false
}
