// Package allinone assembles the whole platform in one process for
// `cube up`: embedded etcd (or an external cluster), the API server,
// the scheduler (leader-elected), and a node agent for this machine. Boot is a named list of
// steps; shutdown runs them backwards. Shims are not stopped: instances
// outlive `cube up` and are adopted by the next one.
package allinone

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/apiserver"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/controller"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/network"
	"github.com/cube-platform/cube/node"
	"github.com/cube-platform/cube/node/vmhost"
	"github.com/cube-platform/cube/scheduler"
	"github.com/cube-platform/cube/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config of `cube up`.
type Config struct {
	// DataDir holds etcd data, images, node state and tokens.
	DataDir string
	// Listen is the API server's address.
	Listen string
	// Etcd, when it has endpoints, is an external etcd cluster used
	// instead of the embedded member (with TLS when its files are set).
	Etcd store.External
	// NodeName of this machine (default: hostname).
	NodeName string
	// NodeListen is where the node agent serves logs and exec to the API
	// server. Empty (the default) is a unix socket under the data dir,
	// which no tenant's host port and no other local user can take; a
	// HOST:PORT must name a fixed port, and the API server reserves it.
	NodeListen string
	// Capacity offered by this node (default: everything).
	Capacity v1.Resources
	// NodeLabels and NodeTaints of this node.
	NodeLabels map[string]string
	NodeTaints []v1.Taint
	// Subnet of the instance network (default: network.DefaultConfig).
	Subnet string
	// Bridge name of the instance network.
	Bridge string
	// Placement is the scoring policy: "binpack" (default: fill nodes, so
	// idle ones can be turned off) or "spread" (least allocated first).
	Placement string
	// ClientConfig is the path of the CLI config to write.
	ClientConfig string
	// ShimCommand runs a shim (default: this executable + "shim --config").
	ShimCommand []string
	// RegistryAllow lists registries ("host:port") tenants may pull from
	// although they are on loopback, link-local or platform addresses.
	RegistryAllow []string
	// DefaultRuntime of instances that name none, where their tenant may
	// use it: "microvm", "runc", or "auto" (the default): microvm once
	// this node can run VMs, runc before.
	DefaultRuntime string
	// Runtimes are what the node runs instances in (default: a
	// vmhost.Host on the node's cache, /var/cache/cube: runc, and microvm
	// once the guest kernel, the agent and QEMU are there).
	Runtimes node.Runtimes
	// BuildKernel lets the default Runtimes build a missing guest kernel
	// in the background (a few minutes on two cores).
	BuildKernel bool
	// WarmVMs is how many warm VMs the default Runtimes keep per VM size
	// (docs/microvm-templates.md); 0: none.
	WarmVMs int
	Log     *slog.Logger
}

// Platform is a running `cube up`.
type Platform struct {
	cfg       Config
	log       *slog.Logger
	closers   []func()
	errc      chan error
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	// URL of the API server.
	URL string
	// AdminToken is the admin tenant's token.
	AdminToken string
}

func (c *Config) validate() error {
	if c.DataDir == "" || c.Listen == "" || c.Log == nil {
		return errors.New("allinone: DataDir, Listen and Log are required")
	}
	if c.Placement != "" && c.Placement != "binpack" && c.Placement != "spread" {
		return fmt.Errorf("placement %q: want binpack or spread", c.Placement)
	}
	switch c.DefaultRuntime {
	case "":
		c.DefaultRuntime = "auto"
	case "auto", v1.RuntimeMicroVM, v1.RuntimeRunc:
	default:
		return fmt.Errorf("default runtime %q: want auto, microvm or runc", c.DefaultRuntime)
	}
	if len(c.Etcd.Endpoints) > 0 {
		if err := c.Etcd.Validate(); err != nil {
			return err
		}
	}
	if c.NodeListen != "" {
		_, port, err := net.SplitHostPort(c.NodeListen)
		if err != nil || port == "0" || port == "" {
			return fmt.Errorf("node listen address %q: want HOST:PORT with a fixed port, or leave it empty for a unix socket (a random port could be taken by a tenant's published port)", c.NodeListen)
		}
	}
	if len(c.ShimCommand) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.ShimCommand = []string{exe, "shim", "--config"}
	}
	if c.WarmVMs < 0 {
		return fmt.Errorf("warm vms %d: want 0 or more", c.WarmVMs)
	}
	if c.Runtimes == nil {
		c.Runtimes = vmhost.New(vmhost.Config{Build: c.BuildKernel, Log: c.Log, TemplateDir: filepath.Join(c.DataDir, "templates"),
			WarmVMs: c.WarmVMs, ShimCommand: c.ShimCommand, WarmDir: filepath.Join(c.DataDir, "warm")})
	}
	return nil
}

