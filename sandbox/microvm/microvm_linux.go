package microvm

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
	"github.com/cube-platform/cube/guest/kernel"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/cpuweight"
	"github.com/cube-platform/cube/sandbox/disk"
	"github.com/cube-platform/cube/sandbox/microvm/tap"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/jail"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/qemu"
)

// Sizing and timing defaults.
const (
	// AgentOverheadMiB is the guest memory above the containers' own: the
	// guest kernel, the agent and the page cache of the image drives.
	AgentOverheadMiB = 64
	// DefaultContainerMiB is what a container without a memory limit
	// counts for when the VM is sized.
	DefaultContainerMiB = 256
	// InitOverheadMiB is what each container's init (cube-init, 2.9 MiB
	// resident measured, with room for its page tables and buffers) adds
	// to the guest.
	InitOverheadMiB = 4
	// DefaultDiskBytes is the writable layer's size when Spec.DiskBytes is 0.
	DefaultDiskBytes = 1 << 30
	// tapName is the VM's tap in the instance's namespace, beside eth0.
	tapName = "tap0"
	// shutdownGrace is how long the agent gets to power the VM off on
	// Destroy before the VMM is stopped.
	shutdownGrace = 5 * time.Second
	// agentLostGrace is how long an agent that failed a Wait has for its
	// VM to end before the VM is stopped.
	agentLostGrace = 10 * time.Second
	// ReasonAgentLost: the guest agent stopped answering for a container
	// while its VM ran (a hostile or broken guest); the VM is stopped.
	ReasonAgentLost = "GuestAgentLost"
	// IDDir records the uid of each VM's VMM, host-wide: two VMMs of one
	// host never share a uid, whoever started them.
	IDDir = "/run/cube/vmm-ids"
	// writableDrive is the virtio serial of the writable layer.
	writableDrive = "rw"
	// ReasonTemplateFallback: the VM could not be cloned from its
	// template (damaged, stale, or its restore failed) and booted cold.
	ReasonTemplateFallback = "TemplateFallback"
)

var _ sandbox.Sandbox = (*vmSandbox)(nil)

// Factory builds a microvm sandbox for spec (sandbox.Factory).
func Factory(spec sandbox.Spec, opts sandbox.Options) (sandbox.Sandbox, error) {
	return New(spec, opts)
}

// vmSandbox is one instance in one VM: the VMM (a jailed QEMU, child of
// this process), the agent connection, and what the host knows of each
// container.
type vmSandbox struct {
	spec   sandbox.Spec
	opts   sandbox.VMOptions
	log    *slog.Logger
	driver *qemu.Driver
	layer  string // the writable layer file
	idDir  string // node-wide VMM uid allocations
	drives []vmm.Drive
	setup  *agentapi.SetupRequest // without Network, which Connect adds
	users  map[string][2]uint32   // uid, gid of each container
	env    map[string][]string    // each container's env (execs inherit it)
	cwd    map[string]string      // each container's working dir (execs start there)
	order  []string

	// lifeMu serializes Create, Destroy, boots and Connect.
	lifeMu sync.Mutex

	mu      sync.Mutex
	vm      *qemu.VM           // protected by mu
	agent   *agentapi.Client   // protected by mu; nil while no VM runs
	booted  chan struct{}      // closed when vm ends; protected by mu
	iface   *sandbox.Interface // from Connect; protected by mu
	isSetup bool               // Setup ran on this boot; protected by mu
	record  BootRecord         // this boot's, written once Setup ran; protected by mu

	// template is what boots clone (nil: boot cold); set in New, dropped
	// once a restore from it failed. Protected by lifeMu.
	template  *Template
	created   bool            // protected by mu
	destroyed bool            // protected by mu
	ctrs      map[string]*ctr // protected by mu
	execSeq   int             // protected by mu
	vmStarted time.Time       // when this boot's VMM started; protected by mu
	// liveDrives is how many drives the running VM has (a clone has its
	// template's slots), and liveIsolatedNIC whether it has a card that
	// reaches nothing (a clone without a network); protected by mu.
	liveDrives      int
	liveIsolatedNIC bool
	// suspendedBoot is the booted channel of the boot Suspend ended, so
	// its followers take that end for no container's; suspended: the
	// state is on disk and no VMM runs. Both protected by mu.
	suspendedBoot chan struct{}
	suspended     bool
	// agentStream is the suspended session's last ttRPC stream id (the
	// resumed agent's host continues after it); protected by mu.
	agentStream uint32
	// followers are the goroutines following the containers (follow).
	followers sync.WaitGroup
	// fallback is why the VM boots cold though it was given a template
	// (for the boot record, and so the node's event); protected by lifeMu.
	fallback string
	// warm is the warm VM the next boot adopts (UseWarm); protected by
	// lifeMu.
	warm *WarmVM
}

// ctr is the host's view of one container.
type ctr struct {
	state sandbox.ContainerState
	// exited is closed when the current run's exit is recorded (and its
	// output copied); replaced at each Start. A suspend leaves it open.
	exited chan struct{}
	// stdio is where the current run's output goes (again after a resume),
	// and copied how far its stdout and stderr were copied (where the
	// follower of a resumed VM goes on).
	stdio  sandbox.Stdio
	copied [2]int64
}

func (c *ctr) procRef() agentapi.Process { return agentapi.Process{Container: c.state.Name} }

