package network

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	cnitypes "github.com/containernetworking/cni/pkg/types"
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
	states stateStore

	// ids serializes Pin, Attach, Setup and Teardown of one instance.
	ids keyedMutex

	// reserveMu makes checking the requested host ports against every
	// state file and writing the state file that claims them one step.
	reserveMu sync.Mutex

	// lists holds the plugin chains by name (see chainBridge); read-only.
	lists map[string]*libcni.NetworkConfigList
	// subnet is cfg.Subnet, parsed.
	subnet netip.Prefix
	// filter keeps the network's packet filter.
	filter *filter

	heldMu sync.Mutex
	// held are the bound sockets that hold each instance's published
	// host ports against host processes (holdHostPorts); protected by
	// heldMu.
	held map[string][]io.Closer

	unattachedMu sync.Mutex
	// unattached holds the ids this manager pinned and has run no CNI ADD
	// on since (in memory only: after a restart, a pinned but not Ready
	// attachment may hold a partial ADD); protected by unattachedMu.
	unattached map[string]bool
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
	// The portmap plugin (and the bridge plugin, for attachments made
	// before the manager masqueraded) run iptables; the manager runs
	// iptables-restore.
	for _, bin := range []string{"iptables", "iptables-restore"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found in PATH (cni networking needs it): install iptables: %w", bin, err)
		}
	}
	// The packet filter (see filter.go) runs nft.
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, fmt.Errorf("nft not found in PATH (the instance network's packet filter needs it): install nftables: %w", err)
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
	if cfg.IPMasq {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.PluginTimeout)
		err := ensureNetworkMasq(ctx, cfg.NetworkName, subnet)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	lists := map[string]*libcni.NetworkConfigList{}
	for _, chain := range []string{chainLegacy, chainBridge, chainBridgePortMap} {
		if lists[chain], err = confList(cfg, ipamDir, chain); err != nil {
			return nil, err
		}
	}
	m := &cniManager{
		cfg:        cfg,
		log:        log,
		cni:        libcni.NewCNIConfigWithCacheDir(cfg.PluginDirs, cacheDir, pluginExec(log)),
		lists:      lists,
		subnet:     subnet,
		filter:     newFilter(cfg.BridgeName, subnet, log),
		states:     stateStore{dir: stateDir},
		unattached: map[string]bool{},
		held:       map[string][]io.Closer{},
	}
	// Instances outlive the manager: re-make the filter of every one a
	// state file lists, and only theirs.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.PluginTimeout)
	defer cancel()
	if err := m.adoptLegacy(); err != nil {
		return nil, err
	}
	if err := m.filterSync(ctx); err != nil {
		return nil, err
	}
	m.holdAdopted()
	return m, nil
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
		held, err := holdHostPorts(st.Ports)
		if err != nil {
			return err
		}
		if err := m.states.put(st); err != nil {
			closeAll(held)
			return err
		}
		m.setHeld(st.ID, held)
		return nil
	}
	return m.states.put(st)
}

// setHeld replaces the sockets holding id's host ports (nil: releases them).
func (m *cniManager) setHeld(id string, held []io.Closer) {
	m.heldMu.Lock()
	defer m.heldMu.Unlock()
	closeAll(m.held[id])
	delete(m.held, id)
	if len(held) > 0 {
		m.held[id] = held
	}
}

// holdAdopted holds the host ports of the instances that outlived the
// previous manager. A port a host process took in between stays with it
// (and keeps losing its local clients to the instance): that is logged.
func (m *cniManager) holdAdopted() {
	all, err := m.states.all()
	if err != nil {
		m.log.Warn("cannot hold published host ports", "err", err)
		return
	}
	for _, st := range all {
		if len(st.Ports) == 0 {
			continue
		}
		held, err := holdHostPorts(st.Ports)
		if err != nil {
			m.log.Warn("a host process bound a port published by an instance", "id", st.ID, "err", err)
			continue
		}
		m.setHeld(st.ID, held)
	}
}

func (m *cniManager) runtimeConf(st instanceState) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: st.ID, NetNS: st.NetNS, IfName: ifName}
	if len(st.Ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": st.Ports}
	}
	return rt
}

// addResult is what the filter needs of a CNI ADD.
type addResult struct {
	ip      string // the instance's IPv4 address
	prefix  int    // its prefix length
	gateway string // its IPv4 gateway ("" for none)
	veth    string // host side of its veth
	mac     string // its MAC
	routes  []Route
	dns     DNS
}

// add runs CNI ADD and returns the instance's IPv4 address, MAC and host
// veth. The network's own rules masquerade it (see ensureNetworkMasq).
func (m *cniManager) add(ctx context.Context, st instanceState) (addResult, error) {
	list, err := m.listFor(st)
	if err != nil {
		return addResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.PluginTimeout)
	defer cancel()
	res, err := m.cni.AddNetworkList(ctx, list, m.runtimeConf(st))
	if err != nil {
		return addResult{}, fmt.Errorf("cni add: %w", err)
	}
	r, err := parseResult(res, m.cfg.BridgeName)
	if err != nil {
		return addResult{}, fmt.Errorf("cni add: %w", err)
	}
	return r, nil
}

