// Package node is the node agent: it registers this host, keeps its lease
// alive, watches the instances bound to it, prepares image and network,
// runs one shim per instance, reports status, and serves logs and exec to
// the API server. It talks to the control plane only through client/ with
// a node token; it never opens etcd.
package node

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/network"
)

// Config of a node agent.
type Config struct {
	// Name of the node (default: the hostname).
	Name string
	// StateDir holds one directory per instance (shim socket, sandbox
	// state, logs).
	StateDir string
	// Client speaks to the API server with this node's token.
	Client *client.Client
	// Images is the node-local image store.
	Images image.Store
	// Network attaches instances to the node's instance network.
	Network network.Manager
	// ShimCommand is the argv prefix that runs a shim; the config file's
	// path is appended (e.g. ["/usr/local/bin/cube", "shim", "--config"]).
	ShimCommand []string
	// Listen is where logs and exec are served to the API server:
	// "unix:PATH" (default: unix:STATEDIR/agent.sock) or a fixed
	// HOST:PORT. Every request must carry the node's secret either way.
	Listen string
	// Capacity offered to the scheduler (default: all cores and memory).
	Capacity v1.Resources
	// Labels of the node (e.g. zone=a) for node selectors and spreading.
	Labels map[string]string
	// Taints repel instances that do not tolerate them.
	Taints []v1.Taint
	// Runtimes are what the node runs instances in (default RuncOnly).
	Runtimes Runtimes
	// HeartbeatInterval between lease renewals (default 3s).
	HeartbeatInterval time.Duration
	Log               *slog.Logger
	Now               func() time.Time
}

// Validate fills defaults and checks the config.
func (c *Config) Validate() error {
	if c.StateDir == "" || c.Client == nil || c.Images == nil || c.Network == nil || len(c.ShimCommand) == 0 || c.Log == nil {
		return errors.New("node: StateDir, Client, Images, Network, ShimCommand and Log are required")
	}
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name: %w", err)
		}
		c.Name = strings.ToLower(h)
	}
	if err := v1.ValidateName("node name", c.Name); err != nil {
		return err
	}
	if c.Listen == "" {
		c.Listen = "unix:" + filepath.Join(c.StateDir, "agent.sock")
	}
	if c.Capacity.CPU == "" {
		c.Capacity.CPU = strconv.Itoa(runtime.NumCPU())
	}
	if c.Capacity.Memory == "" {
		mem, err := memTotal()
		if err != nil {
			return err
		}
		c.Capacity.Memory = v1.FormatMemory(mem)
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 3 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Runtimes == nil {
		c.Runtimes = RuncOnly{}
	}
	return nil
}

func memTotal() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			// Whole MiB: capacity reads as "24105Mi", not "24684096Ki".
			return (kb << 10) &^ (1<<20 - 1), err
		}
	}
	return 0, errors.New("MemTotal not found in /proc/meminfo")
}

// Agent is a running node agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	secret  string
	address string
	ln      net.Listener
	srv     *http.Server
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errc    chan error
	// listed is closed once the first list of this node's instances has
	// been handed to workers: until then a lookup cannot tell an instance
	// that is not here from one not adopted yet.
	listed     chan struct{}
	listedOnce sync.Once

	mu      sync.Mutex
	workers map[string]*worker // by instance UID; protected by mu
	// finalized are UIDs this agent removed itself, until their DELETED
	// event; protected by mu.
	finalized map[string]bool
}

// New builds an agent; Start runs it.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, log: cfg.Log.With("component", "node", "node", cfg.Name), secret: hex.EncodeToString(b[:]),
		errc: make(chan error, 1), listed: make(chan struct{}), workers: map[string]*worker{}, finalized: map[string]bool{}}, nil
}

