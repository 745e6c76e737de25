package bench

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cube-platform/cube/scheduler"
)

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// workload is a synthetic fleet and the requests to place on it.
type workload struct {
	nodes    []scheduler.Node
	tenants  []scheduler.Tenant
	requests []scheduler.Request // in arrival (Created) order
	start    time.Time
}

type nodeShape struct {
	cores, memGiB int64
	weight        int
}

// Fleet mix: mostly general-purpose sizes, a few memory- and cpu-heavy.
var nodeShapes = []nodeShape{
	{4, 16, 15}, {8, 32, 25}, {16, 64, 25}, {32, 128, 15}, {64, 256, 8},
	{16, 128, 6}, {48, 96, 6},
}

type reqShape struct {
	milli, memMiB, diskGiB int64
	weight                 int
}

// Request sizes before scaling: t-shirt sizes, mostly small.
var reqShapes = []reqShape{
	{250, 512, 1, 20}, {500, 1024, 2, 20}, {1000, 2048, 4, 15}, {1000, 4096, 4, 10},
	{2000, 4096, 8, 10}, {2000, 8192, 8, 7}, {4000, 8192, 16, 5}, {4000, 16384, 16, 4},
	{500, 4096, 4, 4}, {4000, 4096, 8, 4}, {8000, 32768, 32, 1},
}

var zones = []string{"zone-a", "zone-b", "zone-c"}

