package microvm

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
	imagepkg "github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/cpuweight"
	"github.com/cube-platform/cube/sandbox/disk"
	"github.com/cube-platform/cube/sandbox/microvm/tap"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/jail"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/qemu"
)

// A warm VM is a template's clone restored ahead of any instance and
// warmed: under TCG a clone runs all of an instance's start (Setup's
// mounts, netlink and cgroups, a container's init and exec) for the first
// time, and QEMU translates each piece of guest code on its first run,
// which is most of a clone's start (docs/microvm-templates.md). A warm
// VM has run a rehearsal of that start on scratch drives, then had its
// agent Reset; an instance's sandbox adopts it (UseWarm) and takes it
// over in a few QMP calls: its drives put behind the VM's (ReplaceDrive),
// the VMM moved into its cgroup and jail uid, the card's tap into its
// network namespace.
const (
	// warmDiskBytes is a warm VM's scratch writable drive.
	warmDiskBytes = 64 << 20
	// warmProgram is where the rehearsal's image holds its program.
	warmProgram = "/warm"
	// warmDirFile, in an adopting sandbox's state dir, names the warm
	// VM's dir, for whoever cleans up after the sandbox.
	warmDirFile = "warm-dir"
	// warmMilliCPU is a warming VM's cpu weight: the least there is.
	warmMilliCPU = 1
)

// WarmOptions configure Warm.
type WarmOptions struct {
	// Dir is made for the warm VM's files (its VMM's sockets and jail dir,
	// the scratch drives); it must not exist. It goes when the VM ends.
	Dir string
	// CgroupParent is the warm VM's cgroup until a sandbox adopts it.
	CgroupParent string
	// Program is a static binary the rehearsal's container runs (any
	// exit is fine: it is the start that warms); "" starts no container.
	Program string
	// Name is the warm VM's jail uid's name until adopted (default: a
	// random "warm-…"): whoever cleans up after a warm VM that died
	// unadopted releases it (ReleaseWarm).
	Name string
	Log  *slog.Logger
}