// defaultRuntime resolves DefaultRuntime: auto is microvm while this
// node offers it.
func (c *Config) defaultRuntime() string {
	if c.DefaultRuntime != "auto" {
		return c.DefaultRuntime
	}
	if slices.Contains(c.Runtimes.Status().Runtimes, v1.RuntimeMicroVM) {
		return v1.RuntimeMicroVM
	}
	return v1.RuntimeRunc
}

// Start boots the platform, one named step at a time. A failed step
// returns its error, and every step that had started is stopped again, in
// reverse order (etcd's embed pattern), so nothing is left running.
func Start(ctx context.Context, cfg Config) (*Platform, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Platform{cfg: cfg, log: cfg.Log, errc: make(chan error, 1), done: make(chan struct{})}
	started := false
	defer func() {
		if !started {
			p.Close()
		}
	}()
	var st *store.Store
	var images image.Store
	var api *apiserver.Server
	var nodeToken string
	steps := []struct {
		name string
		fn   func() error
	}{
		{"preflight", func() error { return preflight(cfg) }},
		{"vm host", func() error {
			// Finds (or starts building) the guest kernel and probes the
			// accelerator in the background: runc serves meanwhile.
			if h, ok := cfg.Runtimes.(*vmhost.Host); ok {
				vctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
				h.Start(vctx)
				p.closers = append(p.closers, func() {
					cancel()
					// Its warm VMs stop with it (instances run on).
					sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer scancel()
					h.Stop(sctx)
				})
			}
			return nil
		}},
		{"etcd", func() error {
			cli, err := p.startEtcd(ctx)
			if err != nil {
				return err
			}
			st = store.New(cli)
			return nil
		}},
		{"tokens", func() error {
			var err error
			p.AdminToken, nodeToken, err = p.ensureTokens(ctx, st)
			return err
		}},
		{"images", func() error {
			var err error
			images, err = image.NewLocalStore(filepath.Join(cfg.DataDir, "images"), cfg.Log)
			return err
		}},
		{"apiserver", func() error {
			var err error
			// Tenants' pulls may not reach the instance network either.
			subnet := network.DefaultConfig().Subnet
			if cfg.Subnet != "" {
				subnet = cfg.Subnet
			}
			var deny []netip.Prefix
			if pfx, err := netip.ParsePrefix(subnet); err == nil {
				deny = append(deny, pfx.Masked())
			}
			api, err = apiserver.New(apiserver.Config{Listen: cfg.Listen, Store: st, Images: images, Log: cfg.Log,
				RegistryAllow: cfg.RegistryAllow, RegistryDeny: deny,
				NodeSocketDir: filepath.Dir(NodeSocket(cfg.DataDir)),
				ReservedPorts: reservedPorts(cfg), DefaultRuntime: cfg.defaultRuntime})
			if err != nil {
				return err
			}
			if err := api.Start(ctx); err != nil {
				return err
			}
			p.closers = append(p.closers, func() { _ = api.Close() })
			p.forward("apiserver", api.Err())
			p.URL = "http://" + api.Addr()
			return nil
		}},
		{"scheduler", func() error {
			scfg := scheduler.DefaultConfig()
			if cfg.Placement == "spread" {
				scfg = scheduler.DefaultSpreadConfig()
			}
			sched, err := scheduler.New(scfg)
			if err != nil {
				return err
			}
			sc := &controller.Scheduling{Store: st, Scheduler: sched, Log: cfg.Log, Now: time.Now, Identity: replicaID()}
			p.runUntilClose("scheduler", sc.Run)
			return nil
		}},
		{"events", func() error {
			rec := &controller.EventRecorder{Store: st, Log: cfg.Log, Now: time.Now, Identity: replicaID()}
			p.runUntilClose("event recorder", rec.Run)
			return nil
		}},
		{"node", func() error {
			netCfg := network.DefaultConfig()
			netCfg.StateDir = filepath.Join(cfg.DataDir, "network")
			if cfg.Subnet != "" {
				netCfg.Subnet = cfg.Subnet
			}
			if cfg.Bridge != "" {
				netCfg.BridgeName = cfg.Bridge
			}
			nm, err := network.NewCNI(netCfg, cfg.Log)
			if err != nil {
				return err
			}
			agent, err := node.New(node.Config{
				Name: p.cfg.NodeName, StateDir: filepath.Join(cfg.DataDir, "node"),
				Client: client.New(p.URL, nodeToken), Images: images, Network: nm,
				ShimCommand: cfg.ShimCommand, Listen: nodeListen(cfg), Capacity: cfg.Capacity, Log: cfg.Log,
				Labels: cfg.NodeLabels, Taints: cfg.NodeTaints, Runtimes: cfg.Runtimes,
			})
			if err != nil {
				return err
			}
			if err := agent.Start(ctx); err != nil {
				_ = agent.Close()
				return err
			}
			p.closers = append(p.closers, func() { _ = agent.Close() })
			p.forward("node agent", agent.Err())
			return nil
		}},
		{"client config", func() error {
			if cfg.ClientConfig == "" {
				return nil
			}
			cc, err := client.LoadConfig(cfg.ClientConfig)
			if err != nil {
				return err
			}
			cc.Upsert(client.Context{Name: "local", Server: p.URL, Token: p.AdminToken})
			return cc.Save(cfg.ClientConfig)
		}},
	}
	for _, s := range steps {
		t0 := time.Now()
		if err := s.fn(); err != nil {
			return nil, fmt.Errorf("cube up: %s: %w", s.name, err)
		}
		p.log.Debug("boot step done", "step", s.name, "took", time.Since(t0))
	}
	started = true
	return p, nil
}

