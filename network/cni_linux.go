package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cube-platform/cube/errdefs"
)

// ifName is the instance's interface inside its namespace.
const ifName = "eth0"

// cniManager attaches instances with libcni and the standard plugins. All
// durable state is in files under cfg.StateDir and cfg.NetNSDir, so a new
// manager on the same directories takes over where an old one stopped.
// One process at a time owns a StateDir.
type cniManager struct {
	cfg    Config
	log    *slog.Logger
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
	states stateStore

	// ids serializes Setup and Teardown of one instance.
	ids keyedMutex

	// reserveMu makes checking the requested host ports against every
	// state file and writing the state file that claims them one step.
	reserveMu sync.Mutex
}

var _ Manager = (*cniManager)(nil)

// NewCNI checks the host (plugins, iptables, subnet against host routes),
// creates cfg's directories, makes cfg.NetNSDir a shared mount point, and
// returns a Manager. It starts no goroutines and needs no Close.
func NewCNI(cfg Config, log *slog.Logger) (Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "network", "network", cfg.NetworkName)
	for _, p := range requiredPlugins {
		if _, err := invoke.FindInPath(p, cfg.PluginDirs); err != nil {
			return nil, fmt.Errorf("cni plugin %q not found in %s: install containernetworking-plugins",
				p, strings.Join(cfg.PluginDirs, ", "))
		}
	}
	// The bridge (ipMasq) and portmap plugins run iptables themselves.
	if _, err := exec.LookPath("iptables"); err != nil {
		return nil, fmt.Errorf("iptables not found in PATH (the cni plugins need it): install iptables: %w", err)
	}
	subnet, err := parseSubnet(cfg.Subnet)
	if err != nil {
		return nil, err
	}
	if err := checkSubnetFree(subnet, cfg.BridgeName); err != nil {
		return nil, err
	}

	stateDir := filepath.Join(cfg.StateDir, "instances")
	cacheDir := filepath.Join(cfg.StateDir, "cache")
	ipamDir := filepath.Join(cfg.StateDir, "ipam")
	for _, d := range []string{stateDir, cacheDir, ipamDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create network state dir: %w", err)
		}
	}
	if err := makeSharedMount(cfg.NetNSDir); err != nil {
		return nil, err
	}
	list, err := confList(cfg, ipamDir)
	if err != nil {
		return nil, err
	}
	return &cniManager{
		cfg:    cfg,
		log:    log,
		cni:    libcni.NewCNIConfigWithCacheDir(cfg.PluginDirs, cacheDir, pluginExec(log)),
		list:   list,
		states: stateStore{dir: stateDir},
	}, nil
}

// pluginExec runs the plugin binaries. libcni would build one lazily on
// first use, which races when Setups run in parallel. What a successful
// plugin prints on stderr goes to the log (a failing one's is in the error).
func pluginExec(log *slog.Logger) invoke.Exec {
	return &invoke.DefaultExec{
		RawExec:       &invoke.RawExec{Stderr: stderrLog{log}},
		PluginDecoder: version.PluginDecoder{},
	}
}

// stderrLog logs each write (one per plugin run) at debug level.
type stderrLog struct{ log *slog.Logger }

func (w stderrLog) Write(p []byte) (int, error) {
	w.log.Debug("cni plugin stderr", "output", strings.TrimSpace(string(p)))
	return len(p), nil
}

// Setup implements Manager.
func (m *cniManager) Setup(ctx context.Context, id string, ports []PortMapping) (_ Attachment, err error) {
	if err := validateID(id); err != nil {
		return Attachment{}, err
	}
	ports, err = normalizePorts(ports)
	if err != nil {
		return Attachment{}, fmt.Errorf("instance %s: %w", id, err)
	}
	unlock, err := m.ids.lock(ctx, id)
	if err != nil {
		return Attachment{}, fmt.Errorf("instance %s: wait for network operation under way: %w", id, err)
	}
	defer unlock()

	st, found, err := m.states.get(id)
	if err != nil {
		return Attachment{}, err
	}
	if found {
		if st.Ready && isPinnedNetNS(st.NetNS) {
			if !slices.Equal(st.Ports, ports) {
				m.log.Warn("instance already attached with other port mappings; keeping them",
					"id", id, "have", st.Ports, "want", ports)
			}
			return st.attachment(), nil
		}
		// A Setup failed or crashed midway, or the pin vanished (reboot).
		m.log.Info("cleaning up incomplete network attachment", "id", id, "ready", st.Ready)
		if err := m.teardown(ctx, st); err != nil {
			return Attachment{}, fmt.Errorf("instance %s: clean up incomplete attachment: %w", id, err)
		}
	}

	st = instanceState{ID: id, NetNS: filepath.Join(m.cfg.NetNSDir, id), Ports: ports}
	if _, err := os.Lstat(st.NetNS); err == nil {
		m.log.Warn("removing netns pin without network state", "id", id, "path", st.NetNS)
		if err := unmountAndRemove(st.NetNS); err != nil {
			return Attachment{}, fmt.Errorf("instance %s: %w", id, err)
		}
	}
	if err := m.reserve(st); err != nil {
		return Attachment{}, fmt.Errorf("instance %s: %w", id, err)
	}
	defer func() {
		if err == nil {
			return
		}
		// The caller's ctx may be what failed; the rollback still runs.
		if rerr := m.teardown(context.WithoutCancel(ctx), st); rerr != nil {
			m.log.Error("rollback of failed network setup", "id", id, "err", rerr)
			err = errors.Join(err, fmt.Errorf("roll back (retry with Teardown): %w", rerr))
		}
	}()

	if err := pinNetNS(st.NetNS); err != nil {
		return Attachment{}, fmt.Errorf("instance %s: %w", id, err)
	}
	ip, err := m.add(ctx, st)
	if err != nil {
		return Attachment{}, fmt.Errorf("instance %s: %w", id, err)
	}
	st.IP, st.Ready = ip, true
	if err := m.states.put(st); err != nil {
		return Attachment{}, err
	}
	m.log.Info("instance attached", "id", id, "ip", ip, "netns", st.NetNS, "ports", ports)
	return st.attachment(), nil
}

