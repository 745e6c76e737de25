package cli

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/internal/allinone"
	"github.com/spf13/cobra"
)

func newUpCmd(g *globals) *cobra.Command {
	var cfg allinone.Config
	var etcd, logLevel string
	var labels, taints []string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole platform on this machine",
		Long: `Run Cube on this machine in one process: etcd (embedded, unless
--etcd-endpoints names a cluster), the API server, placement, and a node agent.
On first start it creates the admin tenant and its token and writes a client
config ($CUBE_CONFIG or ~/.config/cube/config.yaml, mode 0600) so every other
command works with no flags. Instances keep running when cube up stops; the
next cube up on the same --data-dir adopts them. Needs root.

The embedded etcd opens no TCP port: only cube up itself (and root, through
DATA_DIR/etcd/etcd.sock) can reach it. An external cluster is reached with
TLS when --etcd-cafile (and, for client-certificate auth, --etcd-certfile and
--etcd-keyfile) are set; --etcd-user authenticates with etcd's own auth, with
the password from $CUBE_ETCD_PASSWORD (never on the command line, where
every local user can read it). The node agent serves logs and exec to the API
server on the unix socket DATA_DIR/node/agent.sock unless --node-listen names
a fixed HOST:PORT.

The node runs instances in microVMs (runtime microvm) once it has the guest
kernel (cached in /var/cache/cube/kernel/<hash>), cube-agent beside cube and
QEMU; a missing kernel is built in the background while runc serves (see
cube nodes for its progress). --default-runtime is the runtime of instances
that name none, where their tenant may use it: auto (microvm once the node
can run VMs), microvm or runc. Tenants other than admin run microvm only
unless granted runc (cube tenant update NAME --allow-runtime runc).`,
		Example: `  sudo cube up
  cube up --data-dir /tmp/cube --listen 127.0.0.1:7690
  cube up --etcd-endpoints https://10.0.0.1:2379,https://10.0.0.2:2379 \
      --etcd-cafile ca.pem --etcd-certfile cube.pem --etcd-keyfile cube-key.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("cube up needs root (it manages cgroups, mounts and network namespaces): run it with sudo")
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
			}
			cfg.Log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
			if etcd != "" {
				cfg.Etcd.Endpoints = strings.Split(etcd, ",")
				cfg.Etcd.Password = os.Getenv("CUBE_ETCD_PASSWORD")
			} else if cfg.Etcd.CAFile != "" || cfg.Etcd.CertFile != "" || cfg.Etcd.KeyFile != "" || cfg.Etcd.Username != "" {
				return fmt.Errorf("--etcd-cafile, --etcd-certfile, --etcd-keyfile and --etcd-user need --etcd-endpoints (the embedded etcd listens on a unix socket only)")
			}
			if cfg.Capacity.CPU != "" {
				if _, err := v1.ParseCPU(cfg.Capacity.CPU); err != nil {
					return fmt.Errorf("--capacity-cpu: %w", err)
				}
			}
			if cfg.Capacity.Memory != "" {
				if _, err := v1.ParseMemory(cfg.Capacity.Memory); err != nil {
					return fmt.Errorf("--capacity-memory: %w", err)
				}
			}
			cfg.NodeLabels = map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return fmt.Errorf("--node-label %q: want key=value", l)
				}
				cfg.NodeLabels[k] = v
			}
			for _, t := range taints {
				kv, effect, ok := strings.Cut(t, ":")
				k, v, _ := strings.Cut(kv, "=")
				if !ok || k == "" || effect != "NoSchedule" {
					return fmt.Errorf("--node-taint %q: want key[=value]:NoSchedule", t)
				}
				cfg.NodeTaints = append(cfg.NodeTaints, v1.Taint{Key: k, Value: v, Effect: effect})
			}
			cfg.ShimCommand = defaultShimCommand()
			cfg.ClientConfig = g.configPath
			if cfg.ClientConfig == "" {
				cfg.ClientConfig = client.DefaultConfigPath()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			p, err := allinone.Start(ctx, cfg)
			if err != nil {
				return err
			}
			defer p.Close()
			fmt.Fprintf(g.stderr, "Cube is up: API %s, client config %s\nTry: cube nodes; cube image import FILE.tar; cube run IMAGE\n", p.URL, cfg.ClientConfig)
			select {
			case <-ctx.Done():
				fmt.Fprintln(g.stderr, "cube up: stopping (instances keep running)")
				return nil
			case err := <-p.Err():
				return err
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.DataDir, "data-dir", "/var/lib/cube", "where etcd data, images, instance state and tokens live")
	fl.StringVar(&cfg.Listen, "listen", "127.0.0.1:7680", "API server address")
	fl.StringVar(&etcd, "etcd-endpoints", "", "comma-separated external etcd endpoints (default: embedded etcd)")
	fl.StringVar(&cfg.Etcd.CAFile, "etcd-cafile", "", "CA bundle that verifies the external etcd's certificates (turns TLS on)")
	fl.StringVar(&cfg.Etcd.CertFile, "etcd-certfile", "", "client certificate for an external etcd with --client-cert-auth")
	fl.StringVar(&cfg.Etcd.KeyFile, "etcd-keyfile", "", "key of --etcd-certfile")
	fl.StringVar(&cfg.Etcd.Username, "etcd-user", "", "etcd auth user of the external etcd; the password comes from $CUBE_ETCD_PASSWORD")
	fl.StringVar(&cfg.NodeName, "node-name", "", "name of this node (default: hostname)")
	fl.StringVar(&cfg.NodeListen, "node-listen", "", "node agent HOST:PORT for logs and exec, a fixed port (default: a unix socket under --data-dir)")
	fl.StringVar(&cfg.Capacity.CPU, "capacity-cpu", "", "cores offered to instances (default: all)")
	fl.StringVar(&cfg.Capacity.Memory, "capacity-memory", "", "memory offered to instances (default: all)")
	fl.StringVar(&cfg.Subnet, "subnet", "", "instance network subnet (default 10.213.0.0/16)")
	fl.StringVar(&cfg.Bridge, "bridge", "", "instance network bridge name (default cube0)")
	fl.StringArrayVar(&labels, "node-label", nil, "label this node key=value, e.g. zone=a (repeatable)")
	fl.StringArrayVar(&taints, "node-taint", nil, "taint this node key[=value]:NoSchedule (repeatable)")
	fl.StringVar(&cfg.Placement, "placement", "binpack", "scoring: binpack (fill nodes first) or spread (least allocated first)")
	fl.StringVar(&logLevel, "log-level", "info", "debug|info|warn|error")
	fl.BoolVar(&cfg.BuildKernel, "build-kernel", true, "build the guest kernel in the background when it is not cached (microvm instances wait for it)")
	fl.IntVar(&cfg.WarmVMs, "warm-vms", 1, "microVMs kept warm per VM size: clones restored and rehearsed ahead, which a create takes over (each ~60 MiB and ~2% of a core while idle under TCG); 0: none")
	fl.StringVar(&cfg.DefaultRuntime, "default-runtime", "auto", "runtime of instances that name none, where their tenant may use it: microvm, runc, or auto (microvm once this node can run VMs)")
	fl.StringArrayVar(&cfg.RegistryAllow, "registry-allow", nil, "let tenants pull from this registry HOST:PORT although it is on loopback, link-local or this host (repeatable)")
	return cmd
}
