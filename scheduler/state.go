package scheduler

import (
	"math"
	"slices"
	"time"
)

// state is the working state of one Schedule call. Everything the plan
// changes (free resources, instance counts, service replica counts, tenant
// usage) is updated in place as decisions are made, so every later decision
// in the call sees the earlier ones.
type state struct {
	cfg  *Config
	snap *Snapshot
	plan *Plan

	// Per node, indexed like snap.Nodes.
	nodes    []Node      // working copies: Allocated and Instances are kept current
	free     []Resources // Capacity - Allocated
	inst     []int32
	maxInst  []int32 // math.MaxInt32 when unbounded
	zoneOf   []int32 // index into zones, -1 without a zone label
	nameIdx  map[string]int32
	zones    int
	zoneUsed []bool // the zone has a schedulable node

	// The schedulable nodes indexed by free memory and free cpu.
	grid freeGrid

	// Equivalence classes: requests with the same selector and tolerations
	// share the static half of feasibility.
	plain    *class
	classes  map[string]*class
	keyBuf   []byte
	keyNames []string

	services map[string]*service

	tenants   []tenant
	tenantIdx map[string]int32
	totalCPU  float64
	totalMem  float64
	heap      tenantHeap

	// Negative caches. A shape that fit nowhere still fits nowhere later in
	// the call, except on nodes where a preemption freed room: gen counts
	// preemptions and preemptLog[g] is the node of preemption g.
	gen        int
	preemptLog []int32
	noFit      map[fitKey]*negative
	noPreempt  map[preemptKey]string

	victims *victimIndex // built on the first preemption attempt
	chosen  []bool       // scratch of victimsOn

	rot  uint64 // rotating scan offset
	cand Candidate
}

// service counts the replicas of one service key.
type service struct {
	onNode map[int32]int32
	inZone []int32
}

func (s *service) on(i int32) int {
	if s == nil {
		return 0
	}
	return int(s.onNode[i])
}

type fitKey struct {
	cls        *class
	res        Resources
	svc        *service
	maxPerNode int
}

type preemptKey struct {
	fitKey
	band Band
}

type negative struct {
	gen    int
	reason string
	room   bool // some node lacks room (resources or an instance slot): preemption may help
}

func newState(cfg *Config, snap *Snapshot, queue []Request, now time.Time) *state {
	n := len(snap.Nodes)
	st := &state{
		cfg: cfg, snap: snap,
		plan: &Plan{
			Time:     now,
			Bindings: make([]Binding, 0, len(queue)),
		},
		nodes:     slices.Clone(snap.Nodes),
		free:      make([]Resources, n),
		inst:      make([]int32, n),
		maxInst:   make([]int32, n),
		zoneOf:    make([]int32, n),
		nameIdx:   make(map[string]int32, n),
		classes:   map[string]*class{},
		services:  map[string]*service{},
		tenantIdx: map[string]int32{},
		noFit:     map[fitKey]*negative{},
		noPreempt: map[preemptKey]string{},
		rot:       splitmix(uint64(cfg.Seed)),
	}
	zoneIdx := map[string]int32{}
	var maxMem, maxCPU int64
	for i := range st.nodes {
		nd := &st.nodes[i]
		st.nameIdx[nd.Name] = int32(i)
		st.free[i] = nd.Capacity.Sub(nd.Allocated)
		st.inst[i] = int32(nd.Instances)
		st.maxInst[i] = math.MaxInt32
		if nd.MaxInstances > 0 {
			st.maxInst[i] = int32(nd.MaxInstances)
		}
		st.zoneOf[i] = -1
		if z, ok := nd.Labels[ZoneLabel]; ok {
			zi, ok := zoneIdx[z]
			if !ok {
				zi = int32(len(zoneIdx))
				zoneIdx[z] = zi
				st.zoneUsed = append(st.zoneUsed, false)
			}
			st.zoneOf[i] = zi
		}
		if schedulable(nd) {
			maxMem = max(maxMem, nd.Capacity.MemoryBytes)
			maxCPU = max(maxCPU, nd.Capacity.MilliCPU)
			st.totalCPU += float64(nd.Capacity.MilliCPU)
			st.totalMem += float64(nd.Capacity.MemoryBytes)
			if st.zoneOf[i] >= 0 {
				st.zoneUsed[st.zoneOf[i]] = true
			}
		}
	}
	st.zones = len(zoneIdx)
	st.grid.init(n, maxMem, maxCPU)
	for i := range st.nodes {
		if schedulable(&st.nodes[i]) {
			st.grid.add(int32(i), st.free[i])
		}
	}
	st.initServices(queue)
	st.initTenants(queue)
	return st
}