// Teardown implements Manager.
func (m *cniManager) Teardown(ctx context.Context, id string) error {
	if err := validateID(id); err != nil {
		return err
	}
	unlock, err := m.ids.lock(ctx, id)
	if err != nil {
		return fmt.Errorf("instance %s: wait for network operation under way: %w", id, err)
	}
	defer unlock()

	st, found, err := m.states.get(id)
	if err != nil {
		return err
	}
	if !found {
		// Nothing of ours is left but, perhaps, a pin whose state was lost.
		if err := unmountAndRemove(filepath.Join(m.cfg.NetNSDir, id)); err != nil {
			return fmt.Errorf("instance %s: %w", id, err)
		}
		return nil
	}
	if err := m.teardown(ctx, st); err != nil {
		return fmt.Errorf("instance %s: %w", id, err)
	}
	m.log.Info("instance detached", "id", id, "ip", st.IP)
	return nil
}

// List implements Manager. It lists every id with a state file, which
// includes those whose Setup failed midway: they need a Teardown too.
func (m *cniManager) List(ctx context.Context) ([]string, error) {
	return m.states.ids()
}

// reserve claims st's host ports by writing its state file, unless another
// instance or a host process already has one of them.
func (m *cniManager) reserve(st instanceState) error {
	m.reserveMu.Lock()
	defer m.reserveMu.Unlock()
	if len(st.Ports) > 0 {
		all, err := m.states.all()
		if err != nil {
			return err
		}
		if p, other, found := findPortConflict(st.ID, st.Ports, all); found {
			return fmt.Errorf("host port %s is already published by instance %s: %w", describePort(p), other, ErrPortInUse)
		}
		if err := probeHostPorts(st.Ports); err != nil {
			return err
		}
	}
	return m.states.put(st)
}

func (m *cniManager) runtimeConf(st instanceState) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: st.ID, NetNS: st.NetNS, IfName: ifName}
	if len(st.Ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": st.Ports}
	}
	return rt
}

// add runs CNI ADD and returns the instance's IPv4 address.
func (m *cniManager) add(ctx context.Context, st instanceState) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.PluginTimeout)
	defer cancel()
	res, err := m.cni.AddNetworkList(ctx, m.list, m.runtimeConf(st))
	if err != nil {
		return "", fmt.Errorf("cni add: %w", err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return "", fmt.Errorf("cni add: convert result: %w", err)
	}
	for _, ipc := range r.IPs {
		if ip := ipc.Address.IP.To4(); ip != nil {
			return ip.String(), nil
		}
	}
	return "", fmt.Errorf("cni add: result has no IPv4 address: %v", r.IPs)
}

// teardown undoes whatever part of Setup happened: CNI DEL (which frees the
// IP and removes the veth and iptables rules), then the pin, then the
// state. It stops at the first failure and keeps the state file, so the
// next Teardown retries with the same arguments.
func (m *cniManager) teardown(ctx context.Context, st instanceState) error {
	rt := m.runtimeConf(st)
	// Run DEL before unpinning: the bridge plugin finds the masquerade
	// rules to remove through the veth inside the namespace. Without a
	// mounted namespace (reboot, or a Setup that died before pinning) the
	// plugins still free the IP and the port rules, and we remove the
	// masquerade rules ourselves.
	pinned := isPinnedNetNS(st.NetNS)
	if !pinned {
		rt.NetNS = ""
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.PluginTimeout)
	defer cancel()
	if err := m.cni.DelNetworkList(ctx, m.list, rt); err != nil {
		return fmt.Errorf("cni del: %w", err)
	}
	if !pinned && m.cfg.IPMasq {
		if err := removeOrphanMasq(ctx, m.cfg.NetworkName, st.ID); err != nil {
			return fmt.Errorf("remove masquerade rules of a lost netns: %w", err)
		}
	}
	if err := unmountAndRemove(st.NetNS); err != nil {
		return err
	}
	return m.states.remove(st.ID)
}

// validateID accepts what CNI accepts as a container id and is safe as a
// file name.
func validateID(id string) error {
	if len(id) > 128 || !cniName.MatchString(id) {
		return fmt.Errorf("instance id %q is invalid: use 1-128 letters, digits, '_', '.', '-', starting with a letter or digit: %w", id, errdefs.ErrInvalid)
	}
	return nil
}
