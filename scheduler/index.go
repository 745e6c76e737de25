package scheduler

import "math/bits"

// gridSize is the resolution, per resource, of the free-resource index.
// Steps are logarithmic (four per doubling, down to 1/2048 of the largest
// node), so small free amounts, where a nearly full fleet sits, are told
// apart as finely as small requests need.
const gridSize = 48

// freeGrid indexes the schedulable nodes by free memory and free cpu: cell
// (m, c) holds the nodes whose free memory is in step m and free cpu in step
// c (see step). A request of memory in row m0 and cpu in column
// c0 can only fit nodes in cells (m >= m0, c >= c0), and the cells on the
// diagonals m+c nearest to (m0, c0) hold the nodes it would fill the
// tightest in both resources at once. Placements and evictions move a node
// between cells in O(1).
type freeGrid struct {
	uMem, uCPU int64 // units of step
	cells      [gridSize * gridSize][]int32
	cellOf     []int32 // -1: not indexed (not ready or cordoned)
	posOf      []int32
}

func (g *freeGrid) init(nodes int, maxMem, maxCPU int64) {
	g.uMem = max(1, maxMem>>11)
	g.uCPU = max(1, maxCPU>>11)
	g.cellOf = make([]int32, nodes)
	g.posOf = make([]int32, nodes)
	for i := range g.cellOf {
		g.cellOf[i] = -1
	}
}

// step maps an amount v to its step in units of u: 0 below one unit (and
// for none or negative), then four steps per doubling, capped at
// gridSize-1. It is monotone, so a node in a lower step than a request
// cannot hold it.
func step(v, u int64) int {
	if v < u {
		return 0
	}
	x := uint64(v / u)
	o := bits.Len64(x) - 1 // x is in [2^o, 2^(o+1))
	var sub uint64
	if o >= 2 {
		sub = (x >> (o - 2)) & 3
	} else {
		sub = (x << (2 - o)) & 3
	}
	return min(1+4*o+int(sub), gridSize-1)
}

// coord is the cell of a free amount, and the first row and column that can
// hold a request of that amount.
func (g *freeGrid) coord(r Resources) (m, c int) {
	return step(r.MemoryBytes, g.uMem), step(r.MilliCPU, g.uCPU)
}

// add indexes node i.
func (g *freeGrid) add(i int32, free Resources) {
	m, c := g.coord(free)
	k := m*gridSize + c
	g.cellOf[i] = int32(k)
	g.posOf[i] = int32(len(g.cells[k]))
	g.cells[k] = append(g.cells[k], i)
}

// update moves node i to the cell of its free resources now.
func (g *freeGrid) update(i int32, free Resources) {
	old := g.cellOf[i]
	if m, c := g.coord(free); old < 0 || int(old) == m*gridSize+c {
		return
	}
	cell := g.cells[old]
	last := cell[len(cell)-1]
	cell[g.posOf[i]] = last
	g.posOf[last] = g.posOf[i]
	g.cells[old] = cell[:len(cell)-1]
	g.add(i, free)
}