func schedulable(n *Node) bool { return n.Ready && !n.Unschedulable }

// splitmix scrambles the seed into a starting scan offset.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// initServices counts the running replicas of every service key the queue
// mentions (other services cannot influence this call).
func (st *state) initServices(queue []Request) {
	for i := range queue {
		if k := queue[i].ServiceKey; k != "" && st.services[k] == nil {
			st.services[k] = &service{onNode: map[int32]int32{}, inZone: make([]int32, st.zones)}
		}
	}
	if len(st.services) == 0 {
		return
	}
	for i := range st.snap.Running {
		ru := &st.snap.Running[i]
		if ru.ServiceKey == "" {
			continue
		}
		if s := st.services[ru.ServiceKey]; s != nil {
			if ni, ok := st.nameIdx[ru.Node]; ok {
				st.addReplica(s, ni, 1)
			}
		}
	}
}

func (st *state) serviceOf(r *Request) *service {
	if r.ServiceKey == "" {
		return nil
	}
	return st.services[r.ServiceKey]
}

func (st *state) addReplica(s *service, i int32, d int32) {
	if s == nil {
		return
	}
	s.onNode[i] += d
	if z := st.zoneOf[i]; z >= 0 {
		s.inZone[z] += d
	}
}

// fewestInZone is the fewest replicas of s in any zone with a schedulable node.
func (st *state) fewestInZone(s *service) int {
	if s == nil {
		return 0
	}
	fewest := math.MaxInt32
	for z, n := range s.inZone {
		if st.zoneUsed[z] && int(n) < fewest {
			fewest = int(n)
		}
	}
	if fewest == math.MaxInt32 {
		return 0
	}
	return fewest
}

// feasible is the dynamic half of Fits for a statically feasible node.
func (st *state) feasible(i int32, r *Request, s *service) bool {
	f := &st.free[i]
	if f.MemoryBytes < r.Resources.MemoryBytes || f.MilliCPU < r.Resources.MilliCPU ||
		f.DiskBytes < r.Resources.DiskBytes || st.inst[i] >= st.maxInst[i] {
		return false
	}
	return r.MaxPerNode <= 0 || s == nil || int(s.onNode[i]) < r.MaxPerNode
}

// score is the weighted score of feasible node i for r.
func (st *state) score(i int32, r *Request, s *service, fewest int) float64 {
	c := &st.cand
	c.Node = &st.nodes[i]
	c.ReplicasOnNode, c.ReplicasInZone, c.FewestInZone = 0, -1, fewest
	if s != nil {
		c.ReplicasOnNode = int(s.onNode[i])
		if z := st.zoneOf[i]; z >= 0 {
			c.ReplicasInZone = int(s.inZone[z])
		}
	}
	var sum float64
	for _, ws := range st.cfg.Scorers {
		sum += ws.Weight * ws.Scorer.Score(r, c)
	}
	return sum
}

// adjust changes node i's allocation by d (placement: +1, eviction: -1).
func (st *state) adjust(i int32, res Resources, d int32) {
	nd := &st.nodes[i]
	if d > 0 {
		nd.Allocated = nd.Allocated.Add(res)
		st.free[i] = st.free[i].Sub(res)
	} else {
		nd.Allocated = nd.Allocated.Sub(res)
		st.free[i] = st.free[i].Add(res)
	}
	nd.Instances += int(d)
	st.inst[i] += d
	st.grid.update(i, st.free[i])
}
