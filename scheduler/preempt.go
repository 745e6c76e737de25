package scheduler

import (
	"slices"
	"strings"
)

// victimIndex lists the running instances of each node (only snapshot
// instances are ever victims: this call's placements of lower bands are
// decided after every higher band, so they never stand in the way).
type victimIndex struct {
	start   []int32 // running of node i: list[start[i]:start[i+1]]
	list    []int32 // indices into snap.Running
	evicted []bool
	sorted  []bool // node's list is in victim order
	// byBand[i][b] sums node i's not-evicted running instances of band b,
	// for a quick upper bound of what evictions could free.
	byBand [][numBands]bandSum
}

type bandSum struct {
	res Resources
	n   int32
}

func (st *state) victimIdx() *victimIndex {
	if st.victims != nil {
		return st.victims
	}
	run := st.snap.Running
	v := &victimIndex{
		start:   make([]int32, len(st.nodes)+1),
		evicted: make([]bool, len(run)),
		sorted:  make([]bool, len(st.nodes)),
		byBand:  make([][numBands]bandSum, len(st.nodes)),
	}
	nodeOf := make([]int32, len(run))
	for k := range run {
		nodeOf[k] = -1
		if i, ok := st.nameIdx[run[k].Node]; ok && run[k].Band.Valid() {
			nodeOf[k] = i
			v.start[i+1]++
			b := &v.byBand[i][run[k].Band]
			b.res = b.res.Add(run[k].Resources)
			b.n++
		}
	}
	for i := range st.nodes {
		v.start[i+1] += v.start[i]
	}
	v.list = make([]int32, v.start[len(st.nodes)])
	fill := slices.Clone(v.start[:len(st.nodes)])
	for k, i := range nodeOf {
		if i >= 0 {
			v.list[fill[i]] = int32(k)
			fill[i]++
		}
	}
	st.victims = v
	return v
}

// victimSet is one way to make room for a request on one node.
type victimSet struct {
	node    int32
	victims []int32 // indices into snap.Running
	top     Band    // highest band among the victims
	oldest  int64   // earliest Started among the victims (UnixNano)
}

// better orders eviction sets: fewest victims, then lowest top band, then
// youngest (the latest oldest start: the least work is lost).
func (a *victimSet) better(b *victimSet) bool {
	if len(a.victims) != len(b.victims) {
		return len(a.victims) < len(b.victims)
	}
	if a.top != b.top {
		return a.top < b.top
	}
	return a.oldest > b.oldest
}

// preempt looks for the cheapest set of strictly-lower-band victims on one
// statically feasible node; if there is one, it evicts them, binds r there
// and returns true. It compares up to PreemptionSample nodes on which a set
// exists, visiting the class's nodes from a rotating offset.
func (st *state) preempt(r *Request, ti int32, c *class, svc *service) bool {
	v := st.victimIdx()
	var best, cur victimSet
	best.node = -1
	limit := st.cfg.PreemptionSample
	found := 0
	n := len(c.nodes)
	off := 0
	if n > 0 {
		off = int(st.rot % uint64(n))
	}
	for j := 0; j < n && (limit == 0 || found < limit); j++ {
		i := c.nodes[(off+j)%n]
		if !st.couldEvictFor(v, i, r, svc) {
			continue
		}
		bound := 0
		if best.node >= 0 {
			bound = len(best.victims)
		}
		if !st.victimsOn(v, i, r, bound, &cur) {
			continue
		}
		found++
		if best.node < 0 || cur.better(&best) {
			best, cur = cur, best
			cur.victims = cur.victims[:0]
		}
	}
	if best.node < 0 {
		return false
	}
	for _, k := range best.victims {
		st.evict(v, k, best.node, r, preemptReason(r, st.snap.Running[k].Tenant))
	}
	st.gen++
	st.preemptLog = append(st.preemptLog, best.node)
	st.bind(best.node, r, ti, svc)
	return true
}

// couldEvictFor is a quick upper bound: would evicting every lower-band
// instance of node i make room for r?
func (st *state) couldEvictFor(v *victimIndex, i int32, r *Request, svc *service) bool {
	if r.MaxPerNode > 0 && svc.on(i) >= r.MaxPerNode {
		return false // evictions are not used to relieve service spread
	}
	avail := st.free[i]
	var cnt int32
	for b := Band(0); b < r.Band; b++ {
		avail = avail.Add(v.byBand[i][b].res)
		cnt += v.byBand[i][b].n
	}
	return r.Resources.LessEq(avail) && st.inst[i]-cnt < st.maxInst[i]
}