// New returns the microvm sandbox for spec; it does nothing on the host
// until Create.
func New(spec sandbox.Spec, opts sandbox.Options) (sandbox.Sandbox, error) {
	if err := validate(spec, opts.VM); err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalid, err)
	}
	log := cmp.Or(opts.Logger, slog.Default()).With("component", "sandbox/microvm", "sandbox", spec.ID)
	drv, err := newDriver(opts.VM, log)
	if err != nil {
		return nil, err
	}
	s := &vmSandbox{
		spec: spec, opts: opts.VM, log: log, driver: drv,
		layer: cmp.Or(spec.WritableLayer, filepath.Join(spec.StateDir, "disk.img")),
		idDir: IDDir,
		users: map[string][2]uint32{}, env: map[string][]string{}, cwd: map[string]string{}, ctrs: map[string]*ctr{},
	}
	s.setup = &agentapi.SetupRequest{Hostname: spec.Hostname, PidsLimit: spec.PidsLimit}
	s.drives = append(s.drives, vmm.Drive{ID: writableDrive, Path: s.layer})
	s.setup.Drives = append(s.setup.Drives, &agentapi.Drive{Serial: writableDrive, Role: agentapi.DriveRole_DRIVE_ROLE_WRITABLE, FsType: "ext4"})
	imageDrive := map[string]string{} // image path -> serial
	for _, c := range spec.Containers {
		serial, ok := imageDrive[c.RootFS.Image]
		if !ok {
			serial = fmt.Sprintf("img%d", len(imageDrive))
			imageDrive[c.RootFS.Image] = serial
			s.drives = append(s.drives, vmm.Drive{ID: serial, Path: c.RootFS.Image, ReadOnly: true})
			s.setup.Drives = append(s.setup.Drives, &agentapi.Drive{Serial: serial, Role: agentapi.DriveRole_DRIVE_ROLE_IMAGE, FsType: c.RootFS.FSType})
		}
		uid, gid, err := sandbox.ParseUser(c.User, c.RootFS.Dir)
		if err != nil {
			return nil, fmt.Errorf("%w: container %s: %w", errdefs.ErrInvalid, c.Name, err)
		}
		s.users[c.Name] = [2]uint32{uid, gid}
		// runc sets HOME from the image's passwd when the environment has
		// none, for the container and its execs: so do we.
		env := sandbox.MergeEnv([]string{"HOME=" + sandbox.HomeDir(c.RootFS.Dir, uid)}, c.Env)
		s.env[c.Name] = env
		s.cwd[c.Name] = cmp.Or(c.WorkingDir, "/")
		s.order = append(s.order, c.Name)
		s.setup.Containers = append(s.setup.Containers, &agentapi.ContainerSpec{
			Name: c.Name, ImageDrive: serial, Args: c.Args, Env: env, Cwd: s.cwd[c.Name],
			Uid: uid, Gid: gid, MemoryBytes: c.MemoryBytes, CpuMillis: c.MilliCPU,
		})
		s.ctrs[c.Name] = &ctr{state: sandbox.ContainerState{Name: c.Name, Phase: sandbox.PhaseCreated}}
	}
	if err := s.setup.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalid, err)
	}
	s.template = s.openTemplate()
	return s, nil
}

// openTemplate is the template opts name, if this sandbox can be its
// clone: it has no more images than the template has drive slots, and the template was built
// for this VM's size and these very binaries. A template that does not
// fit is logged and skipped: the VM boots cold.
func (s *vmSandbox) openTemplate() *Template {
	o := s.opts
	if o.TemplateDir == "" || o.TemplateMemFD <= 0 {
		return nil
	}
	skip := func(err error) *Template {
		s.log.Warn(ReasonTemplateFallback+": not cloning the template; booting cold", "template", o.TemplateDir, "err", err)
		s.fallback = err.Error()
		return nil
	}
	if n := len(s.drives) - 1; n > TemplateImageSlots {
		return skip(fmt.Errorf("%d images; a template has room for %d", n, TemplateImageSlots))
	}
	if s.spec.DiskBytes > PlaceholderBytes {
		return skip(errors.New("the writable layer is larger than a template's placeholder"))
	}
	for _, d := range s.drives {
		if st, err := os.Stat(d.Path); err == nil && st.Size() > PlaceholderBytes {
			return skip(fmt.Errorf("drive %s is larger than a template's placeholder", d.ID))
		}
	}
	vcpus, mib := s.size()
	t, err := OpenTemplateFD(o, vcpus, mib)
	if err != nil {
		return skip(err)
	}
	return t
}

func validate(spec sandbox.Spec, o sandbox.VMOptions) error {
	switch {
	case !sandbox.ValidName(spec.ID):
		return fmt.Errorf("sandbox/microvm: sandbox id %q: want 1-63 letters, digits, '-', '_' or '.'", spec.ID)
	case !filepath.IsAbs(spec.StateDir):
		return fmt.Errorf("sandbox/microvm: sandbox %s: state dir %q must be an absolute path", spec.ID, spec.StateDir)
	case len(spec.Containers) == 0:
		return fmt.Errorf("sandbox/microvm: sandbox %s has no containers", spec.ID)
	case len(spec.Containers) > agentapi.MaxContainers:
		return fmt.Errorf("sandbox/microvm: sandbox %s has %d containers; a VM runs at most %d", spec.ID, len(spec.Containers), agentapi.MaxContainers)
	case o.Kernel == "" || o.Initrd == "":
		return fmt.Errorf("sandbox/microvm: sandbox %s: no guest kernel or initramfs given (the node offers microvm only once it has both)", spec.ID)
	case spec.DiskBytes < 0 || spec.PidsLimit < 0 || spec.MemoryBytes < 0 || spec.VCPUs < 0:
		return fmt.Errorf("sandbox/microvm: sandbox %s: negative size", spec.ID)
	}
	for _, c := range spec.Containers {
		if !sandbox.ValidName(c.Name) {
			return fmt.Errorf("sandbox/microvm: container name %q: want 1-63 letters, digits, '-', '_' or '.'", c.Name)
		}
		if c.RootFS.Image == "" || (c.RootFS.FSType != "erofs" && c.RootFS.FSType != "ext4") {
			return fmt.Errorf("sandbox/microvm: container %s: rootfs must be a block image with fs type erofs or ext4 (got %+v)", c.Name, c.RootFS)
		}
		if len(c.Args) == 0 {
			return fmt.Errorf("sandbox/microvm: container %s: no command (args are empty)", c.Name)
		}
	}
	return nil
}

