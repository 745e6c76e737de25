// Package vmhost is what a node needs to run microVMs, as a node.Runtimes:
// the guest kernel (found in the cache, or built in the background while
// the node runs runc alone), the initramfs of the guest agent and the
// container init installed beside the node's executable, QEMU, and the accelerator a real boot
// probe found (kvm, else tcg). The node offers microvm from the moment
// all of them are there.
package vmhost

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/guest/initramfs"
	"github.com/cube-platform/cube/guest/kernel"
	"github.com/cube-platform/cube/node"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/qemu"
)

// Config configures a Host.
type Config struct {
	// CacheDir holds the kernel and initramfs caches (default
	// kernel.DefaultCacheDir, /var/cache/cube).
	CacheDir string
	// Agent is the guest agent binary (default: cube-agent beside this
	// executable).
	Agent string
	// Init is the guest's container init binary (default: cube-init
	// beside this executable).
	Init string
	// QEMU is qemu-system-x86_64 (default: looked up in PATH).
	QEMU string
	// Build builds the guest kernel in the background when it is not
	// cached (cube up does; a test that only wants a cached kernel not).
	Build bool
	// TemplateDir keeps the node's VM templates (docs/microvm-templates.md);
	// empty: no templates, every VM boots cold.
	TemplateDir string
	// WarmVMs is how many warm VMs the node keeps per VM size it runs
	// (with a template), for creates to adopt; 0: none. They need
	// ShimCommand (node.Config's) and WarmDir, where their shims live.
	WarmVMs     int
	ShimCommand []string
	WarmDir     string
	Log         *slog.Logger
}

// Host implements node.Runtimes.
type Host struct {
	cfg     Config
	log     *slog.Logger
	builder *kernel.Builder
	runc    bool
	// templates is nil without Config.TemplateDir; warm nil without
	// warm VMs. Both set before the node runs.
	templates *templates
	warm      *warmPool

	mu     sync.Mutex
	vm     *sandbox.VMOptions // set once everything is there; protected by mu
	reason string             // why microvm is not offered; protected by mu
	probed bool               // protected by mu
	// warmStarted: the warm pool runs (Stop waits for it); protected by mu.
	warmStarted bool
}

var _ node.Runtimes = (*Host)(nil)

// New returns a host; Start finds (or builds) what VMs need.
func New(cfg Config) *Host {
	cfg.CacheDir = cmp.Or(cfg.CacheDir, kernel.DefaultCacheDir)
	log := cmp.Or(cfg.Log, slog.New(slog.DiscardHandler)).With("component", "vmhost")
	if exe, err := os.Executable(); err == nil {
		cfg.Agent = cmp.Or(cfg.Agent, filepath.Join(filepath.Dir(exe), "cube-agent"))
		cfg.Init = cmp.Or(cfg.Init, filepath.Join(filepath.Dir(exe), "cube-init"))
	}
	_, err := exec.LookPath("runc")
	h := &Host{cfg: cfg, log: log, runc: err == nil, reason: "not started"}
	if cfg.TemplateDir != "" {
		h.templates = newTemplates(cfg.TemplateDir, log, nil)
		if cfg.WarmVMs > 0 && len(cfg.ShimCommand) > 0 && cfg.WarmDir != "" {
			h.warm = newWarmPool(cfg.WarmDir, cfg.WarmVMs, cfg.ShimCommand, cfg.Init, log, h.readyTemplate)
			// A template that gets ready can have warm VMs.
			h.templates.changed = h.warm.poke
		}
	}
	return h
}

// Start finds the parts of a VM and, when the kernel is missing and Build
// is set, builds it in the background; microvm is offered once all are
// there (see Status). It returns at once.
func (h *Host) Start(ctx context.Context) {
	if _, ok := kernel.Find(h.cfg.CacheDir); !ok && h.cfg.Build {
		h.builder = kernel.NewBuilder(kernel.BuilderConfig{CacheDir: h.cfg.CacheDir, Logger: h.log})
		h.log.Info("no guest kernel cached: building it in the background; microvm instances wait until it is ready", "dir", kernel.Dir(h.cfg.CacheDir))
		h.builder.Start(ctx)
		go func() {
			<-h.builder.Done()
			h.find(ctx)
		}()
		h.setReason("guest kernel building")
		return
	}
	go h.find(ctx)
}

// Stop waits, until ctx ends, for what Start began to stop once its
// context was cancelled: the warm shims (a warm VM belongs to no instance;
// left running, it would run on after the node).
func (h *Host) Stop(ctx context.Context) {
	h.mu.Lock()
	started := h.warmStarted
	h.mu.Unlock()
	if h.warm == nil || !started {
		return
	}
	select {
	case <-h.warm.done:
	case <-ctx.Done():
	}
}

func (h *Host) setReason(r string) {
	h.mu.Lock()
	h.reason = r
	h.mu.Unlock()
}

