package vmhost

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm"
	"github.com/cube-platform/cube/shim"
)

// Warm VM pool bounds and timing.
const (
	// maxWarmSizes bounds how many VM sizes keep warm VMs: each costs its
	// warm VMs' memory (~60 MiB each under TCG) and idle CPU (~2% of a
	// core each) for as long as the node runs.
	maxWarmSizes = 2
	// warmLaunchTimeout bounds one warm shim's launch (its restore and
	// rehearsal: ~1-2 s under TCG).
	warmLaunchTimeout = 2 * time.Minute
	// warmRetry is how long a size whose warm shim failed waits.
	warmRetry = 30 * time.Second
)

// warmPool keeps warm shims (shim.Config.Warm) for the VM sizes that have
// a ready template and were asked for: each holds a template's clone that
// has rehearsed an instance's start, which an instance's create adopts
// (shim.Adopt) instead of restoring a clone of its own. One is launched
// at a time, so warming never competes with more than itself for the
// node's CPU. Unadopted warm shims end with the pool; those of a pool
// that died with its node are stopped by the next one (sweep).
type warmPool struct {
	dir   string
	per   int // warm VMs per size
	shim  []string
	init  string // the rehearsal's program (cube-init)
	log   *slog.Logger
	wake  chan struct{}
	ready func(microvm.TemplateKey) (*microvm.Template, sandbox.VMOptions, bool)

	mu     sync.Mutex
	sizes  map[microvm.TemplateKey]*warmSize // protected by mu
	closed bool                              // protected by mu
	// done is closed when run has returned, its warm shims stopped.
	done chan struct{}
}

type warmSize struct {
	idle   []string // warm shims' sockets, oldest first
	taken  int      // handed out by take
	failed time.Time
}

func newWarmPool(dir string, per int, shimCmd []string, init string, log *slog.Logger,
	ready func(microvm.TemplateKey) (*microvm.Template, sandbox.VMOptions, bool)) *warmPool {
	return &warmPool{dir: dir, per: per, shim: shimCmd, init: init, log: log, wake: make(chan struct{}, 1), ready: ready,
		sizes: map[microvm.TemplateKey]*warmSize{}, done: make(chan struct{})}
}

// want asks for warm VMs of key's size. When maxWarmSizes are asked
// for already, a size whose template is not ready, or is stale (the
// kernel, agent or VMM changed since), makes room, and its warm VMs stop.
func (p *warmPool) want(key microvm.TemplateKey) {
	var stop []string
	p.mu.Lock()
	if _, ok := p.sizes[key]; !ok {
		if len(p.sizes) >= maxWarmSizes {
			for k, s := range p.sizes {
				if _, _, ok := p.ready(k); !ok {
					stop = append(stop, s.idle...)
					delete(p.sizes, k)
					break
				}
			}
		}
		if len(p.sizes) < maxWarmSizes {
			p.sizes[key] = &warmSize{}
		}
	}
	p.mu.Unlock()
	for _, sock := range stop {
		go stopWarm(sock)
	}
	p.poke()
}

func (p *warmPool) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take is the socket of an idle warm shim of key's size, now the
// caller's to adopt; false: none is ready. Either way the pool then
// looks for sizes short of warm VMs (of those asked for: want).
func (p *warmPool) take(key microvm.TemplateKey) (string, bool) {
	defer p.poke()
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.sizes[key]
	if !ok || len(s.idle) == 0 {
		return "", false
	}
	sock := s.idle[0]
	s.idle = s.idle[1:]
	s.taken++
	return sock, true
}

// count is how many warm VMs of key's size are idle, and how many were
// taken.
func (p *warmPool) count(key microvm.TemplateKey) (idle, taken int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.sizes[key]; ok {
		return len(s.idle), s.taken
	}
	return 0, 0
}