// generate builds the fleet and workload of cfg from cfg.Seed. Request sizes
// are scaled so that the total demand of cpu and of memory is
// cfg.Oversubscription times the schedulable capacity: demand exceeds
// supply, so fairness and preemption matter.
func generate(cfg Config) *workload {
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x5c4ed))
	w := &workload{start: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}

	images := make([]string, 200)
	for i := range images {
		images[i] = fmt.Sprintf("sha256:%016x%016x%016x%016x", rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64())
	}
	zipf := rand.NewZipf(rng, 1.2, 1, uint64(len(images)-1))

	w.tenants = make([]scheduler.Tenant, cfg.Tenants)
	weights := []float64{1, 1, 1, 2, 2, 4}
	var cum []float64
	var sum float64
	for i := range w.tenants {
		wt := weights[rng.IntN(len(weights))]
		w.tenants[i] = scheduler.Tenant{Name: fmt.Sprintf("tenant-%02d", i), Weight: wt}
		sum += wt
		cum = append(cum, sum)
	}
	dedicated := w.tenants[0].Name

	var capCPU, capMem float64
	w.nodes = make([]scheduler.Node, cfg.Nodes)
	for i := range w.nodes {
		sh := pick(rng, nodeShapes, func(s nodeShape) int { return s.weight })
		n := scheduler.Node{
			Name:         fmt.Sprintf("node-%05d", i),
			Labels:       map[string]string{scheduler.ZoneLabel: zones[i%len(zones)], "arch": "amd64"},
			Capacity:     scheduler.Resources{MilliCPU: sh.cores * 1000, MemoryBytes: sh.memGiB * gib, DiskBytes: sh.memGiB * 8 * gib},
			MaxInstances: 110,
			Ready:        true,
			Revision:     1,
		}
		switch p := rng.Float64(); {
		case p < 0.10:
			n.Labels["arch"] = "arm64"
		case p < 0.12:
			n.Labels["gpu"] = "true"
			n.Taints = []scheduler.Taint{{Key: "gpu", Value: "true", Effect: scheduler.NoSchedule}}
		case p < 0.125:
			n.Labels["dedicated"] = dedicated
			n.Taints = []scheduler.Taint{{Key: "dedicated", Value: dedicated, Effect: scheduler.NoSchedule}}
		case p < 0.128:
			n.Ready = false
		case p < 0.131:
			n.Unschedulable = true
		}
		for range 4 + rng.IntN(7) {
			n.CachedImages = append(n.CachedImages, images[zipf.Uint64()])
		}
		if n.Ready && !n.Unschedulable {
			capCPU += float64(n.Capacity.MilliCPU)
			capMem += float64(n.Capacity.MemoryBytes)
		}
		w.nodes[i] = n
	}

	// Scale the request menu so that demand = Oversubscription x capacity.
	var wsum, mCPU, mMem float64
	for _, s := range reqShapes {
		wsum += float64(s.weight)
		mCPU += float64(s.weight * int(s.milli))
		mMem += float64(s.weight * int(s.memMiB))
	}
	n := float64(max(cfg.Instances, 1))
	fCPU := cfg.Oversubscription * capCPU / n / (mCPU / wsum)
	fMem := cfg.Oversubscription * capMem / n / (mMem / wsum * float64(mib))
	shapes := make([]reqShape, len(reqShapes))
	for i, s := range reqShapes {
		shapes[i] = reqShape{
			milli:   max(10, int64(float64(s.milli)*fCPU/10+0.5)*10),
			memMiB:  max(64, int64(float64(s.memMiB)*fMem/16+0.5)*16),
			diskGiB: s.diskGiB,
			weight:  s.weight,
		}
	}

	w.requests = make([]scheduler.Request, cfg.Instances)
	for i := range w.requests {
		ti := 0
		for x := rng.Float64() * sum; cum[ti] < x; ti++ {
		}
		tn := w.tenants[ti].Name
		sh := pick(rng, shapes, func(s reqShape) int { return s.weight })
		r := scheduler.Request{
			ID:        fmt.Sprintf("i-%07d", i),
			Tenant:    tn,
			Resources: scheduler.Resources{MilliCPU: sh.milli, MemoryBytes: sh.memMiB * mib, DiskBytes: sh.diskGiB * gib},
			Image:     images[zipf.Uint64()],
			Created:   w.start.Add(time.Duration(i) * time.Millisecond),
		}
		switch p := rng.Float64(); {
		case p < 0.03:
			r.Band = scheduler.BandSystem
		case p < 0.30:
			r.Band = scheduler.BandProduction
		case p < 0.70:
			r.Band = scheduler.BandBatch
		default:
			r.Band = scheduler.BandBestEffort
		}
		if rng.IntN(2) == 0 {
			r.ServiceKey = fmt.Sprintf("%s/svc-%d", tn, rng.IntN(20))
			if rng.IntN(2) == 0 {
				r.MaxPerNode = 2
			}
		}
		switch p := rng.Float64(); {
		case p < 0.04:
			r.NodeSelector = map[string]string{"arch": "arm64"}
		case p < 0.07:
			r.NodeSelector = map[string]string{scheduler.ZoneLabel: zones[rng.IntN(len(zones))]}
		case p < 0.085:
			r.NodeSelector = map[string]string{"gpu": "true"}
			r.Tolerations = []scheduler.Toleration{{Key: "gpu", Operator: scheduler.OpExists}}
		}
		if tn == dedicated && rng.IntN(3) == 0 {
			r.Tolerations = append(r.Tolerations, scheduler.Toleration{Key: "dedicated", Value: dedicated, Effect: scheduler.NoSchedule})
		}
		w.requests[i] = r
	}
	return w
}

func pick[T any](rng *rand.Rand, items []T, weight func(T) int) T {
	total := 0
	for _, it := range items {
		total += weight(it)
	}
	x := rng.IntN(total)
	for _, it := range items {
		if x -= weight(it); x < 0 {
			return it
		}
	}
	return items[len(items)-1]
}

// Workload returns the synthetic fleet, tenants and requests (in arrival
// order) of cfg, so other harnesses (the through-store bench) run exactly
// what Run runs.
func Workload(cfg Config) (nodes []scheduler.Node, tenants []scheduler.Tenant, requests []scheduler.Request, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, nil, err
	}
	w := generate(cfg)
	return w.nodes, w.tenants, w.requests, nil
}