// find assembles the VM options once the kernel is there.
func (h *Host) find(ctx context.Context) {
	vm, err := h.assemble(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.probed = true
	if err != nil {
		h.reason = err.Error()
		h.log.Warn("this node runs no microvm instances", "reason", err)
		return
	}
	h.vm, h.reason = vm, ""
	h.log.Info("microvm runtime ready", "kernel", vm.Kernel, "initrd", vm.Initrd, "accel", vm.Accel)
	if h.templates != nil {
		go h.templates.run(ctx, h.VM)
		if h.warm != nil {
			h.warmStarted = true // h.mu is held
			go h.warm.run(ctx)
		}
		vcpus, mib := defaultTemplateSize()
		if key, err := microvm.TemplateKeyFor(*vm, vcpus, mib); err == nil {
			h.templates.want(key)
			if h.warm != nil {
				go h.warm.want(key) // not under h.mu: it may ask h.VM
			}
		}
	}
}

func (h *Host) assemble(ctx context.Context) (*sandbox.VMOptions, error) {
	k, ok := kernel.Find(h.cfg.CacheDir)
	if !ok {
		if h.builder != nil {
			if st := h.builder.Status(); st.Err != nil {
				return nil, fmt.Errorf("guest kernel build failed: %w (see the log; make kernel retries)", st.Err)
			}
		}
		return nil, fmt.Errorf("no guest kernel in %s: run make kernel", kernel.Dir(h.cfg.CacheDir))
	}
	qemuBin := h.cfg.QEMU
	if qemuBin == "" {
		p, err := exec.LookPath("qemu-system-x86_64")
		if err != nil {
			return nil, errors.New("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
		}
		qemuBin = p
	}
	if h.cfg.Agent == "" || h.cfg.Init == "" {
		return nil, errors.New("no guest agent or container init binary: install cube-agent and cube-init beside cube")
	}
	initrd, err := h.initrd()
	if err != nil {
		return nil, err
	}
	accel := qemu.Probe(ctx, qemu.ProbeOptions{Binary: qemuBin, Kernel: k,
		CacheFile: filepath.Join(h.cfg.CacheDir, "accel.json"), Logger: h.log})
	return &sandbox.VMOptions{Kernel: k, Initrd: initrd, VMM: qemuBin, Accel: string(accel)}, nil
}

// Status implements node.Runtimes.
func (h *Host) Status() node.RuntimeStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	var st node.RuntimeStatus
	if h.vm != nil {
		st.Runtimes, st.Accelerator, st.GuestKernel = append(st.Runtimes, v1.RuntimeMicroVM), h.vm.Accel, "ready"
	} else if h.builder != nil {
		switch b := h.builder.Status(); {
		case b.Err != nil:
			st.GuestKernel = "failed: " + b.Err.Error()
		case h.probed:
			st.GuestKernel = "failed: " + h.reason
		default:
			st.GuestKernel = fmt.Sprintf("building %d%%", b.Percent)
		}
	} else if h.probed {
		st.GuestKernel = "unavailable: " + h.reason
	}
	if h.runc {
		st.Runtimes = append(st.Runtimes, v1.RuntimeRunc)
	}
	if h.templates != nil {
		count := func(microvm.TemplateKey) (int, int) { return 0, 0 }
		if h.warm != nil {
			count = h.warm.count
		}
		st.Templates = h.templates.status(count)
	}
	if len(st.GuestKernel) > maxStatus {
		st.GuestKernel = st.GuestKernel[:maxStatus-3] + "..."
	}
	return st
}

// maxStatus bounds the guest kernel's status in the node record (a build
// error can be long; the log has it whole).
const maxStatus = 240

func (h *Host) initrd() (string, error) {
	initrd, err := initramfs.Cached(h.cfg.CacheDir, h.cfg.Agent, h.cfg.Init)
	if err != nil {
		return "", fmt.Errorf("guest initramfs from %s and %s: %w (install cube-agent and cube-init beside cube: make install)", h.cfg.Agent, h.cfg.Init, err)
	}
	return initrd, nil
}

// VM implements node.Runtimes. The initramfs cache prunes archives no
// one used for a while (guest/initramfs): each VM's options mark theirs
// used, and one removed meanwhile is rebuilt.
func (h *Host) VM() (sandbox.VMOptions, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.vm == nil {
		return sandbox.VMOptions{}, false
	}
	now := time.Now()
	if err := os.Chtimes(h.vm.Initrd, now, now); errors.Is(err, os.ErrNotExist) {
		initrd, err := h.initrd()
		if err != nil {
			h.log.Warn("guest initramfs gone from the cache, and not rebuilt", "err", err)
			return sandbox.VMOptions{}, false
		}
		h.vm.Initrd = initrd
	}
	return *h.vm, true
}
