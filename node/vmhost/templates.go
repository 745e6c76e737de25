package vmhost

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/node"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm"
)

// Template bounds and timing.
const (
	// MaxTemplates bounds how many VM sizes a node keeps a template of:
	// each costs its guest's booted RAM (tens of MiB) for as long as the
	// node runs. Sizes beyond it boot cold.
	MaxTemplates = 8
	// templateRetry is how long a size whose template failed to build
	// waits before the next instance of that size asks again.
	templateRetry = time.Minute
)

// templates keeps one template per VM size that the node runs, built in
// the background, one at a time, and held as sealed memfds (a clone maps
// its template's memory; the fd goes to each shim that clones it).
type templates struct {
	root string
	log  *slog.Logger

	mu      sync.Mutex
	entries map[microvm.TemplateKey]*templateEntry // protected by mu
	queue   []microvm.TemplateKey                  // protected by mu
	wake    chan struct{}
	changed func() // called when a template's state changes
}

type templateEntry struct {
	t      *microvm.Template
	state  string // "queued", "building", "ready", "failed: …"
	failed time.Time
}

func newTemplates(root string, log *slog.Logger, changed func()) *templates {
	return &templates{root: root, log: log, entries: map[microvm.TemplateKey]*templateEntry{}, wake: make(chan struct{}, 1), changed: changed}
}

// want queues key's template unless it is known (and has not failed
// lately) or the node has MaxTemplates already.
func (ts *templates) want(key microvm.TemplateKey) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if e, ok := ts.entries[key]; ok {
		if e.failed.IsZero() || time.Since(e.failed) < templateRetry {
			return
		}
	} else if len(ts.entries) >= MaxTemplates {
		return
	}
	ts.entries[key] = &templateEntry{state: "queued"}
	ts.queue = append(ts.queue, key)
	select {
	case ts.wake <- struct{}{}:
	default:
	}
}

// get is key's template once ready.
func (ts *templates) get(key microvm.TemplateKey) (*microvm.Template, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if e, ok := ts.entries[key]; ok && e.t != nil {
		return e.t, true
	}
	return nil, false
}

// run builds queued templates until ctx ends: from the disk when a
// previous run of the node saved it, else by booting one.
func (ts *templates) run(ctx context.Context, opts func() (sandbox.VMOptions, bool)) {
	if o, ok := opts(); ok {
		ts.prune(o)
	}
	for {
		ts.mu.Lock()
		var key microvm.TemplateKey
		ok := len(ts.queue) > 0
		if ok {
			key, ts.queue = ts.queue[0], ts.queue[1:]
			ts.entries[key].state = "building"
		}
		ts.mu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				ts.closeAll()
				return
			case <-ts.wake:
				continue
			}
		}
		ts.notify()
		t, err := ts.make(ctx, key, opts)
		ts.mu.Lock()
		e := ts.entries[key]
		if err != nil {
			e.state, e.failed = "failed: "+err.Error(), time.Now()
			ts.log.Warn("no template: instances of this size boot cold", "size", key.Size(), "err", err)
		} else {
			e.t, e.state, e.failed = t, "ready", time.Time{}
		}
		ts.mu.Unlock()
		ts.notify()
	}
}

func (ts *templates) make(ctx context.Context, key microvm.TemplateKey, opts func() (sandbox.VMOptions, bool)) (*microvm.Template, error) {
	if t, err := microvm.LoadTemplate(ts.root, key); err == nil {
		ts.log.Info("template loaded from disk", "size", key.Size(), "id", key.ID())
		return t, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		ts.log.Info("saved template not usable; building it again", "size", key.Size(), "err", err)
	}
	o, ok := opts()
	if !ok {
		return nil, fmt.Errorf("the node cannot run VMs now")
	}
	ts.log.Info("building a template in the background", "size", key.Size(), "id", key.ID())
	return microvm.BuildTemplate(ctx, o, key, ts.root, "/cube/template-"+key.ID(), ts.log)
}

