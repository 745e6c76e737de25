package network

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Config configures the CNI network manager. Start from DefaultConfig.
type Config struct {
	// NetworkName is the CNI network name. It keys the libcni cache, the
	// host-local store and the iptables comments ("name: cube id: <id>"),
	// so two Cube nodes sharing one host need different names.
	NetworkName string
	// BridgeName is the host bridge that instances' veths are attached to;
	// the bridge takes the subnet's first address as the instances' gateway.
	// At most 15 characters (a Linux interface name).
	BridgeName string
	// Subnet is the IPv4 CIDR that host-local hands instance addresses out
	// of. It must not overlap any route on the host other than the bridge's
	// own; NewCNI refuses one that does.
	Subnet string
	// PluginDirs are searched, in order, for the CNI plugin binaries
	// (bridge, host-local, portmap).
	PluginDirs []string
	// StateDir holds the per-instance state files, libcni's result cache
	// and host-local's allocations. It is private to one Cube node: two
	// nodes on one host (as in tests) must not share it, and it is never
	// the global /var/lib/cni.
	StateDir string
	// NetNSDir is where each instance's network namespace is pinned, as
	// NetNSDir/<id>. NewCNI makes it a shared mount point (as `ip netns`
	// does) so pins made later show up in other mount namespaces.
	NetNSDir string
	// IPMasq masquerades traffic from instances to addresses outside
	// Subnet (the bridge plugin's ipMasq), so instances can reach out.
	IPMasq bool
	// PluginTimeout bounds one CNI ADD or DEL of the whole plugin chain.
	PluginTimeout time.Duration
}

// Defaults. The subnet avoids the ranges other runtimes on a node tend to
// claim: Docker 172.17.0.0/16, Podman 10.88.0.0/16, flannel/kubeadm
// 10.244.0.0/16, k3s 10.42.0.0/16, Calico 192.168.0.0/16. The hosts we run
// on route only their uplink (192.0.2.0/24 when this was written).
const (
	DefaultNetworkName   = "cube"
	DefaultBridgeName    = "cube0"
	DefaultSubnet        = "10.213.0.0/16"
	DefaultStateDir      = "/var/lib/cube/network"
	DefaultNetNSDir      = "/run/cube/netns"
	DefaultPluginTimeout = time.Minute
)

// DefaultConfig returns a Config with every field set.
func DefaultConfig() Config {
	return Config{
		NetworkName:   DefaultNetworkName,
		BridgeName:    DefaultBridgeName,
		Subnet:        DefaultSubnet,
		PluginDirs:    []string{"/usr/lib/cni", "/opt/cni/bin"},
		StateDir:      DefaultStateDir,
		NetNSDir:      DefaultNetNSDir,
		IPMasq:        true,
		PluginTimeout: DefaultPluginTimeout,
	}
}

// cniName is the character set CNI accepts for network names and
// container ids (libcni's utils.cniReg).
var cniName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// Validate reports every problem with c at once. It does no I/O.
func (c Config) Validate() error {
	var errs []error
	if !cniName.MatchString(c.NetworkName) {
		errs = append(errs, fmt.Errorf("network name %q is invalid: use letters, digits, '_', '.', '-'", c.NetworkName))
	}
	if c.BridgeName == "" || len(c.BridgeName) > 15 || strings.ContainsAny(c.BridgeName, "/: \t\n") {
		errs = append(errs, fmt.Errorf("bridge name %q is invalid: use 1-15 characters without '/', ':' or spaces", c.BridgeName))
	}
	if _, err := parseSubnet(c.Subnet); err != nil {
		errs = append(errs, err)
	}
	if len(c.PluginDirs) == 0 {
		errs = append(errs, errors.New("no cni plugin directories: set PluginDirs, e.g. /usr/lib/cni"))
	}
	for _, d := range c.PluginDirs {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("cni plugin directory %q is not an absolute path", d))
		}
	}
	if !filepath.IsAbs(c.StateDir) {
		errs = append(errs, fmt.Errorf("state dir %q is not an absolute path", c.StateDir))
	}
	if !filepath.IsAbs(c.NetNSDir) {
		errs = append(errs, fmt.Errorf("netns dir %q is not an absolute path", c.NetNSDir))
	}
	if c.PluginTimeout <= 0 {
		errs = append(errs, fmt.Errorf("plugin timeout %v is not positive", c.PluginTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid network config: %w", err)
	}
	return nil
}

// parseSubnet accepts a masked IPv4 prefix with room for a gateway and at
// least one instance.
func parseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("subnet %q is not a CIDR such as %s", s, DefaultSubnet)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("subnet %q is not IPv4: only IPv4 is supported", s)
	}
	if p.Bits() < 8 || p.Bits() > 29 {
		return netip.Prefix{}, fmt.Errorf("subnet %q must be between /8 and /29", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("subnet %q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}