// parseResult finds the instance's IPv4 address and the interfaces of the
// bridge plugin's result: the bridge, the host veth (no sandbox) and the
// instance's interface (in the sandbox).
func parseResult(res cnitypes.Result, bridge string) (addResult, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return addResult{}, fmt.Errorf("convert result: %w", err)
	}
	var out addResult
	for _, ipc := range r.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok {
			out.ip = a.String()
			out.prefix, _ = ipc.Address.Mask.Size()
			if gw, ok := netip.AddrFromSlice(ipc.Gateway.To4()); ok {
				out.gateway = gw.String()
			}
			break
		}
	}
	for _, rt := range r.Routes {
		if rt.Dst.IP.To4() == nil {
			continue
		}
		route := Route{Dst: rt.Dst.String()}
		if gw := rt.GW.To4(); gw != nil {
			route.GW = gw.String()
		}
		out.routes = append(out.routes, route)
	}
	out.dns = DNS{Nameservers: r.DNS.Nameservers, Search: r.DNS.Search, Options: r.DNS.Options}
	for _, i := range r.Interfaces {
		switch {
		case i.Sandbox != "" && i.Name == ifName:
			out.mac = i.Mac
		case i.Sandbox == "" && i.Name != bridge:
			out.veth = i.Name
		}
	}
	if out.ip == "" || out.veth == "" || out.mac == "" {
		return addResult{}, fmt.Errorf("result lacks an IPv4 address, the host veth or the instance's mac: %v, %v", r.IPs, r.Interfaces)
	}
	if hw, err := net.ParseMAC(out.mac); err == nil {
		out.mac = hw.String()
	}
	return out, nil
}

// listFor is the plugin chain st was (or is to be) attached with.
func (m *cniManager) listFor(st instanceState) (*libcni.NetworkConfigList, error) {
	list, ok := m.lists[st.Chain]
	if !ok {
		return nil, fmt.Errorf("network state of %s names cni plugin chain %q, which this version does not know", st.ID, st.Chain)
	}
	return list, nil
}

// del runs CNI DEL with the arguments of st's ADD and removes the
// masquerade rules of st. Without a mounted namespace the plugins still
// free the IP and the port rules, and the masquerade rules are removed
// even if the bridge plugin made them.
func (m *cniManager) del(ctx context.Context, st instanceState) error {
	list, err := m.listFor(st)
	if err != nil {
		return err
	}
	rt := m.runtimeConf(st)
	pinned := isPinnedNetNS(st.NetNS)
	if !pinned {
		rt.NetNS = ""
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.PluginTimeout)
	defer cancel()
	if err := m.cni.DelNetworkList(ctx, list, rt); err != nil {
		return fmt.Errorf("cni del: %w", err)
	}
	// The veth is gone, so its frames are too: now drop its filter (the
	// filter knows it even if st does not: an ADD crashed before Ready).
	if err := m.filter.remove(ctx, st.ID); err != nil {
		return err
	}
	if st.HostVeth != "" {
		st.HostVeth, st.MAC = "", ""
		if err := m.states.put(st); err != nil {
			return err
		}
	}
	if st.Masq || st.Chain == chainLegacy && !pinned && m.cfg.IPMasq {
		if err := removeMasq(ctx, m.cfg.NetworkName, st.ID); err != nil {
			return err
		}
	}
	return nil
}

// teardown undoes whatever part of Pin and Attach happened: CNI DEL (which
// frees the IP and removes the veth and iptables rules), then the pin,
// then the state. It stops at the first failure and keeps the state file,
// so the next Teardown retries with the same arguments.
func (m *cniManager) teardown(ctx context.Context, st instanceState) error {
	m.setUnattached(st.ID, false)
	// Run DEL before unpinning: the bridge plugin finds the veth to remove
	// (and, in chainLegacy, the masquerade rules) inside the namespace.
	if err := m.del(ctx, st); err != nil {
		return err
	}
	if err := unmountAndRemove(st.NetNS); err != nil {
		return err
	}
	if err := m.states.remove(st.ID); err != nil {
		return err
	}
	m.setHeld(st.ID, nil)
	return nil
}

// validateTenant refuses an empty tenant: an instance without one could
// be grouped with nobody's, or with everybody's.
func validateTenant(id, tenant string) error {
	if tenant == "" {
		return fmt.Errorf("instance %s: no tenant given: the network isolates instances by tenant: %w", id, errdefs.ErrInvalid)
	}
	return nil
}

// validateID accepts what CNI accepts as a container id and is safe as a
// file name.
func validateID(id string) error {
	if len(id) > 128 || !cniName.MatchString(id) {
		return fmt.Errorf("instance id %q is invalid: use 1-128 letters, digits, '_', '.', '-', starting with a letter or digit: %w", id, errdefs.ErrInvalid)
	}
	return nil
}