// victimsOn fills set with a minimal set of lower-band victims on node i
// that makes room for r. A single victim is chosen exactly (the cheapest
// that suffices); larger sets are built greedily (largest contribution to
// the shortfall first, the cheaper on ties) and then pruned of every victim
// not needed, most valuable first. It gives up when it cannot beat a set of
// bound victims (0: no bound).
func (st *state) victimsOn(v *victimIndex, i int32, r *Request, bound int, set *victimSet) bool {
	run := st.snap.Running
	need := r.Resources.Sub(st.free[i])
	need = Resources{max(need.MilliCPU, 0), max(need.MemoryBytes, 0), max(need.DiskBytes, 0)}
	slots := max(st.inst[i]+1-st.maxInst[i], 0)
	cands := set.victims[:0] // cheapest first (see sortNode)
	for _, k := range v.node(st, i) {
		if !v.evicted[k] && run[k].Band < r.Band {
			cands = append(cands, k)
		}
	}
	set.node, set.victims = i, cands
	if slots <= 1 {
		for _, k := range cands {
			if need.LessEq(run[k].Resources) {
				set.victims = append(cands[:0], k)
				set.finish(run)
				return true
			}
		}
	}
	if bound == 1 {
		return false
	}
	chosen := st.chosen[:0]
	for range cands {
		chosen = append(chosen, false)
	}
	st.chosen = chosen
	m := 0
	left, slotsLeft := need, slots
	for left != (Resources{}) || slotsLeft > 0 {
		bi, bg := -1, 0.0
		for j, k := range cands {
			if g := gain(left, slotsLeft, run[k].Resources); !chosen[j] && g > bg {
				bi, bg = j, g
			}
		}
		if bi < 0 {
			return false
		}
		chosen[bi] = true
		m++
		left = left.Sub(run[cands[bi]].Resources)
		left = Resources{max(left.MilliCPU, 0), max(left.MemoryBytes, 0), max(left.DiskBytes, 0)}
		slotsLeft = max(slotsLeft-1, 0)
	}
	// Prune: try to spare the most valuable (the last in cands) first.
	var sum Resources
	for j, k := range cands {
		if chosen[j] {
			sum = sum.Add(run[k].Resources)
		}
	}
	for j := len(cands) - 1; j >= 0; j-- {
		if !chosen[j] {
			continue
		}
		if rest := sum.Sub(run[cands[j]].Resources); need.LessEq(rest) && int32(m-1) >= slots {
			chosen[j], sum = false, rest
			m--
		}
	}
	if bound > 0 && m > bound {
		return false
	}
	kept := cands[:0]
	for j, k := range cands {
		if chosen[j] {
			kept = append(kept, k)
		}
	}
	set.victims = kept
	set.finish(run)
	return true
}

// gain is how much of the shortfall left a victim of size res covers.
func gain(left Resources, slots int32, res Resources) float64 {
	var g float64
	if left.MilliCPU > 0 {
		g += float64(min(res.MilliCPU, left.MilliCPU)) / float64(left.MilliCPU)
	}
	if left.MemoryBytes > 0 {
		g += float64(min(res.MemoryBytes, left.MemoryBytes)) / float64(left.MemoryBytes)
	}
	if left.DiskBytes > 0 {
		g += float64(min(res.DiskBytes, left.DiskBytes)) / float64(left.DiskBytes)
	}
	if slots > 0 {
		g += 1 / float64(slots)
	}
	return g
}

// node returns node i's running instances, cheapest victim first: lower
// band, then younger, then smaller ID. Each list is sorted on first use.
func (v *victimIndex) node(st *state, i int32) []int32 {
	list := v.list[v.start[i]:v.start[i+1]]
	if !v.sorted[i] {
		run := st.snap.Running
		slices.SortFunc(list, func(a, b int32) int {
			ra, rb := &run[a], &run[b]
			if ra.Band != rb.Band {
				return int(ra.Band - rb.Band)
			}
			if c := rb.Started.Compare(ra.Started); c != 0 {
				return c
			}
			return strings.Compare(ra.ID, rb.ID)
		})
		v.sorted[i] = true
	}
	return list
}

func (s *victimSet) finish(run []Running) {
	s.top, s.oldest = 0, 0
	for n, k := range s.victims {
		if run[k].Band > s.top {
			s.top = run[k].Band
		}
		if t := run[k].Started.UnixNano(); n == 0 || t < s.oldest {
			s.oldest = t
		}
	}
}

// evict removes running instance k from node i for request r.
func (st *state) evict(v *victimIndex, k int32, i int32, r *Request, reason string) {
	ru := &st.snap.Running[k]
	v.evicted[k] = true
	b := &v.byBand[i][ru.Band]
	b.res = b.res.Sub(ru.Resources)
	b.n--
	st.adjust(i, ru.Resources, -1)
	if ru.ServiceKey != "" {
		st.addReplica(st.services[ru.ServiceKey], i, -1)
	}
	st.use(st.tenantOf(ru.Tenant), ru.Resources, -1)
	st.plan.Preemptions = append(st.plan.Preemptions, Preemption{
		Victim: ru.ID, Node: st.nodes[i].Name, Reason: reason, For: r.ID,
	})
}

// preemptReason is the message the victim's tenant sees. It names the
// preemptor only when both belong to one tenant: no tenant may learn
// another tenant's instance names.
func preemptReason(r *Request, victimTenant string) string {
	band := " (band " + r.Band.String() + ")"
	if r.Tenant != victimTenant {
		return "preempted by a higher-priority instance" + band
	}
	return "preempted by " + strings.TrimPrefix(r.ID, r.Tenant+"/") + band
}
