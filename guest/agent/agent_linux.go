package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
	"github.com/cube-platform/cube/guest/cinit/reaper"
)

// Version is the agent's version, reported by Hello.
var Version = "dev"

// InitPath is where the guest's initramfs holds cmd/cube-init
// (guest/initramfs puts it there, beside the agent's /init).
const InitPath = "/cube-init"

// Config is how an agent runs. DefaultConfig is the guest's; tests change
// what a host cannot or must not do.
type Config struct {
	// Init: the agent is the VM's PID 1. It then reaps every orphan, sets
	// the VM's hostname at Setup, and powers the VM off after Shutdown.
	Init bool
	// ReapAll reaps every child, orphans included, as an init or a
	// subreaper must (implied by Init).
	ReapAll bool
	// InitBinary is the container init (cmd/cube-init), started as each
	// container's PID 1.
	InitBinary string
	// StateDir holds the agent's mounts and files (a tmpfs in the guest).
	StateDir string
	// CgroupRoot is the cgroup2 mount (or, on a hybrid host, the dir of
	// the v1 hierarchies); CgroupParent the sandbox cgroup below it.
	CgroupRoot   string
	CgroupParent string
	// DefaultPidsLimit applies when Setup's pids_limit is 0.
	DefaultPidsLimit int64
	// Link is the VM's network interface Setup configures.
	Link string
	// FindDrive returns the block device of the drive with a virtio
	// serial; nil looks in /sys/block.
	FindDrive func(serial string) (string, error)
	// PowerOff ends the VM after Shutdown; nil does nothing (tests).
	PowerOff func()
	// Console receives the containers' inits' own errors.
	Console *os.File
	Logger  *slog.Logger
}

// DefaultConfig is the configuration of the agent as the VM's PID 1.
func DefaultConfig() Config {
	return Config{
		Init:             true,
		InitBinary:       InitPath,
		StateDir:         "/run/cube",
		CgroupRoot:       "/sys/fs/cgroup",
		CgroupParent:     "sandbox",
		DefaultPidsLimit: 4096,
		Link:             "eth0",
		PowerOff:         powerOff,
		Console:          os.Stderr,
	}
}

// Agent serves the agent API. All of its state lives as long as the VM:
// one Setup, then the containers it declared.
type Agent struct {
	cfg Config
	log *slog.Logger
	// netPrepared: prepareNetwork ran (PID 1 runs it before serving).
	netPrepared bool
	reaper      *reaper.Reaper
	console     *os.File
	release     string

	mu sync.Mutex
	// bootID is read at Setup, after the reseed; "" before. Protected by
	// mu.
	bootID string
	// setup is the accepted Setup; nil before. Protected by mu.
	setup *agentapi.SetupRequest
	// containers are the declared containers by name (fixed at Setup).
	// Protected by mu.
	containers map[string]*container
	// cgroups is chosen at Setup. Protected by mu.
	cgroups cgroups
	// mounted are the drives mounted, by serial. Protected by mu.
	mounted map[string]string
	// booted is what the first Setup changed (the link's MAC and MTU,
	// the hostname), for Reset to restore. Protected by mu.
	booted *bootedState
	// shutdown is set once Shutdown has begun: every later call fails.
	// Protected by mu.
	shutdown bool
	// done is closed when Shutdown has finished its work.
	done chan struct{}
}

type bootedState struct {
	mac      net.HardwareAddr
	mtu      int
	hostname string
}

// New returns an agent; it starts reaping children at once when
// cfg.Init (an init must never leave a zombie).
func New(cfg Config) (*Agent, error) {
	if cfg.InitBinary == "" || cfg.StateDir == "" || cfg.CgroupRoot == "" || cfg.CgroupParent == "" || cfg.Link == "" {
		return nil, fmt.Errorf("%w: agent config needs InitBinary, StateDir, CgroupRoot, CgroupParent and Link", errdefs.ErrInvalid)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.Console == nil {
		cfg.Console = os.Stderr
	}
	if cfg.FindDrive == nil {
		cfg.FindDrive = findVirtioDrive
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	a := &Agent{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "agent"),
		reaper:     reaper.New(cfg.Init || cfg.ReapAll),
		console:    cfg.Console,
		containers: map[string]*container{},
		mounted:    map[string]string{},
		done:       make(chan struct{}),
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		a.release = unix.ByteSliceToString(uts.Release[:])
	}
	return a, nil
}

// NewServer is a ttRPC server of the agent's service whose errors carry
// their errdefs class.
func (a *Agent) NewServer() (*ttrpc.Server, error) {
	s, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(
		func(ctx context.Context, u ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
			resp, err := m(ctx, u)
			// A long poll (ReadOutput, Wait) that reached the caller's
			// deadline is the protocol working, not a refusal: logging it
			// wrote two console lines per idle instance every 10 s.
			if err != nil && ctx.Err() == nil {
				a.log.Info("call refused", "method", info.FullMethod, "err", err)
			}
			return resp, agentapi.ToStatus(err)
		}))
	if err != nil {
		return nil, err
	}
	agentapi.RegisterAgentService(s, &service{a})
	return s, nil
}

// Done is closed once a Shutdown has stopped every container and
// unmounted the drives.
func (a *Agent) Done() <-chan struct{} { return a.done }

func (a *Agent) path(parts ...string) string {
	return filepath.Join(append([]string{a.cfg.StateDir}, parts...)...)
}

// lookup finds a declared container for a call other than Setup.
func (a *Agent) lookup(name string) (*container, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.shutdown {
		return nil, fmt.Errorf("%w: the agent is shutting down", errdefs.ErrUnavailable)
	}
	if a.setup == nil {
		return nil, fmt.Errorf("%w: call Setup first", errdefs.ErrConflict)
	}
	c, ok := a.containers[name]
	if !ok {
		// Deny by default: only what Setup declared exists.
		return nil, fmt.Errorf("%w: container %q was not declared at Setup", errdefs.ErrForbidden, name)
	}
	return c, nil
}