// preflight checks what the node needs before anything starts, so a
// missing tool is one clear message rather than a failure deep in a step.
func preflight(cfg Config) error {
	for _, tool := range []string{"runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found in PATH: install it (apt-get install %s, or run make up)", tool, tool)
		}
	}
	fi, err := os.Stat(cfg.DataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
	case err != nil:
		return fmt.Errorf("data dir: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("data dir %s is not a directory: pick another --data-dir", cfg.DataDir)
	default:
		// A dir another user made (say in /tmp, before the first boot)
		// stays theirs after the chmod below: they would read the
		// tokens and reach etcd's socket.
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
			return fmt.Errorf("data dir %s belongs to uid %d, not to this user (uid %d): another user could read its tokens; remove it or pick another --data-dir", cfg.DataDir, st.Uid, os.Geteuid())
		}
	}
	// Tokens, etcd and instance state live here: nobody else may look.
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	probe, err := os.CreateTemp(cfg.DataDir, ".probe-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", cfg.DataDir, err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// reservedPorts are the host ports no instance may publish: the ones the
// platform listens on, and the ones it dials on this host (an external
// etcd, an allowed registry). A published port DNATs this host's own
// connections to it too, so a tenant holding the port of a registry or
// etcd member that was down for a moment (the network layer refuses only
// ports bound at the time) would receive the platform's pulls or its
// etcd traffic from then on.
func reservedPorts(cfg Config) []int {
	addrs := []string{cfg.Listen, cfg.NodeListen}
	addrs = append(addrs, cfg.RegistryAllow...)
	for _, e := range cfg.Etcd.Endpoints {
		if u, err := url.Parse(e); err == nil && u.Host != "" {
			addrs = append(addrs, u.Host)
		} else {
			addrs = append(addrs, e)
		}
	}
	return apiserver.PortsOf(addrs...)
}

// NodeSocket is where the node agent serves logs and exec by default.
func NodeSocket(dataDir string) string { return filepath.Join(dataDir, "node", "agent.sock") }

func nodeListen(cfg Config) string {
	if cfg.NodeListen != "" {
		return cfg.NodeListen
	}
	return "unix:" + NodeSocket(cfg.DataDir)
}

func (p *Platform) startEtcd(ctx context.Context) (*clientv3.Client, error) {
	if len(p.cfg.Etcd.Endpoints) > 0 {
		cli, err := p.cfg.Etcd.Connect(ctx, 10*time.Second)
		if err != nil {
			return nil, err
		}
		p.closers = append(p.closers, func() { cli.Close() })
		return cli, nil
	}
	e, err := store.StartEmbedded(ctx, filepath.Join(p.cfg.DataDir, "etcd"), p.log)
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, e.Close)
	p.forward("embedded etcd", e.Err())
	return e.Client, nil
}

