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
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/apiserver"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/controller"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/network"
	"github.com/cube-platform/cube/node"
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
	// EtcdEndpoints, when set, use an external etcd cluster instead of the
	// embedded one.
	EtcdEndpoints []string
	// NodeName of this machine (default: hostname).
	NodeName string
	// NodeListen is where the node agent serves logs and exec.
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
	Log         *slog.Logger
}

// Platform is a running `cube up`.
type Platform struct {
	cfg     Config
	log     *slog.Logger
	closers []func()
	errc    chan error
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
	if len(c.ShimCommand) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.ShimCommand = []string{exe, "shim", "--config"}
	}
	return nil
}

// Start boots the platform.
func Start(ctx context.Context, cfg Config) (p *Platform, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p = &Platform{cfg: cfg, log: cfg.Log, errc: make(chan error, 4)}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	var st *store.Store
	var images image.Store
	var api *apiserver.Server
	var nodeToken string
	steps := []struct {
		name string
		fn   func() error
	}{
		{"etcd", func() error {
			cli, err := p.startEtcd(ctx)
			st = store.New(cli)
			return err
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
			api, err = apiserver.New(apiserver.Config{Listen: cfg.Listen, Store: st, Images: images, Log: cfg.Log,
				ReservedPorts: apiserver.PortsOf(cfg.Listen, cfg.NodeListen)})
			if err != nil {
				return err
			}
			if err := api.Start(ctx); err != nil {
				return err
			}
			p.closers = append(p.closers, func() { _ = api.Close() })
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
			p.runUntilClose(sc.Run)
			return nil
		}},
		{"events", func() error {
			rec := &controller.EventRecorder{Store: st, Log: cfg.Log, Now: time.Now, Identity: replicaID()}
			p.runUntilClose(rec.Run)
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
				ShimCommand: cfg.ShimCommand, Listen: cfg.NodeListen, Capacity: cfg.Capacity, Log: cfg.Log,
				Labels: cfg.NodeLabels, Taints: cfg.NodeTaints,
			})
			if err != nil {
				return err
			}
			if err := agent.Start(ctx); err != nil {
				return err
			}
			p.closers = append(p.closers, func() { _ = agent.Close() })
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
	return p, nil
}

func (p *Platform) startEtcd(ctx context.Context) (*clientv3.Client, error) {
	if len(p.cfg.EtcdEndpoints) > 0 {
		cli, err := clientv3.New(clientv3.Config{Endpoints: p.cfg.EtcdEndpoints, DialTimeout: 10 * time.Second})
		if err != nil {
			return nil, fmt.Errorf("connect to etcd %s: %w", strings.Join(p.cfg.EtcdEndpoints, ","), err)
		}
		p.closers = append(p.closers, func() { cli.Close() })
		return cli, nil
	}
	e, err := store.StartEmbedded(ctx, filepath.Join(p.cfg.DataDir, "etcd"), p.log)
	if err != nil {
		return nil, err
	}
	p.closers = append(p.closers, e.Close)
	go func() {
		if err, ok := <-e.Err(); ok && err != nil {
			p.errc <- fmt.Errorf("embedded etcd: %w", err)
		}
	}()
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
	admin, err = tokenFile(ctx, st, filepath.Join(p.cfg.DataDir, "admin.token"), store.Token{Tenant: apiserver.AdminTenant, Role: store.RoleTenant, Created: time.Now().UTC()})
	if err != nil {
		return "", "", err
	}
	nodeTok, err = tokenFile(ctx, st, filepath.Join(p.cfg.DataDir, "node", "token"), store.Token{Role: store.RoleNode, Node: nodeName, Created: time.Now().UTC()})
	return admin, nodeTok, err
}

func tokenFile(ctx context.Context, st *store.Store, path string, t store.Token) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if got, err := st.LookupToken(ctx, tok); err == nil && got.Role == t.Role && got.Node == t.Node {
			return tok, nil
		}
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

// Err reports a fatal error of any component.
func (p *Platform) Err() <-chan error { return p.errc }

// Close stops every component in reverse boot order. Shims keep running.
func (p *Platform) Close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

// runUntilClose runs a control loop in the background until Close.
func (p *Platform) runUntilClose(run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = run(ctx) }()
	p.closers = append(p.closers, func() { cancel(); <-done })
}

// replicaID names this process in leader elections.
func replicaID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}