// size is the VM's vCPUs and memory: the Spec's, or the containers' cpu
// limits rounded up (at most the host's cores) and their memory plus the
// agent's overhead.
func (s *vmSandbox) size() (int, int) {
	vcpus, mib := s.spec.VCPUs, int(s.spec.MemoryBytes>>20)
	if vcpus == 0 {
		vcpus = min(max(1, int((s.spec.MilliCPU()+999)/1000)), runtime.NumCPU())
	}
	if mib == 0 {
		mib = AgentOverheadMiB
		for _, c := range s.spec.Containers {
			mib += cmp.Or(int(c.MemoryBytes>>20), DefaultContainerMiB) + InitOverheadMiB
		}
	}
	return vcpus, max(mib, 128)
}

func (s *vmSandbox) bootTimeout() time.Duration {
	if s.opts.BootTimeout > 0 {
		return s.opts.BootTimeout
	}
	return vmm.DefaultBootTimeout(vmm.Accel(s.opts.Accel))
}

// vmConfig is the VMM's configuration for this sandbox.
func (s *vmSandbox) vmConfig(uid int) vmm.Config {
	vcpus, mib := s.size()
	cfg := baseConfig(s.opts, s.spec.ID, filepath.Join(s.spec.StateDir, "vmm"), uid, vcpus, mib, s.drives)
	cfg.AgentSocket = filepath.Join(s.spec.StateDir, "agent.sock")
	cfg.ConsoleLog = filepath.Join(s.spec.StateDir, "console.log")
	cfg.Jail.CgroupParent = s.spec.CgroupParent
	if s.spec.NetNS != "" {
		// The guest takes the CNI interface's MAC at Connect; until then
		// its card has a random local one.
		cfg.Net = &vmm.NIC{NetNS: s.spec.NetNS, Tap: tapName, MAC: randomMAC()}
	}
	return cfg
}

// baseConfig is a VM of o's kernel: the part a template and its clones
// share. stateDir holds the VMM's sockets (and, unless the caller moves
// them, the agent's socket and the console log).
func baseConfig(o sandbox.VMOptions, id, stateDir string, uid, vcpus, mib int, drives []vmm.Drive) vmm.Config {
	accel := vmm.Accel(cmp.Or(o.Accel, string(vmm.AccelTCG)))
	return vmm.Config{
		ID: id, Kernel: o.Kernel, Initrd: o.Initrd, Cmdline: cmdlineFor(accel, vcpus),
		VCPUs: vcpus, MemoryMiB: mib, Drives: drives,
		AgentSocket: filepath.Join(stateDir, "agent.sock"),
		ConsoleLog:  filepath.Join(stateDir, "console.log"),
		Accel:       accel,
		StateDir:    stateDir,
		Jail:        vmm.JailConfig{UID: uid, GID: uid},
	}
}

func cmdlineFor(accel vmm.Accel, vcpus int) string {
	if accel == vmm.AccelTCG && vcpus == 1 {
		return kernel.Cmdline + " " + kernel.CmdlineTCG()
	}
	return kernel.Cmdline
}

func newDriver(o sandbox.VMOptions, log *slog.Logger) (*qemu.Driver, error) {
	return qemu.New(qemu.Options{Binary: o.VMM, Logger: log})
}

// placeholder is the empty file behind a clone's unused drive slots.
func (s *vmSandbox) placeholder() string { return filepath.Join(s.spec.StateDir, "empty-drive") }

func randomMAC() net.HardwareAddr {
	b := make([]byte, 6)
	rand.Read(b)
	b[0] = b[0]&^1 | 2 // unicast, locally administered
	return b
}

