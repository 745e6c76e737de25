package agent

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/cube-platform/cube/guest/agentapi"
)

// configureNetwork sets up lo and the VM's link from Setup: MAC, MTU,
// address, up, the default route and the extra routes. The containers
// share this network namespace (the built-in infra).
// Preconditions: a.mu is held.
// prepareNetwork does what every VM's network needs, whoever it is for:
// lo up, and ICMP datagram sockets. PID 1 does it before it serves, so a
// template's clones find it done (under TCG a clone runs every piece of
// guest code it needs for the first time, slowly). Nothing here draws a
// random number or sends a packet.
func (a *Agent) prepareNetwork() error {
	if a.netPrepared {
		return nil
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	// Containers have no CAP_NET_RAW; ping then needs ICMP datagram
	// sockets, which cannot spoof (as the runc backend sets it).
	if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0); err != nil {
		return fmt.Errorf("set ping_group_range: %w", err)
	}
	a.netPrepared = true
	return nil
}

func (a *Agent) configureNetwork(n *agentapi.Network) error {
	if err := a.prepareNetwork(); err != nil {
		return err
	}
	if n.GetIpv4Cidr() == "" {
		return nil
	}
	link, err := netlink.LinkByName(a.cfg.Link)
	if err != nil {
		return fmt.Errorf("find %s: %w", a.cfg.Link, err)
	}
	if b := a.booted; b != nil && b.mac == nil {
		b.mac, b.mtu = slices.Clone(link.Attrs().HardwareAddr), link.Attrs().MTU
	}
	if n.GetMac() != "" {
		mac, err := net.ParseMAC(n.GetMac())
		if err != nil {
			return err
		}
		// A cold boot's card has this MAC from the VMM already; taking
		// the link down and up for nothing costs emulated driver work.
		if !bytes.Equal(link.Attrs().HardwareAddr, mac) {
			// Some drivers only take a new address while down.
			if err := netlink.LinkSetDown(link); err != nil {
				return fmt.Errorf("set %s down: %w", a.cfg.Link, err)
			}
			if err := netlink.LinkSetHardwareAddr(link, mac); err != nil {
				return fmt.Errorf("set %s's mac: %w", a.cfg.Link, err)
			}
		}
	}
	if n.GetMtu() != 0 {
		if err := netlink.LinkSetMTU(link, int(n.GetMtu())); err != nil {
			return fmt.Errorf("set %s's mtu: %w", a.cfg.Link, err)
		}
	}
	addr, err := netlink.ParseAddr(n.GetIpv4Cidr())
	if err != nil {
		return err
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add %s to %s: %w", n.GetIpv4Cidr(), a.cfg.Link, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", a.cfg.Link, err)
	}
	if gw := n.GetGateway(); gw != "" {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP(gw)}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("add the default route via %s: %w", gw, err)
		}
	}
	for _, rt := range n.GetRoutes() {
		_, dst, err := net.ParseCIDR(rt.GetDestination())
		if err != nil {
			return err
		}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst}
		if rt.GetGateway() != "" {
			r.Gw = net.ParseIP(rt.GetGateway())
		} else {
			r.Scope = netlink.SCOPE_LINK
		}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("add route %s: %w", rt.GetDestination(), err)
		}
	}
	return nil
}
