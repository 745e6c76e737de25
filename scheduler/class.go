package scheduler

import (
	"slices"
	"strconv"
	"strings"
)

// class is an equivalence class of requests (same runtime, selector and
// tolerations).
type class struct {
	ok     []uint64 // bitset over nodes: statically feasible
	nodes  []int32  // the statically feasible nodes, in snapshot order
	static []reasonCount
}

func (c *class) has(i int32) bool { return c.ok[i>>6]&(1<<(uint(i)&63)) != 0 }

type reasonCount struct {
	text string
	n    int
}

// classOf returns the equivalence class of r, computing it on first use.
func (st *state) classOf(r *Request) *class {
	if len(r.NodeSelector) == 0 && len(r.Tolerations) == 0 && r.Runtime == "" {
		if st.plain == nil {
			st.plain = st.newClass(r)
		}
		return st.plain
	}
	st.keyNames = st.keyNames[:0]
	for k := range r.NodeSelector {
		st.keyNames = append(st.keyNames, k)
	}
	slices.Sort(st.keyNames)
	b := append(st.keyBuf[:0], r.Runtime...)
	b = append(b, 0)
	for _, k := range st.keyNames {
		b = append(b, k...)
		b = append(b, 0)
		b = append(b, r.NodeSelector[k]...)
		b = append(b, 0)
	}
	b = append(b, 1)
	for _, t := range r.Tolerations {
		b = append(b, t.Key...)
		b = append(b, 0)
		b = append(b, t.Operator...)
		b = append(b, 0)
		b = append(b, t.Value...)
		b = append(b, 0)
		b = append(b, t.Effect...)
		b = append(b, 0)
	}
	st.keyBuf = b
	if c, ok := st.classes[string(b)]; ok {
		return c
	}
	c := st.newClass(r)
	st.classes[string(b)] = c
	return c
}

func (st *state) newClass(r *Request) *class {
	c := &class{ok: make([]uint64, (len(st.nodes)+63)/64)}
	counts := map[string]int{}
	for i := range st.nodes {
		why, taint := staticFit(&st.nodes[i], r)
		if why != fitOK {
			counts[why.text(taint, r)]++
			continue
		}
		c.ok[i>>6] |= 1 << (uint(i) & 63)
		c.nodes = append(c.nodes, int32(i))
	}
	for text, n := range counts {
		c.static = append(c.static, reasonCount{text, n})
	}
	return c
}

// explain counts, over all nodes, the first reason each one refuses r. It
// also returns how many refuse it for the service bound alone and how many
// for lack of room (which evictions could make).
func (st *state) explain(r *Request, c *class, s *service) (why string, spread, room int) {
	counts := slices.Clone(c.static)
	var dyn [rInvalid + 1]int
	for _, i := range c.nodes {
		nd := &st.nodes[i]
		w := dynamicFit(st.free[i], nd.Instances, nd.MaxInstances, 0, r)
		if w == fitOK && r.MaxPerNode > 0 {
			w = dynamicFit(st.free[i], nd.Instances, nd.MaxInstances, s.on(i), r)
		}
		dyn[w]++
	}
	for w, n := range dyn {
		if n > 0 {
			counts = append(counts, reasonCount{reason(w).text("", r), n})
		}
	}
	slices.SortFunc(counts, func(a, b reasonCount) int {
		if a.n != b.n {
			return b.n - a.n
		}
		return strings.Compare(a.text, b.text)
	})
	var sb strings.Builder
	sb.WriteString("0/")
	sb.WriteString(strconv.Itoa(len(st.nodes)))
	sb.WriteString(" nodes: ")
	if len(counts) == 0 {
		sb.WriteString("no nodes")
	}
	for k, rc := range counts {
		if k > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(strconv.Itoa(rc.n))
		sb.WriteByte(' ')
		sb.WriteString(rc.text)
	}
	return sb.String(), dyn[rAntiAffinity], dyn[rMemory] + dyn[rCPU] + dyn[rDisk] + dyn[rMaxInstances]
}