// ReleaseWarm removes what a warm VM named name left when it died
// unadopted (its VMM is gone with its shim): its jail uid, and the
// cgroup cgroupParent ("" for none).
func ReleaseWarm(ctx context.Context, name, cgroupParent string) error {
	var errs []error
	if cgroupParent != "" {
		for _, p := range []string{filepath.Join(cgroupParent, "vmm"), cgroupParent} {
			if err := (&jail.Cgroup{Path: p}).Remove(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := jail.ReleaseID(IDDir, name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// WarmVM is a warm VM, ready to be adopted once.
type WarmVM struct {
	key    TemplateKey
	name   string // its jail uid's name until adopted
	dir    string
	cgroup string
	vm     *qemu.VM
	agent  *agentapi.Client
	nic    *os.File // the host's copy of the card's tap (tap.Move)
	// Rehearsal is how long warming took (restore to Reset).
	Rehearsal time.Duration
}

// Close stops a warm VM nobody adopted and removes its files.
func (w *WarmVM) Close(ctx context.Context) error {
	w.agent.Close()
	err := w.vm.Stop(ctx)
	w.nic.Close()
	w.release(ctx)
	return err
}

// release removes what the warm VM made besides its VMM.
func (w *WarmVM) release(ctx context.Context) {
	os.RemoveAll(w.dir)
	if w.cgroup != "" {
		(&jail.Cgroup{Path: w.cgroup}).Remove(ctx)
	}
	jail.ReleaseID(IDDir, w.name)
}

// Warm restores a clone of t under o, rehearses an instance's start in
// it and resets it.
func Warm(ctx context.Context, o sandbox.VMOptions, t *Template, wo WarmOptions) (_ *WarmVM, err error) {
	start := time.Now()
	log := cmp.Or(wo.Log, slog.Default()).With("component", "sandbox/microvm", "template", t.Key.ID())
	if !strings.HasPrefix(filepath.Base(wo.Dir), "warm-") {
		return nil, fmt.Errorf("warm vm: dir %s: its name must start with warm-: %w", wo.Dir, errdefs.ErrInvalid)
	}
	if err := os.Mkdir(wo.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("warm vm: %w", err)
	}
	w := &WarmVM{key: t.Key, name: cmp.Or(wo.Name, "warm-"+randomHex(6)), dir: wo.Dir, cgroup: wo.CgroupParent}
	defer func() {
		if err != nil {
			w.release(context.WithoutCancel(ctx))
		}
	}()
	uid, err := jail.AllocateID(IDDir, w.name)
	if err != nil {
		return nil, err
	}
	rw, image, empty := filepath.Join(w.dir, "rw.img"), filepath.Join(w.dir, "image.erofs"), filepath.Join(w.dir, templateEmpty)
	if err := disk.Make(ctx, rw, warmDiskBytes, ""); err != nil {
		return nil, err
	}
	if err := rehearsalImage(ctx, image, wo.Program); err != nil {
		return nil, err
	}
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		return nil, err
	}
	drives := append([]vmm.Drive{{ID: writableDrive, Path: rw}, {ID: "img0", Path: image, ReadOnly: true}}, placeholderSlots(1, empty)...)
	cfg := baseConfig(o, w.name, filepath.Join(w.dir, "vmm"), uid, t.Key.VCPUs, t.Key.MemoryMiB, drives)
	if err := os.Mkdir(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	cfg.Jail.CgroupParent = wo.CgroupParent
	if wo.CgroupParent != "" {
		// Warming is background work: it must not slow the start of the
		// instance whose adoption made the node warm a replacement, whose
		// weight may be a few milli-cpus'. An adoption moves the VMM into
		// its instance's cgroup, with the instance's weight.
		if err := cpuweight.Set(wo.CgroupParent, warmMilliCPU); err != nil {
			return nil, err
		}
	}
	// Any instance's writable layer fits behind the drive later.
	cfg.MaxWritableBytes = PlaceholderBytes
	cfg.Memory = &vmm.Memory{File: t.Mem}
	if w.nic, err = tap.OpenIsolated(tapName); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			w.nic.Close()
		}
	}()
	cfg.Net = &vmm.NIC{Tap: tapName, MAC: randomMAC(), Isolated: true, File: w.nic}
	in, err := os.Open(filepath.Join(t.Dir, templateState))
	if err != nil {
		return nil, err
	}
	defer in.Close()
	cfg.Incoming = in
	drv, err := newDriver(o, log)
	if err != nil {
		return nil, err
	}
	timeout := vmm.DefaultBootTimeout(vmm.Accel(t.Key.Accel))
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if w.vm, err = drv.StartVM(bctx, cfg); err != nil {
		return nil, fmt.Errorf("warm vm: %w", err)
	}
	defer func() {
		if err != nil {
			w.vm.Stop(context.WithoutCancel(ctx))
		}
	}()
	var info agentapi.Info
	if w.agent, info, err = connectAgent(bctx, w.vm, cfg.AgentSocket, timeout, 0); err != nil {
		return nil, err
	}
	if info.SetupDone {
		w.agent.Close()
		return nil, fmt.Errorf("warm vm: the template's agent was set up (a template must be pristine): %w", errdefs.ErrInvalid)
	}
	if err := w.rehearse(bctx, wo.Program != ""); err != nil {
		w.agent.Close()
		return nil, fmt.Errorf("warm vm: rehearsal: %w", err)
	}
	w.Rehearsal = time.Since(start)
	log.Debug("warm vm ready", "pid", w.vm.Pid(), "took", w.Rehearsal)
	return w, nil
}

// rehearse runs what an instance's start runs, on the scratch drives and
// a network of nothing (the card reaches no one), then resets the agent.
func (w *WarmVM) rehearse(ctx context.Context, program bool) error {
	req := &agentapi.SetupRequest{
		Hostname: "warm", PidsLimit: 64, Entropy: entropy(), TimeUnixNano: time.Now().UnixNano(), Rehearsal: true,
		// Another MAC than the card's: an instance's Setup changes it.
		Network: &agentapi.Network{Mac: randomMAC().String(), Ipv4Cidr: "169.254.77.2/30", Gateway: "169.254.77.1",
			Routes: []*agentapi.Route{{Destination: "169.254.78.0/24", Gateway: "169.254.77.1"}}, DnsServers: []string{"169.254.77.1"}},
		Drives: []*agentapi.Drive{
			{Serial: writableDrive, Role: agentapi.DriveRole_DRIVE_ROLE_WRITABLE, FsType: "ext4"},
			{Serial: "img0", Role: agentapi.DriveRole_DRIVE_ROLE_IMAGE, FsType: "erofs"},
		},
		Containers: []*agentapi.ContainerSpec{{Name: "warm", ImageDrive: "img0", Args: []string{warmProgram}, Env: []string{"PATH=/"}, Cwd: "/"}},
	}
	if err := w.agent.Setup(ctx, req); err != nil {
		return err
	}
	if _, _, err := syncClock(ctx, w.agent, nil); err != nil {
		return err
	}
	if program {
		p := agentapi.Process{Container: "warm"}
		if _, err := w.agent.Start(ctx, "warm"); err != nil {
			return err
		}
		for _, s := range []agentapi.Stream{agentapi.Stream_STREAM_STDOUT, agentapi.Stream_STREAM_STDERR} {
			if _, err := w.agent.CopyOutput(ctx, p, s, io.Discard); err != nil {
				return err
			}
		}
		if _, err := w.agent.Wait(ctx, p); err != nil {
			return err
		}
	}
	return w.agent.Reset(ctx)
}

// rehearsalImage makes the rehearsal's image: an erofs holding program
// (if any) as /warm.
func rehearsalImage(ctx context.Context, image, program string) error {
	stage, err := os.MkdirTemp(filepath.Dir(image), ".stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	if program != "" {
		b, err := os.ReadFile(program)
		if err != nil {
			return fmt.Errorf("warm vm: the rehearsal's program: %w", err)
		}
		if err := os.WriteFile(filepath.Join(stage, warmProgram), b, 0o755); err != nil {
			return err
		}
	}
	return imagepkg.BuildBlockImage(ctx, stage, image)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// UseWarm has sb, a microvm sandbox not yet created, adopt w at Create
// instead of restoring a clone of its own. A warm VM that does not fit
// (another size, too many images) or whose adoption fails is stopped,
// and the sandbox boots as without it. The sandbox owns w from now on.
func UseWarm(sb sandbox.Sandbox, w *WarmVM) error {
	s, ok := sb.(*vmSandbox)
	if !ok {
		return fmt.Errorf("not a microvm sandbox: %w", errdefs.ErrInvalid)
	}
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.mu.Lock()
	created := s.created
	s.mu.Unlock()
	if created || s.warm != nil {
		return fmt.Errorf("sandbox %s: too late for a warm vm: %w", s.spec.ID, errdefs.ErrConflict)
	}
	s.warm = w
	return nil
}

// adopt takes w over as this sandbox's VM (see WarmVM). On error w is
// stopped and gone. Preconditions: lifeMu held, no VM running.
func (s *vmSandbox) adopt(ctx context.Context, w *WarmVM) (err error) {
	start := time.Now()
	defer func() {
		if err != nil {
			w.Close(context.WithoutCancel(ctx))
		}
	}()
	vcpus, mib := s.size()
	key, err := TemplateKeyFor(s.opts, vcpus, mib)
	if err != nil {
		return err
	}
	if key != w.key {
		return fmt.Errorf("the warm vm is a clone of %s (%s), not of this vm's template %s (%s): %w", w.key.ID(), w.key.Size(), key.ID(), key.Size(), errdefs.ErrConflict)
	}
	if n := len(s.drives) - 1; n > TemplateImageSlots {
		return fmt.Errorf("%d images; a warm vm has room for %d: %w", n, TemplateImageSlots, errdefs.ErrInvalid)
	}
	// Recorded first: whoever cleans up after this sandbox (a later
	// shim's Create after a crash) removes the warm VM's files too.
	if err := os.WriteFile(filepath.Join(s.spec.StateDir, warmDirFile), []byte(w.dir), 0o600); err != nil {
		return err
	}
	// Three independent moves, at once: the drives (QMP), the cgroup and
	// uid (cgroupfs, the id dir), the card (netlink; a netdev's move
	// between namespaces waits for RCU).
	var took [3]time.Duration
	timed := func(i int, fn func() error) func() error {
		return func() error {
			t0 := time.Now()
			err := fn()
			took[i] = time.Since(t0)
			return err
		}
	}
	var g errgroup.Group
	g.Go(timed(0, func() error {
		for _, d := range s.drives {
			if err := w.vm.ReplaceDrive(ctx, d); err != nil {
				return err
			}
		}
		return nil
	}))
	g.Go(timed(1, func() error {
		if s.spec.CgroupParent != "" {
			if err := w.vm.MoveCgroup(ctx, s.spec.CgroupParent); err != nil {
				return err
			}
			if w.cgroup != "" {
				(&jail.Cgroup{Path: w.cgroup}).Remove(ctx)
			}
		}
		_, err := jail.RenameID(s.idDir, w.name, s.spec.ID)
		return err
	}))
	g.Go(timed(2, func() error {
		if s.spec.NetNS == "" {
			return nil
		}
		// The instance's eth0 has its tap from now on; Connect wires it.
		if err := tap.Remove(s.spec.NetNS, "eth0", tapName); err != nil {
			return err
		}
		return tap.Move(w.nic, s.spec.NetNS)
	}))
	if err := g.Wait(); err != nil {
		return err
	}
	w.nic.Close()
	steps := []any{"drives", took[0].String(), "cgroup-uid", took[1].String(), "tap", took[2].String()}
	s.log.Debug("adopted a warm vm", steps...)
	s.log.Info("vm booted", "from", FromWarm, "pid", w.vm.Pid(), "adopt", time.Since(start), "accel", w.key.Accel)
	booted := make(chan struct{})
	s.mu.Lock()
	s.vm, s.agent, s.booted, s.isSetup = w.vm, w.agent, booted, false
	s.liveDrives, s.liveIsolatedNIC = 1+TemplateImageSlots, s.spec.NetNS == ""
	s.record = BootRecord{VMMPid: w.vm.Pid(), BootMs: float64(time.Since(start).Microseconds()) / 1000, From: FromWarm,
		GuestMiB: w.key.MemoryMiB, Accel: w.key.Accel}
	s.vmStarted = start
	s.mu.Unlock()
	go s.watch(w.vm, w.agent, booted)
	return nil
}

// removeWarmDir removes the files of the warm VM this sandbox adopted,
// once its VMM is gone. Preconditions: lifeMu held, no VM running.
func (s *vmSandbox) removeWarmDir() error {
	p := filepath.Join(s.spec.StateDir, warmDirFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	// Written by this package, in a root-only dir; still, only ever a
	// warm VM's dir.
	dir := string(b)
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir || !strings.HasPrefix(filepath.Base(dir), "warm-") {
		return fmt.Errorf("sandbox %s: %s names %q, not a warm vm's dir: %w", s.spec.ID, warmDirFile, dir, errdefs.ErrInvalid)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Remove(p)
}