// run launches warm shims until every size asked for has its count,
// until ctx ends; then it stops the idle ones.
func (p *warmPool) run(ctx context.Context) {
	defer close(p.done)
	p.sweep(ctx)
	for {
		key, ok := p.next()
		if !ok {
			select {
			case <-ctx.Done():
				p.stopAll()
				return
			case <-p.wake:
				continue
			}
		}
		sock, err := p.launch(ctx, key)
		p.mu.Lock()
		s, wanted := p.sizes[key]
		switch {
		case !wanted:
			// Evicted meanwhile (want): its template went stale.
			p.mu.Unlock()
			if err == nil {
				stopWarm(sock)
			}
			continue
		case p.closed || ctx.Err() != nil:
			p.mu.Unlock()
			if err == nil {
				stopWarm(sock)
			}
			p.stopAll()
			return
		case err != nil:
			s.failed = time.Now()
			p.log.Warn("no warm vm: instances of this size restore their own clone", "size", key.Size(), "err", err)
		default:
			s.idle = append(s.idle, sock)
		}
		p.mu.Unlock()
		if err != nil {
			// Retried once a later create asks, after warmRetry.
			time.AfterFunc(warmRetry, p.poke)
		}
	}
}

// next is a size short of warm VMs whose template is ready.
func (p *warmPool) next() (microvm.TemplateKey, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, s := range p.sizes {
		if len(s.idle) >= p.per || !s.failed.IsZero() && time.Since(s.failed) < warmRetry {
			continue
		}
		if _, _, ok := p.ready(k); ok {
			return k, true
		}
	}
	return microvm.TemplateKey{}, false
}

// launch starts one warm shim of key's size and returns its socket.
func (p *warmPool) launch(ctx context.Context, key microvm.TemplateKey) (string, error) {
	t, vm, ok := p.ready(key)
	if !ok {
		return "", os.ErrNotExist
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "warm-" + hex.EncodeToString(b)
	vm.TemplateDir, vm.TemplateMemFD = t.Dir, shim.FirstExtraFD
	cfg := shim.Config{
		Socket: filepath.Join(p.dir, name, "shim.sock"), Backend: sandbox.BackendMicroVM, VM: vm,
		ExtraFiles: []*os.File{t.Mem},
		Warm:       &shim.WarmSpec{VCPUs: key.VCPUs, MemoryMiB: key.MemoryMiB, CgroupParent: "/cube/" + name, Program: p.init},
	}
	lctx, cancel := context.WithTimeout(ctx, warmLaunchTimeout)
	defer cancel()
	t0 := time.Now()
	if _, err := shim.Launch(lctx, p.shim, cfg); err != nil {
		os.RemoveAll(filepath.Dir(cfg.Socket))
		return "", err
	}
	p.log.Info("warm vm ready", "size", key.Size(), "shim", cfg.Socket, "took", time.Since(t0))
	return cfg.Socket, nil
}

// stopAll stops every idle warm shim (the node is going away).
func (p *warmPool) stopAll() {
	p.mu.Lock()
	p.closed = true
	var socks []string
	for _, s := range p.sizes {
		socks, s.idle = append(socks, s.idle...), nil
	}
	p.mu.Unlock()
	for _, sock := range socks {
		stopWarm(sock)
	}
}

func stopWarm(sock string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shim.Dial(sock).Shutdown(ctx)
}

// sweep stops the warm shims a previous node left (they were never
// adopted: an adopted one no longer serves on its warm socket) and
// removes the dirs nothing uses; an adopted warm shim's dir holds its
// VM's files until its instance is destroyed.
func (p *warmPool) sweep(ctx context.Context) {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		dir := filepath.Join(p.dir, e.Name())
		sock := filepath.Join(dir, "shim.sock")
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		alive := shim.Dial(sock).Ping(pctx) == nil
		cancel()
		_, adoptedErr := os.Stat(filepath.Join(dir, shim.AdoptedFile))
		_, vmErr := os.Stat(filepath.Join(dir, "warm-vm"))
		switch {
		case alive:
			// It removes what it made as it stops.
			p.log.Info("stopping a warm vm a previous node left", "shim", sock)
			stopWarm(sock)
		case adoptedErr == nil && vmErr == nil:
			// Its VM's files are an instance's, until it is removed.
		default:
			// Adopted, and its instance gone; or it died unadopted (its
			// VMM with it): what it left goes.
			if adoptedErr != nil {
				name := e.Name()
				if err := microvm.ReleaseWarm(ctx, name, "/cube/"+name); err != nil {
					p.log.Warn("release what a dead warm vm left", "name", name, "err", err)
				}
			}
			os.RemoveAll(dir)
		}
	}
}