// prune removes the saved templates no clone of this node can use: built
// for another kernel, agent or VMM (a key of today's binaries names
// another directory), or a build that never finished.
func (ts *templates) prune(o sandbox.VMOptions) {
	entries, err := os.ReadDir(ts.root)
	if err != nil {
		return
	}
	for _, e := range entries {
		dir := filepath.Join(ts.root, e.Name())
		key, err := microvm.SavedTemplateKey(dir)
		if err == nil {
			var now microvm.TemplateKey
			if now, err = microvm.TemplateKeyFor(o, key.VCPUs, key.MemoryMiB); err == nil && now.ID() == e.Name() && now == key {
				continue
			}
		}
		ts.log.Info("removing a saved template no clone can use", "dir", dir)
		os.RemoveAll(dir)
	}
}

func (ts *templates) notify() {
	if ts.changed != nil {
		ts.changed()
	}
}

func (ts *templates) closeAll() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, e := range ts.entries {
		if e.t != nil {
			e.t.Close()
			e.t = nil
		}
	}
}

// status is each size's template state, sorted by size.
func (ts *templates) status(warm func(microvm.TemplateKey) (idle, taken int)) []v1.TemplateStatus {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := make([]v1.TemplateStatus, 0, len(ts.entries))
	for k, e := range ts.entries {
		st := e.state
		if len(st) > 120 {
			st = st[:117] + "..."
		}
		idle, taken := warm(k)
		out = append(out, v1.TemplateStatus{Size: k.Size(), VCPUs: k.VCPUs, MemoryMiB: k.MemoryMiB, State: st, Warm: idle, WarmTaken: taken})
	}
	sort.Slice(out, func(i, j int) bool {
		return cmp.Or(cmp.Compare(out[i].VCPUs, out[j].VCPUs), cmp.Compare(out[i].MemoryMiB, out[j].MemoryMiB)) < 0
	})
	return out
}

// Template implements node.Runtimes: the ready template for spec's VM
// size, with an idle warm shim of it if there is one (taken: the pool
// warms another), or false (and its build queued, so a later instance of
// that size clones it).
func (h *Host) Template(spec sandbox.Spec, vm sandbox.VMOptions) (node.Template, bool) {
	if h.templates == nil {
		return node.Template{}, false
	}
	vcpus, mib := microvm.SizeOf(spec)
	key, err := microvm.TemplateKeyFor(vm, vcpus, mib)
	if err != nil {
		h.log.Warn("no template key", "err", err)
		return node.Template{}, false
	}
	if h.warm != nil {
		// A size in use keeps warm VMs once its template is ready.
		h.warm.want(key)
	}
	if t, ok := h.templates.get(key); ok {
		nt := node.Template{Dir: t.Dir, Mem: t.Mem}
		if h.warm != nil {
			nt.Warm, _ = h.warm.take(key)
		}
		return nt, true
	}
	h.templates.want(key)
	return node.Template{}, false
}

// readyTemplate is key's ready template and the VM options of today.
func (h *Host) readyTemplate(key microvm.TemplateKey) (*microvm.Template, sandbox.VMOptions, bool) {
	vm, ok := h.VM()
	if !ok {
		return nil, vm, false
	}
	if now, err := microvm.TemplateKeyFor(vm, key.VCPUs, key.MemoryMiB); err != nil || now != key {
		return nil, vm, false // the binaries changed: another key now
	}
	t, ok := h.templates.get(key)
	return t, vm, ok
}

// defaultTemplateSize is the VM of an instance with one container of
// the API's default size: the template the node builds first.
func defaultTemplateSize() (vcpus, mib int) {
	cpu, _ := v1.ParseCPU(v1.DefaultCPU)
	mem, _ := v1.ParseMemory(v1.DefaultMemory)
	return microvm.SizeOf(sandbox.Spec{Containers: []sandbox.ContainerSpec{{MilliCPU: cpu, MemoryBytes: mem}}})
}