// Start registers the node, serves logs/exec, and starts the heartbeat and
// sync loops. Shims already running on this host are adopted.
func (a *Agent) Start(ctx context.Context) error {
	if err := os.MkdirAll(a.instancesDir(), 0o700); err != nil {
		return fmt.Errorf("node state dir: %w", err)
	}
	ln, address, err := listen(a.cfg.Listen)
	if err != nil {
		return err
	}
	a.ln = ln
	a.srv = &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case a.errc <- fmt.Errorf("serve logs and exec: %w", err):
			default:
			}
		}
	}()

	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a.address = address
	reg, err := a.register(rctx)
	if err != nil {
		ln.Close()
		return fmt.Errorf("register node %s: %w", a.cfg.Name, err)
	}
	if err := a.cfg.Client.Heartbeat(rctx, a.cfg.Name); err != nil {
		ln.Close()
		return fmt.Errorf("first heartbeat: %w", err)
	}
	runCtx, runCancel := context.WithCancel(context.Background())
	a.cancel = runCancel
	a.wg.Add(2)
	go func() { defer a.wg.Done(); a.heartbeatLoop(runCtx, reg) }()
	go func() { defer a.wg.Done(); a.syncLoop(runCtx) }()
	a.log.Info("node agent started", "address", ln.Addr().String(), "capacity_cpu", a.cfg.Capacity.CPU, "capacity_memory", a.cfg.Capacity.Memory)
	return nil
}

// Err reports a fatal error.
func (a *Agent) Err() <-chan error { return a.errc }

// Close stops the agent's loops and server. Shims keep running: the
// instances outlive the agent, and the next agent adopts them.
func (a *Agent) Close() error {
	if a.cancel != nil {
		a.cancel()
	}
	if a.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = a.srv.Shutdown(ctx)
	}
	a.wg.Wait()
	return nil
}

func (a *Agent) instancesDir() string { return filepath.Join(a.cfg.StateDir, "instances") }

// heartbeatLoop beats and re-registers whenever what the node would
// report differs from reg, what it last registered. It compares with the
// registration itself, not a fresh read at loop start: a guest kernel
// that became ready between the two would otherwise never be reported.
func (a *Agent) heartbeatLoop(ctx context.Context, reg registration) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			hctx, cancel := context.WithTimeout(ctx, a.cfg.HeartbeatInterval)
			if err := a.cfg.Client.Heartbeat(hctx, a.cfg.Name); err != nil && ctx.Err() == nil {
				a.log.Warn("heartbeat failed", "err", err)
			}
			// Re-register when the local images changed, for image
			// locality, or the runtimes did (a guest kernel got built).
			if now := a.current(hctx); !now.equal(reg) {
				if got, err := a.register(hctx); err == nil {
					reg = got
				}
			}
			cancel()
		}
	}
}

// registration is what a node record reports beyond its configuration.
type registration struct {
	images   []string
	runtimes RuntimeStatus
}

func (r registration) equal(o registration) bool {
	return slices.Equal(r.images, o.images) && r.runtimes.equal(o.runtimes)
}

func (a *Agent) current(ctx context.Context) registration {
	return registration{images: a.localImages(ctx), runtimes: a.cfg.Runtimes.Status()}
}

// register creates or refreshes this node's record and returns what it
// reported.
func (a *Agent) register(ctx context.Context) (registration, error) {
	reg := a.current(ctx)
	rts := reg.runtimes
	node := &v1.Node{Metadata: v1.ObjectMeta{Name: a.cfg.Name, Labels: a.cfg.Labels}, Spec: v1.NodeSpec{Taints: a.cfg.Taints},
		Status: v1.NodeStatus{Capacity: a.cfg.Capacity, Address: a.address, Images: reg.images,
			Runtimes: rts.Runtimes, Accelerator: rts.Accelerator, GuestKernel: rts.GuestKernel, Templates: rts.Templates}}
	_, err := a.cfg.Client.RegisterNode(ctx, node, a.secret)
	return reg, err
}

// localImages lists the digests in the node's image store, sorted.
func (a *Agent) localImages(ctx context.Context) []string {
	imgs, err := a.cfg.Images.List(ctx)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(imgs))
	for _, im := range imgs {
		out = append(out, im.Digest)
	}
	sort.Strings(out)
	return out
}