// ensureTokens creates the admin tenant and its token, and the node token,
// on first start; later starts reuse them. Plaintext tokens are kept only
// in 0600 files under the data dir (etcd holds their hashes).
func (p *Platform) ensureTokens(ctx context.Context, st *store.Store) (admin, nodeTok string, err error) {
	if err := st.EnsureTenant(ctx, apiserver.AdminTenant, time.Now()); err != nil {
		return "", "", err
	}
	nodeName := p.cfg.NodeName
	if nodeName == "" {
		h, _ := os.Hostname()
		nodeName = strings.ToLower(h)
		p.cfg.NodeName = nodeName
	}
	admin, err = tokenFile(ctx, st, filepath.Join(p.cfg.DataDir, "admin.token"), store.Token{Tenant: apiserver.AdminTenant, Role: store.RoleTenant, Scope: store.ScopeAdmin, Created: time.Now().UTC()})
	if err != nil {
		return "", "", err
	}
	nodeTok, err = tokenFile(ctx, st, filepath.Join(p.cfg.DataDir, "node", "token"), store.Token{Role: store.RoleNode, Node: nodeName, Created: time.Now().UTC()})
	return admin, nodeTok, err
}

// tokenFile returns the token kept at path, or mints a new one when the
// file is missing or the store truly does not know its token (a reset
// data dir). Any other error, a slow etcd say, fails the boot instead:
// re-minting then would lock out every client holding the old token.
func tokenFile(ctx context.Context, st *store.Store, path string, t store.Token) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		tok := strings.TrimSpace(string(b))
		got, err := st.LookupToken(ctx, tok)
		switch {
		case err == nil && got.Role == t.Role && got.Node == t.Node && got.Tenant == t.Tenant:
			return tok, nil
		case err != nil && !errors.Is(err, errdefs.ErrUnauthorized):
			return "", fmt.Errorf("check the token in %s: %w", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read token: %w", err)
	}
	tok, err := st.CreateToken(ctx, t)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	return tok, os.WriteFile(path, []byte(tok+"\n"), 0o600)
}

// Err reports the first fatal error of any component; `cube up` exits
// with it.
func (p *Platform) Err() <-chan error { return p.errc }

// fail records a component's fatal error; only the first is kept.
func (p *Platform) fail(err error) {
	select {
	case p.errc <- err:
	default:
	}
}

// forward passes a component's fatal error on to Err until Close.
func (p *Platform) forward(component string, errc <-chan error) {
	go func() {
		select {
		case err, ok := <-errc:
			if ok && err != nil {
				p.fail(fmt.Errorf("%s: %w", component, err))
			}
		case <-p.done:
		}
	}()
}

// Close stops every component in reverse boot order. Shims keep running.
// It is safe to call more than once.
func (p *Platform) Close() {
	p.closeOnce.Do(func() { close(p.done) })
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

// runUntilClose runs a control loop in the background until Close; a loop
// that ends on its own before that is a fatal error.
func (p *Platform) runUntilClose(name string, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := run(ctx)
		if ctx.Err() == nil {
			if err == nil {
				err = errors.New("stopped")
			}
			p.fail(fmt.Errorf("%s: %w", name, err))
		}
	}()
	p.closers = append(p.closers, func() { cancel(); <-done })
}

// replicaID names this process in leader elections.
func replicaID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}