// Create boots the VM to agent ready, after removing what a previous
// owner of the sandbox left (its VMM died with it; its sockets, jail,
// cgroup and tap may not have). The writable layer is kept.
func (s *vmSandbox) Create(ctx context.Context) (err error) {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.mu.Lock()
	created, destroyed := s.created, s.destroyed
	s.mu.Unlock()
	if destroyed {
		return fmt.Errorf("sandbox %s: already destroyed; build a new one: %w", s.spec.ID, errdefs.ErrConflict)
	}
	if created {
		return nil
	}
	defer func() {
		if err != nil {
			s.cleanup(context.WithoutCancel(ctx), false)
		}
	}()
	if err := os.MkdirAll(filepath.Join(s.spec.StateDir, "vmm"), 0o700); err != nil {
		return err
	}
	if err := s.removeLeftovers(ctx); err != nil {
		return err
	}
	if _, err := os.Stat(s.layer); errors.Is(err, os.ErrNotExist) {
		if err := disk.Make(ctx, s.layer, cmp.Or(s.spec.DiskBytes, DefaultDiskBytes), s.spec.CacheDir); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("writable layer: %w", err)
	}
	if err := os.WriteFile(s.placeholder(), nil, 0o600); err != nil {
		return err
	}
	// The guest limits each container; on the host the whole VM (its
	// guest kernel, agent and TCG's emulation too) gets the instance's
	// weight against the node's other instances.
	if s.spec.CgroupParent != "" {
		if err := cpuweight.Set(s.spec.CgroupParent, s.spec.MilliCPU()); err != nil {
			return err
		}
	}
	// A previous shim suspended it: nothing runs until Resume.
	if suspended, err := s.loadSuspended(); err != nil || suspended {
		if err == nil {
			s.mu.Lock()
			s.created = true
			s.mu.Unlock()
		}
		return err
	}
	if err := s.boot(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	s.created = true
	s.mu.Unlock()
	return nil
}

// removeLeftovers removes a dead owner's VM files (see qemu.Driver.Cleanup)
// and its tap.
func (s *vmSandbox) removeLeftovers(ctx context.Context) error {
	uid, err := jail.AllocateID(s.idDir, s.spec.ID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := killVMM(ctx, s.spec.CgroupParent); err != nil {
		return err
	}
	if err := s.removeWarmDir(); err != nil {
		return err
	}
	if err := s.driver.Cleanup(ctx, s.vmConfig(uid)); err != nil {
		return err
	}
	if s.spec.NetNS != "" {
		if err := tap.Remove(s.spec.NetNS, "eth0", tapName); err != nil {
			return err
		}
	}
	return nil
}

// boot starts the VMM and waits for its agent, within the boot timeout:
// a clone of the template if there is one, else (or when the restore
// fails: a damaged template never fails the instance) a cold boot.
// Preconditions: lifeMu held, no VM running.
func (s *vmSandbox) boot(ctx context.Context) error {
	if w := s.warm; w != nil {
		s.warm = nil
		err := s.adopt(ctx, w)
		if err == nil {
			return nil
		}
		s.log.Warn("the warm vm could not be adopted; restoring a clone of its own", "err", err)
		if err := s.removeLeftovers(ctx); err != nil {
			return err
		}
	}
	uid, err := jail.AllocateID(s.idDir, s.spec.ID)
	if err != nil {
		return err
	}
	if t := s.template; t != nil {
		err := s.start(ctx, uid, t)
		if err == nil {
			return nil
		}
		s.log.Warn(ReasonTemplateFallback+": the template's clone failed; booting cold", "template", t.Key.ID(), "err", err)
		s.fallback = "the clone failed: " + err.Error()
		s.template = nil
		t.Close()
		if err := s.removeLeftovers(ctx); err != nil {
			return err
		}
	}
	return s.start(ctx, uid, nil)
}

// start runs the VMM, cold or as t's clone, and waits for its agent.
func (s *vmSandbox) start(ctx context.Context, uid int, t *Template) error {
	cfg := s.vmConfig(uid)
	from := "cold"
	if t != nil {
		from = "template"
		cfg.Drives = append(slices.Clone(cfg.Drives), placeholderSlots(len(cfg.Drives)-1, s.placeholder())...)
		cfg.Memory = &vmm.Memory{File: t.Mem}
		if cfg.Net == nil {
			// The template's card, reaching nothing.
			cfg.Net = &vmm.NIC{Tap: tapName, MAC: randomMAC(), Isolated: true}
		}
		in, err := os.Open(filepath.Join(t.Dir, templateState))
		if err != nil {
			return err
		}
		defer in.Close()
		cfg.Incoming = in
	}
	bctx, cancel := context.WithTimeout(ctx, s.bootTimeout())
	defer cancel()
	start := time.Now()
	vm, err := s.driver.StartVM(bctx, cfg)
	if err != nil {
		return fmt.Errorf("start the vm: %w", err)
	}
	agent, info, err := connectAgent(bctx, vm, cfg.AgentSocket, s.bootTimeout(), 0)
	if err == nil && info.SetupDone {
		agent.Close()
		err = fmt.Errorf("the guest's agent was set up before (a template must be pristine): %w", errdefs.ErrInvalid)
	}
	if err != nil {
		vm.Stop(context.WithoutCancel(ctx))
		return err
	}
	took := time.Since(start)
	s.log.Info("vm booted", "from", from, "pid", vm.Pid(), "kernel", info.KernelRelease, "boot", took, "accel", cfg.Accel)
	booted := make(chan struct{})
	s.mu.Lock()
	s.vm, s.agent, s.booted, s.isSetup = vm, agent, booted, false
	s.liveDrives, s.liveIsolatedNIC = len(cfg.Drives), cfg.Net != nil && cfg.Net.Isolated
	s.record = BootRecord{VMMPid: vm.Pid(), BootMs: float64(took.Microseconds()) / 1000, From: from, Fallback: s.fallback,
		GuestMiB: cfg.MemoryMiB, Accel: string(cfg.Accel), Kernel: info.KernelRelease}
	s.vmStarted = start
	s.mu.Unlock()
	go s.watch(vm, agent, booted)
	return nil
}

// connect dials the agent's channel and waits for its Hello. The guest
// reads what is written before its agent opens the port, so one Hello
// suffices; it is abandoned when the VM ends or ctx does.
func connectAgent(ctx context.Context, vm *qemu.VM, socket string, timeout time.Duration, after uint32) (*agentapi.Client, agentapi.Info, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, agentapi.Info{}, fmt.Errorf("connect to the guest agent: %w", err)
	}
	// A resumed guest's agent is in the session of the host before.
	agent := agentapi.NewClientAfter(conn, after)
	type hello struct {
		info agentapi.Info
		err  error
	}
	hc := make(chan hello, 1)
	go func() {
		info, err := agent.Hello(ctx)
		hc <- hello{info, err}
	}()
	select {
	case h := <-hc:
		if h.err == nil {
			return agent, h.info, nil
		}
		err = h.err
	case <-vm.Done():
		err = fmt.Errorf("the vm ended during boot: %s", vm.Exit())
	}
	agent.Close()
	if ctx.Err() != nil {
		err = fmt.Errorf("the guest did not boot within %s (%v; console: %q): %w", timeout, err, consoleTail(vm), errdefs.ErrUnavailable)
	}
	return nil, agentapi.Info{}, fmt.Errorf("guest agent: %w", err)
}

func consoleTail(vm *qemu.VM) string {
	b := vm.Console()
	if len(b) > 512 {
		b = b[len(b)-512:]
	}
	return string(b)
}

// watch waits for the VM's end. An end nobody asked for (the VMM killed,
// a guest panic) ends every running container, with the reason.
func (s *vmSandbox) watch(vm *qemu.VM, agent *agentapi.Client, booted chan struct{}) {
	exit := <-vm.Wait()
	agent.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	close(booted)
	if s.vm == vm {
		s.vm, s.agent = nil, nil
	}
	if exit.Reason == vmm.ExitStopped || exit.Reason == vmm.ExitPoweroff && s.destroyed {
		return
	}
	reason := sandbox.ReasonVMMExited
	if exit.Reason == vmm.ExitGuestPanic {
		reason = sandbox.ReasonGuestPanic
	}
	s.log.Warn("vm ended", "exit", exit.String(), "reason", reason)
	now := time.Now()
	for _, c := range s.ctrs {
		if c.state.Phase == sandbox.PhaseRunning {
			c.state = sandbox.ContainerState{Name: c.state.Name, Phase: sandbox.PhaseExited, ExitCode: 137, Signal: int(syscall.SIGKILL),
				Reason: reason, StartedAt: c.state.StartedAt, FinishedAt: now}
		}
	}
}

// running returns the agent of the live VM, booting a new one first when
// the last one ended (a restart after a VMM death or a panic).
// Preconditions: lifeMu held.
func (s *vmSandbox) running(ctx context.Context) (*agentapi.Client, error) {
	s.mu.Lock()
	agent, created, destroyed, suspended := s.agent, s.created, s.destroyed, s.suspended
	s.mu.Unlock()
	switch {
	case destroyed:
		return nil, fmt.Errorf("sandbox %s is destroyed: %w", s.spec.ID, errdefs.ErrConflict)
	case suspended:
		return nil, fmt.Errorf("sandbox %s is suspended; resume it first: %w", s.spec.ID, errdefs.ErrConflict)
	case !created:
		return nil, fmt.Errorf("sandbox %s is not created: %w", s.spec.ID, errdefs.ErrConflict)
	case agent != nil:
		return agent, s.ensureSetup(ctx)
	}
	s.log.Info("booting the vm again")
	if err := s.removeLeftovers(ctx); err != nil {
		return nil, err
	}
	if err := s.boot(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	agent = s.agent
	s.mu.Unlock()
	return agent, s.ensureSetup(ctx)
}

// ensureSetup runs the agent's Setup once per boot, with the network once
// Connect gave it. Preconditions: lifeMu held.
func (s *vmSandbox) ensureSetup(ctx context.Context) error {
	s.mu.Lock()
	agent, done, iface := s.agent, s.isSetup, s.iface
	s.mu.Unlock()
	if done {
		return nil
	}
	if agent == nil {
		return fmt.Errorf("sandbox %s: the vm is not running: %w", s.spec.ID, errdefs.ErrUnavailable)
	}
	if s.spec.NetNS != "" && iface == nil {
		return fmt.Errorf("sandbox %s: not connected to its network yet: %w", s.spec.ID, errdefs.ErrConflict)
	}
	req := proto.Clone(s.setup).(*agentapi.SetupRequest)
	if iface != nil {
		req.Network = networkOf(*iface)
	}
	// A clone's drives need no re-probe (req.Restored): its template's
	// guest took them for PlaceholderBytes each (see BuildTemplate).
	// A clone's kernel has its template's random state: the agent
	// reseeds it first, then the clock (to the whole second from the RTC
	// on a cold boot; the template's on a clone).
	req.Entropy = entropy()
	t0 := time.Now()
	req.TimeUnixNano = t0.UnixNano()
	if err := agent.Setup(ctx, req); err != nil {
		return err
	}
	setupTook := time.Since(t0)
	info, offset, err := syncClock(ctx, agent, nil)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.isSetup = true
	rec := s.record
	rec.SetupMs = float64(setupTook.Microseconds()) / 1000
	rec.ReadyMs = float64(time.Since(s.vmStarted).Microseconds()) / 1000
	rec.BootID = info.BootID
	rec.ClockOffsetMs = float64(offset.Microseconds()) / 1000
	s.record = rec
	s.mu.Unlock()
	if err := writeBootRecord(s.spec.StateDir, rec); err != nil {
		s.log.Warn("write the boot record", "err", err)
	}
	return nil
}

// syncClock sets the guest's clock again once Setup has run: the time
// Setup carried was behind by all of Setup's work before the agent set it
// (under TCG a clone's first pass through any guest code is slow). The
// second pass runs warm code: the guest is then behind by one trip of a
// Resume, never ahead (a guest ahead of the host would take the host's
// fresh tokens for ones from the past). A last Hello measures the offset
// (the guest's clock minus the host's at the trip's midpoint). entropy, if
// any, goes with the first Resume (a resumed VM's reseed).
func syncClock(ctx context.Context, agent *agentapi.Client, entropy []byte) (agentapi.Info, time.Duration, error) {
	for range 2 {
		if err := agent.Resume(ctx, time.Now().UnixNano(), entropy); err != nil {
			return agentapi.Info{}, 0, err
		}
		entropy = nil
	}
	t1 := time.Now()
	info, err := agent.Hello(ctx)
	if err != nil {
		return info, 0, err
	}
	t2 := time.Now()
	return info, info.Time.Sub(t1.Add(t2.Sub(t1) / 2)), nil
}

func networkOf(iface sandbox.Interface) *agentapi.Network {
	n := &agentapi.Network{Mac: iface.MAC, Ipv4Cidr: iface.Address, Gateway: iface.Gateway, Mtu: uint32(iface.MTU),
		DnsServers: iface.DNS.Nameservers, DnsSearch: iface.DNS.Search, DnsOptions: iface.DNS.Options}
	for _, r := range iface.Routes {
		if r.Dst == "0.0.0.0/0" && r.Via == "" {
			continue // the gateway's default route
		}
		n.Routes = append(n.Routes, &agentapi.Route{Destination: r.Dst, Gateway: r.Via})
	}
	if len(n.DnsServers) > agentapi.MaxDNSServers {
		n.DnsServers = n.DnsServers[:agentapi.MaxDNSServers]
	}
	return n
}

// Connect joins the VM's tap to the CNI interface (a tc redirect both
// ways) and has the guest take the interface's MAC and address.
func (s *vmSandbox) Connect(ctx context.Context, iface sandbox.Interface) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	if s.spec.NetNS == "" {
		return fmt.Errorf("sandbox %s has no network namespace to connect in: %w", s.spec.ID, errdefs.ErrInvalid)
	}
	name := cmp.Or(iface.Name, "eth0")
	t0 := time.Now()
	if _, err := tap.Setup(s.spec.NetNS, name, tapName); err != nil {
		return fmt.Errorf("connect the vm's tap to %s: %w", name, err)
	}
	s.mu.Lock()
	s.iface = &iface
	s.mu.Unlock()
	t1 := time.Now()
	_, err := s.running(ctx)
	s.log.Debug("connected", "tap", t1.Sub(t0), "setup", time.Since(t1), "err", err)
	return err
}

func (s *vmSandbox) ctr(name string) (*ctr, error) {
	c, ok := s.ctrs[name]
	if !ok {
		return nil, fmt.Errorf("sandbox %s: no container named %q: %w", s.spec.ID, name, errdefs.ErrNotFound)
	}
	return c, nil
}

// Start starts (or restarts) one container; its output goes to stdio
// until it exits.
func (s *vmSandbox) Start(ctx context.Context, name string, stdio sandbox.Stdio) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.mu.Lock()
	c, err := s.ctr(name)
	if err == nil && c.state.Phase == sandbox.PhaseRunning {
		err = fmt.Errorf("container %s is running: %w", name, errdefs.ErrConflict)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	agent, err := s.running(ctx)
	if err != nil {
		return err
	}
	exited := make(chan struct{})
	t0 := time.Now()
	pid, err := agent.Start(ctx, name)
	now := time.Now()
	s.log.Debug("agent started the container", "container", name, "took", now.Sub(t0), "err", err)
	if err != nil {
		// As runc does: the reason goes to the container's stderr, and the
		// container counts as exited 127.
		if stdio.Stderr != nil {
			fmt.Fprintf(stdio.Stderr, "cube: %v\n", err)
		}
		s.mu.Lock()
		c.state = sandbox.ContainerState{Name: name, Phase: sandbox.PhaseExited, ExitCode: 127, StartedAt: now, FinishedAt: now}
		c.exited = exited
		close(exited)
		s.mu.Unlock()
		return fmt.Errorf("start container %s: %w", name, err)
	}
	s.mu.Lock()
	c.state = sandbox.ContainerState{Name: name, Phase: sandbox.PhaseRunning, Pid: pid, StartedAt: now}
	c.exited, c.stdio, c.copied = exited, stdio, [2]int64{}
	booted := s.booted
	s.mu.Unlock()
	s.followers.Add(1)
	go s.follow(agent, booted, c, agentapi.Process{Container: name}, stdio, exited)
	return nil
}

// follow copies a container's output and records its exit, then closes
// exited. When the VM ends first, watch records the exit (it holds mu
// while it closes booted and marks the containers, so the state is final
// once booted is closed). An agent that fails to answer while its VM
// lives is not to be trusted with the VM: the container counts as ended,
// and the VM is stopped.
func (s *vmSandbox) follow(agent *agentapi.Client, booted chan struct{}, c *ctr, p agentapi.Process, stdio sandbox.Stdio, exited chan struct{}) {
	defer s.followers.Done()
	defer func() {
		// A suspend ends the VM, not the container: the follower of the
		// resumed VM closes exited.
		s.mu.Lock()
		suspended := s.suspendedBoot != nil && s.suspendedBoot == booted
		s.mu.Unlock()
		if !suspended {
			close(exited)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-booted:
			cancel()
		case <-ctx.Done():
		}
	}()
	s.mu.Lock()
	offs := c.copied
	s.mu.Unlock()
	copied := copyOutputs(ctx, agent, p, stdio, &offs)
	st, err := agent.Wait(ctx, p)
	<-copied
	s.mu.Lock()
	if c.exited == exited {
		c.copied = offs
	}
	s.mu.Unlock()
	if err != nil {
		t := time.NewTimer(agentLostGrace)
		defer t.Stop()
		select {
		case <-booted:
			return
		case <-t.C:
		}
		s.log.Error("the guest agent failed to report a container's exit; stopping the vm", "container", p.Container, "err", err)
		s.mu.Lock()
		if c.exited == exited {
			c.state = sandbox.ContainerState{Name: p.Container, Phase: sandbox.PhaseExited, ExitCode: 137, Signal: int(syscall.SIGKILL),
				Reason: ReasonAgentLost, StartedAt: c.state.StartedAt, FinishedAt: time.Now()}
		}
		vm := s.vm
		s.mu.Unlock()
		if vm != nil {
			go vm.Stop(context.Background())
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.exited == exited {
		c.state = sandbox.ContainerState{Name: p.Container, Phase: sandbox.PhaseExited, ExitCode: st.Code, Signal: int(st.Signal),
			OOMKilled: st.OOMKilled, StartedAt: c.state.StartedAt, FinishedAt: cmp.Or(st.Finished, time.Now())}
	}
}

// copyOutputs copies p's stdout and stderr to stdio until EOF, from the
// offsets in offs (nil: from the start), which it updates; the channel is
// closed when both are done.
func copyOutputs(ctx context.Context, agent *agentapi.Client, p agentapi.Process, stdio sandbox.Stdio, offs *[2]int64) <-chan struct{} {
	if offs == nil {
		offs = new([2]int64)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i, o := range []struct {
		s agentapi.Stream
		w io.Writer
	}{{agentapi.Stream_STREAM_STDOUT, stdio.Stdout}, {agentapi.Stream_STREAM_STDERR, stdio.Stderr}} {
		w := o.w
		if w == nil {
			w = io.Discard
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			offs[i], _ = agent.CopyOutputAt(ctx, p, o.s, w, offs[i])
		}()
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// Wait blocks until the container's current run ends.
func (s *vmSandbox) Wait(ctx context.Context, name string) (sandbox.ContainerState, error) {
	s.mu.Lock()
	c, err := s.ctr(name)
	if err != nil {
		s.mu.Unlock()
		return sandbox.ContainerState{}, err
	}
	exited := c.exited
	s.mu.Unlock()
	if exited == nil {
		return sandbox.ContainerState{}, fmt.Errorf("container %s was never started: %w", name, errdefs.ErrConflict)
	}
	select {
	case <-exited:
	case <-ctx.Done():
		return sandbox.ContainerState{}, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.state, nil
}

// Exec runs a process in a running container and returns its exit code.
// A cancelled ctx kills it (exit 137, the context's error).
func (s *vmSandbox) Exec(ctx context.Context, name string, spec sandbox.ExecSpec, stdio sandbox.Stdio) (int, error) {
	s.mu.Lock()
	c, err := s.ctr(name)
	if err == nil && c.state.Phase != sandbox.PhaseRunning {
		err = fmt.Errorf("container %s is not running: %w", name, errdefs.ErrConflict)
	}
	agent, booted := s.agent, s.booted
	s.execSeq++
	id := fmt.Sprintf("e%d", s.execSeq)
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if agent == nil {
		return 0, fmt.Errorf("container %s: the vm is not running: %w", name, errdefs.ErrConflict)
	}
	user := s.users[name]
	// As runc's execs: the container's environment, TERM for a terminal,
	// then the exec's own, each overriding what came before.
	env := s.env[name]
	if spec.TTY {
		env = sandbox.MergeEnv(env, []string{"TERM=xterm"})
	}
	env = sandbox.MergeEnv(env, spec.Env)
	p := agentapi.Process{Container: name, ExecID: id}
	// An exec starts in its container's working directory, as runc's do.
	req := &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: name, ExecId: id}, Args: spec.Args, Env: env,
		Cwd: s.cwd[name], Uid: user[0], Gid: user[1], Tty: spec.TTY, Stdin: stdio.Stdin != nil}
	if spec.TTY && spec.Resize != nil {
		select { // a size known up front starts the terminal at it
		case ws := <-spec.Resize:
			req.Rows, req.Cols = uint32(ws.Rows), uint32(ws.Cols)
		default:
		}
	}
	if err := agent.Exec(ctx, req); err != nil {
		return 0, fmt.Errorf("exec in container %s: %w", name, err)
	}
	octx, ocancel := context.WithCancel(context.WithoutCancel(ctx))
	defer ocancel()
	go func() {
		select {
		case <-booted:
			ocancel()
		case <-octx.Done():
		}
	}()
	if stdio.Stdin != nil {
		go pumpStdin(octx, agent, p, stdio.Stdin)
	}
	if spec.TTY && spec.Resize != nil {
		go func() {
			for {
				select {
				case ws, ok := <-spec.Resize:
					if !ok {
						return
					}
					agent.ResizePty(octx, p, ws.Rows, ws.Cols)
				case <-octx.Done():
					return
				}
			}
		}()
	}
	copied := copyOutputs(octx, agent, p, stdio, nil)
	type result struct {
		st  agentapi.ExitStatus
		err error
	}
	rc := make(chan result, 1)
	go func() {
		st, err := agent.Wait(octx, p)
		rc <- result{st, err}
	}()
	select {
	case r := <-rc:
		<-copied
		if r.err != nil {
			return 137, fmt.Errorf("exec in container %s: %w", name, r.err)
		}
		return r.st.Code, nil
	case <-ctx.Done():
		kctx, kcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer kcancel()
		agent.Signal(kctx, p, syscall.SIGKILL)
		select {
		case <-rc:
		case <-kctx.Done():
		}
		return 137, ctx.Err()
	}
}

// pumpStdin copies r to the process's stdin in chunks, then closes it.
func pumpStdin(ctx context.Context, agent *agentapi.Client, p agentapi.Process, r io.Reader) {
	buf := make([]byte, agentapi.MaxChunk)
	for {
		n, err := r.Read(buf)
		for b := buf[:n]; len(b) > 0; {
			w, werr := agent.WriteStdin(ctx, p, b)
			if werr != nil {
				return
			}
			b = b[w:]
		}
		if err != nil {
			agent.CloseStdin(ctx, p)
			return
		}
	}
}

// Stop sends SIGTERM, then SIGKILL after grace, and waits for the exit.
func (s *vmSandbox) Stop(ctx context.Context, name string, grace time.Duration) error {
	s.mu.Lock()
	c, err := s.ctr(name)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	running, exited, agent, booted := c.state.Phase == sandbox.PhaseRunning, c.exited, s.agent, s.booted
	s.mu.Unlock()
	if !running || agent == nil {
		return nil
	}
	p := agentapi.Process{Container: name}
	if err := agent.Signal(ctx, p, syscall.SIGTERM); err != nil {
		s.log.Debug("sigterm", "container", name, "err", err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-exited:
		return nil
	case <-booted:
		return nil
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := agent.Signal(ctx, p, syscall.SIGKILL); err != nil {
		s.log.Debug("sigkill", "container", name, "err", err)
	}
	select {
	case <-exited:
		return nil
	case <-booted:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// State reports every container, in spec order.
func (s *vmSandbox) State(ctx context.Context) ([]sandbox.ContainerState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]sandbox.ContainerState, 0, len(s.order))
	for _, name := range s.order {
		out = append(out, s.ctrs[name].state)
	}
	return out, nil
}

// Destroy powers the VM off (the agent first, then the VMM) and removes
// every trace: the VMM's files, jail, cgroup and uid, the tap, the
// writable layer and the state dir.
func (s *vmSandbox) Destroy(ctx context.Context) error {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.mu.Lock()
	s.destroyed = true
	s.mu.Unlock()
	return s.cleanup(ctx, true)
}

// cleanup stops the VM and removes what Create made; all also removes the
// writable layer, the uid and the state dir. Preconditions: lifeMu held.
func (s *vmSandbox) cleanup(ctx context.Context, all bool) error {
	s.mu.Lock()
	vm, agent, booted := s.vm, s.agent, s.booted
	s.mu.Unlock()
	var errs []error
	if vm != nil {
		if agent != nil {
			sctx, cancel := context.WithTimeout(ctx, shutdownGrace)
			if err := agent.Shutdown(sctx); err == nil {
				select { // the guest powers itself off
				case <-booted:
				case <-sctx.Done():
				}
			}
			cancel()
		}
		if err := vm.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
		<-booted
	}
	if err := s.removeWarmDir(); err != nil {
		errs = append(errs, err)
	}
	s.mu.Lock()
	for _, c := range s.ctrs {
		if c.state.Phase == sandbox.PhaseRunning {
			c.state.Phase, c.state.ExitCode, c.state.Signal, c.state.FinishedAt = sandbox.PhaseExited, 137, int(syscall.SIGKILL), time.Now()
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// A VMM this sandbox did not start (another owner's on the same
	// state) would keep the cgroup busy and run on.
	if err := killVMM(ctx, s.spec.CgroupParent); err != nil {
		errs = append(errs, err)
	}
	if uid, err := jail.AllocateID(s.idDir, s.spec.ID); err == nil {
		if err := s.driver.Cleanup(ctx, s.vmConfig(uid)); err != nil {
			errs = append(errs, err)
		}
	}
	if s.spec.NetNS != "" {
		if err := tap.Remove(s.spec.NetNS, "eth0", tapName); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 || !all {
		return errors.Join(errs...)
	}
	if s.spec.CgroupParent != "" {
		// The VMM's cgroup is gone (Cleanup); its parent is the sandbox's.
		if err := (&jail.Cgroup{Path: s.spec.CgroupParent}).Remove(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := jail.ReleaseID(s.idDir, s.spec.ID); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(s.layer); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove writable layer: %w", err))
	}
	if err := os.RemoveAll(s.spec.StateDir); err != nil {
		errs = append(errs, fmt.Errorf("remove state dir: %w", err))
	}
	return errors.Join(errs...)
}

// Pid is the VMM's host pid (0: none running), for tests and the shim's
// own accounting.
func (s *vmSandbox) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vm == nil {
		return 0
	}
	return s.vm.Pid()
}
