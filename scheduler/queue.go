package scheduler

import (
	"cmp"
	"slices"
	"strings"
)

// tenant is one tenant's fair-share state during a Schedule call.
type tenant struct {
	name     string
	weight   float64
	cpu, mem float64 // in use, including this call's placements
	share    float64 // weighted dominant share
	pending  []int32 // queue indices of this tenant in the current band, FIFO
	next     int     // first undecided entry of pending
	heapPos  int     // position in the band's heap, -1 when not in it
}

func (st *state) tenantOf(name string) int32 {
	if ti, ok := st.tenantIdx[name]; ok {
		return ti
	}
	ti := int32(len(st.tenants))
	st.tenants = append(st.tenants, tenant{name: name, weight: 1, heapPos: -1})
	st.tenantIdx[name] = ti
	return ti
}

// initTenants registers the snapshot's tenants and every tenant the queue or
// the running instances name, and sums their current usage.
func (st *state) initTenants(queue []Request) {
	for _, t := range st.snap.Tenants {
		ti := st.tenantOf(t.Name)
		if t.Weight > 0 {
			st.tenants[ti].weight = t.Weight
		}
	}
	for i := range queue {
		st.tenantOf(queue[i].Tenant)
	}
	for i := range st.snap.Running {
		ru := &st.snap.Running[i]
		t := &st.tenants[st.tenantOf(ru.Tenant)]
		t.cpu += float64(ru.Resources.MilliCPU)
		t.mem += float64(ru.Resources.MemoryBytes)
	}
	for ti := range st.tenants {
		st.reshare(int32(ti))
	}
}

// use adds d times res to tenant ti's usage and keeps the heap in order.
func (st *state) use(ti int32, res Resources, d float64) {
	t := &st.tenants[ti]
	t.cpu += d * float64(res.MilliCPU)
	t.mem += d * float64(res.MemoryBytes)
	st.reshare(ti)
	if t.heapPos >= 0 {
		st.heap.fix(st, t.heapPos)
	}
}

// reshare recomputes the weighted dominant share of tenant ti:
// max(cpu_used/cpu_total, mem_used/mem_total) / weight.
func (st *state) reshare(ti int32) {
	t := &st.tenants[ti]
	var s float64
	if st.totalCPU > 0 {
		s = t.cpu / st.totalCPU
	}
	if st.totalMem > 0 {
		s = max(s, t.mem/st.totalMem)
	}
	t.share = s / t.weight
}

// order sorts the valid queue entries by band (highest first), tenant and
// FIFO (created, then ID) and returns their indices.
func (st *state) order(queue []Request, valid []int32) []int32 {
	tenantOf := make([]int32, len(queue))
	for _, qi := range valid {
		tenantOf[qi] = st.tenantIdx[queue[qi].Tenant]
	}
	slices.SortFunc(valid, func(a, b int32) int {
		ra, rb := &queue[a], &queue[b]
		if ra.Band != rb.Band {
			return cmp.Compare(rb.Band, ra.Band)
		}
		if tenantOf[a] != tenantOf[b] {
			return cmp.Compare(tenantOf[a], tenantOf[b])
		}
		if c := ra.Created.Compare(rb.Created); c != 0 {
			return c
		}
		return strings.Compare(ra.ID, rb.ID)
	})
	return valid
}

// run decides every request of sorted (as returned by order): band by band;
// within a band, always the next request of the tenant with the smallest
// weighted dominant share.
func (st *state) run(queue []Request, sorted []int32) {
	for start := 0; start < len(sorted); {
		band := queue[sorted[start]].Band
		end := start
		for end < len(sorted) && queue[sorted[end]].Band == band {
			end++
		}
		st.heap.items = st.heap.items[:0]
		for s := start; s < end; {
			ti := st.tenantIdx[queue[sorted[s]].Tenant]
			e := s
			for e < end && st.tenantIdx[queue[sorted[e]].Tenant] == ti {
				e++
			}
			t := &st.tenants[ti]
			t.pending, t.next = sorted[s:e], 0
			st.heap.push(st, ti)
			s = e
		}
		for len(st.heap.items) > 0 {
			ti := st.heap.items[0]
			t := &st.tenants[ti]
			qi := t.pending[t.next]
			t.next++
			st.decide(&queue[qi], ti)
			if t = &st.tenants[ti]; t.next == len(t.pending) {
				st.heap.remove(st, t.heapPos)
			} else {
				st.heap.fix(st, t.heapPos)
			}
		}
		start = end
	}
}

// tenantHeap is a binary min-heap of tenant indices ordered by share, then
// name (so equal shares are served in a reproducible order).
type tenantHeap struct{ items []int32 }

func (h *tenantHeap) less(st *state, a, b int) bool {
	ta, tb := &st.tenants[h.items[a]], &st.tenants[h.items[b]]
	if ta.share != tb.share {
		return ta.share < tb.share
	}
	return ta.name < tb.name
}

func (h *tenantHeap) swap(st *state, a, b int) {
	h.items[a], h.items[b] = h.items[b], h.items[a]
	st.tenants[h.items[a]].heapPos = a
	st.tenants[h.items[b]].heapPos = b
}

func (h *tenantHeap) push(st *state, ti int32) {
	h.items = append(h.items, ti)
	st.tenants[ti].heapPos = len(h.items) - 1
	h.up(st, len(h.items)-1)
}

func (h *tenantHeap) remove(st *state, i int) {
	last := len(h.items) - 1
	if i != last {
		h.swap(st, i, last)
	}
	st.tenants[h.items[last]].heapPos = -1
	h.items = h.items[:last]
	if i != last {
		h.fix(st, i)
	}
}

func (h *tenantHeap) fix(st *state, i int) {
	if !h.down(st, i) {
		h.up(st, i)
	}
}

func (h *tenantHeap) up(st *state, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(st, i, p) {
			return
		}
		h.swap(st, i, p)
		i = p
	}
}

func (h *tenantHeap) down(st *state, i int) bool {
	start := i
	n := len(h.items)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h.less(st, r, l) {
			m = r
		}
		if !h.less(st, m, i) {
			break
		}
		h.swap(st, i, m)
		i = m
	}
	return i > start
}
