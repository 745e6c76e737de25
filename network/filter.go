package network

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// The network's packet filter: two nftables tables of its own, both named
// after the bridge (filterTable), so that several Cube networks on one host
// (tests, e2e) never touch each other's rules.
//
// The bridge table (family bridge) sees every frame that enters the bridge
// from an instance's host-side veth (a "port"):
//
//   - prerouting: a frame from a port must carry the port's MAC as source,
//     be IPv4 from the port's IP or ARP whose sender is the port's MAC and
//     IP; any other ethertype (IPv6, VLAN tags, ...) is dropped. No
//     spoofing, whatever the destination.
//   - forward (port to port): a frame from a port jumps to its tenant's
//     chain, which lets it out only to a port of the same tenant; a frame
//     from a port the filter does not know yet (one being attached) is
//     dropped on its way to any known port.
//   - output (host to port, which includes traffic the host routed): an
//     IPv4 packet whose source is an instance address must come from the
//     port's own tenant, so routing through the gateway (or through a
//     published port's DNAT) does not cross tenants either.
//
// The inet table guards the host: traffic arriving on the bridge to a host
// address is dropped unless it belongs to a connection the host opened
// (ct established/related), and a destination in 127.0.0.0/8 or ::1 is
// dropped before conntrack and NAT see it (the CNI portmap plugin sets
// route_localnet on the bridge, so the kernel would route it to the
// host's loopback: CVE-2020-8558). So is a destination in 169.254.0.0/16,
// link-local, where clouds serve instance metadata and the node's
// credentials: the host would otherwise route it. That is not done in the bridge table:
// with br_netfilter the replies to the host's connections through
// 127.0.0.1:<published port> are already un-NATed to 127.0.0.1 when the
// bridge's input hook sees them. Published ports still work: they
// are DNATed to an instance in prerouting and so are forwarded, not input.
//
// The per-instance part is set elements only (the port in ports, its MAC
// and IP, its tenant's verdict maps and sets), so an Attach adds elements
// in one netlink transaction (filter_elems_linux.go) and never rewrites
// rules; a tenant's two chains are made, by an nft script, with its first
// instance. When the manager starts, it rewrites both
// tables from the state files in one transaction (sync), which re-makes the
// rules of live instances and drops those of vanished ones. Should a
// change fail later (say the tables were flushed behind our back), the
// filter rewrites both tables from what it holds in memory.

// filter writes the network's nftables rules, one atomic transaction per
// change: rules as nft scripts (nft -f -), elements over netlink.
type filter struct {
	table   string
	bridge  string
	subnet  netip.Prefix
	gateway netip.Addr

	// mu serializes transactions, so that ports and groups stay true.
	mu sync.Mutex
	// ports holds the ports in the filter, by instance id: what a
	// rewrite after a failed change makes; protected by mu.
	ports map[string]port
	// groups holds the tenant groups whose chains and sets exist in the
	// bridge table; protected by mu.
	groups map[string]bool
	// rewrites counts the rewrites of both tables; protected by mu.
	rewrites int

	log *slog.Logger
}

// port is what the filter knows of one attached instance.
type port struct {
	ID    string
	Veth  string // host side of the instance's veth, a port of the bridge
	MAC   string // the instance's MAC
	IP    string // the instance's IPv4 address
	Group string // tenant group, see tenantGroup
}

// tenantGroup is the group of the instances that may talk to each other:
// one per tenant. An attachment made before tenants were recorded has no
// tenant and is a group of its own, isolated from all others.
func tenantGroup(tenant, id string) string {
	if tenant == "" {
		return "instance:" + id
	}
	return "tenant:" + tenant
}

func newFilter(bridge string, subnet netip.Prefix, log *slog.Logger) *filter {
	return &filter{
		log:     log,
		table:   filterTable(bridge),
		bridge:  bridge,
		subnet:  subnet,
		gateway: subnet.Addr().Next(), // host-local's default gateway
		ports:   map[string]port{},
		groups:  map[string]bool{},
	}
}

var nftName = regexp.MustCompile(`^[a-zA-Z0-9_]+$`)

// filterTable names the network's tables after its bridge: cube_<bridge>,
// with a hash when the bridge name has characters nft names do not take.
func filterTable(bridge string) string {
	if nftName.MatchString(bridge) {
		return "cube_" + bridge
	}
	sum := sha256.Sum256([]byte(bridge))
	return "cube_" + nftName.ReplaceAllString(bridge, "_") + "_" + hex.EncodeToString(sum[:4])
}

// groupID is a group's short name in chain and set names; the group itself
// (a tenant name) never reaches nft.
func groupID(group string) string {
	sum := sha256.Sum256([]byte(group))
	return hex.EncodeToString(sum[:8])
}

var ifaceName = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,15}$`)

// check makes sure p can go into an nft script as it is.
func (p port) check() error {
	if !ifaceName.MatchString(p.Veth) {
		return fmt.Errorf("instance %s: host interface name %q is not a plain interface name", p.ID, p.Veth)
	}
	if hw, err := net.ParseMAC(p.MAC); err != nil || len(hw) != 6 || hw.String() != p.MAC {
		return fmt.Errorf("instance %s: mac %q is not a lowercase ethernet address", p.ID, p.MAC)
	}
	if a, err := netip.ParseAddr(p.IP); err != nil || !a.Is4() {
		return fmt.Errorf("instance %s: ip %q is not an IPv4 address", p.ID, p.IP)
	}
	if p.Group == "" {
		return fmt.Errorf("instance %s: no tenant group", p.ID)
	}
	return nil
}

// sync rewrites both tables for ports, in one transaction.
func (f *filter) sync(ctx context.Context, ports []port) error {
	for _, p := range ports {
		if err := p.check(); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rewrite(ctx, ports)
}

// rewrite does sync's work. Preconditions: f.mu held, ports checked.
func (f *filter) rewrite(ctx context.Context, ports []port) error {
	sortPorts(ports)
	var b strings.Builder
	for _, fam := range []string{"bridge", "inet"} {
		// add then delete: deletes the table whether or not it exists.
		fmt.Fprintf(&b, "add table %s %s\ndelete table %s %s\n", fam, f.table, fam, f.table)
	}
	f.writeBase(&b)
	groups := map[string]bool{}
	byID := map[string]port{}
	for _, p := range ports {
		if !groups[p.Group] {
			groups[p.Group] = true
			f.writeGroup(&b, p.Group)
		}
		f.writePort(&b, "add", p)
		byID[p.ID] = p
	}
	if err := nft(ctx, b.String()); err != nil {
		return fmt.Errorf("write the network's packet filter: %w", err)
	}
	f.ports, f.groups = byID, groups
	f.rewrites++
	return nil
}

// add lets p's frames through (and only those); adding a port that is
// there is a no-op. Should the change fail, the whole filter is
// rewritten with p.
func (f *filter) add(ctx context.Context, p port) error {
	if err := p.check(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	if f.groups[p.Group] {
		err = f.elements(p, false)
	} else {
		// A tenant's first instance: its chains and sets, then p.
		var b strings.Builder
		f.writeGroup(&b, p.Group)
		f.writePort(&b, "add", p)
		err = nft(ctx, b.String())
	}
	if err == nil {
		f.ports[p.ID], f.groups[p.Group] = p, true
		return nil
	}
	// Say the tables were flushed behind our back.
	f.log.Warn("adding to the packet filter failed; rewriting it", "id", p.ID, "err", err)
	ports := []port{p}
	for id, q := range f.ports {
		if id != p.ID {
			ports = append(ports, q)
		}
	}
	if rerr := f.rewrite(ctx, ports); rerr != nil {
		return fmt.Errorf("filter instance %s: %w", p.ID, errors.Join(err, rerr))
	}
	return nil
}

// remove deletes the elements of instance id; removing one that is not
// there is a no-op. The group's chains stay until the next sync. Should
// the change fail, the whole filter is rewritten without it.
func (f *filter) remove(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.ports[id]
	if !ok {
		return nil
	}
	err := f.elements(p, true)
	if err == nil {
		delete(f.ports, id)
		return nil
	}
	f.log.Warn("removing from the packet filter failed; rewriting it", "id", id, "err", err)
	var ports []port
	for other, q := range f.ports {
		if other != id {
			ports = append(ports, q)
		}
	}
	if rerr := f.rewrite(ctx, ports); rerr != nil {
		return fmt.Errorf("remove the filter of instance %s: %w", id, errors.Join(err, rerr))
	}
	return nil
}

// writeBase writes both tables with their chains, rules and empty sets.
func (f *filter) writeBase(b *strings.Builder) {
	br := "bridge " + f.table
	fmt.Fprintf(b, "add table %s\n", br)
	for _, s := range []string{
		"ports { type ifname; }",
		"port_mac { type ifname . ether_addr; }",
		"port_ip { type ifname . ipv4_addr; }",
	} {
		fmt.Fprintf(b, "add set %s %s\n", br, s)
	}
	fmt.Fprintf(b, "add map %s port_fwd { type ifname : verdict; }\n", br)
	fmt.Fprintf(b, "add map %s port_out { type ifname : verdict; }\n", br)
	chain := func(name, hook string, rules ...string) {
		fmt.Fprintf(b, "add chain %s %s { type filter hook %s priority -200; policy accept; }\n", br, name, hook)
		for _, r := range rules {
			fmt.Fprintf(b, "add rule %s %s %s\n", br, name, r)
		}
	}
	// Priority -200 runs before br_netfilter (0) hands frames to the IP
	// hooks.
	chain("prerouting", "prerouting",
		"iifname != @ports accept",
		"ether type != { ip, arp } drop",
		"iifname . ether saddr != @port_mac drop",
		"ether type ip iifname . ip saddr != @port_ip drop",
		"ether type arp arp htype != 1 drop",
		"ether type arp arp ptype != ip drop",
		"ether type arp arp hlen != 6 drop",
		"ether type arp arp plen != 4 drop",
		"ether type arp iifname . arp saddr ether != @port_mac drop",
		"ether type arp iifname . arp saddr ip != @port_ip drop",
	)
	chain("forward", "forward",
		"iifname vmap @port_fwd",
		"oifname @ports drop",
	)
	chain("output", "output", "oifname vmap @port_out")

	in := "inet " + f.table
	q := quote(f.bridge)
	fmt.Fprintf(b, "add table %s\n", in)
	// Before conntrack (-200) and NAT: a martian leaves no trace.
	fmt.Fprintf(b, "add chain %s prerouting { type filter hook prerouting priority -300; policy accept; }\n", in)
	fmt.Fprintf(b, "add rule %s prerouting iifname %s ip daddr 127.0.0.0/8 drop\n", in, q)
	fmt.Fprintf(b, "add rule %s prerouting iifname %s ip6 daddr ::1 drop\n", in, q)
	// Link-local is where clouds serve instance metadata and the node's
	// credentials (169.254.169.254): it is never routed for an instance.
	fmt.Fprintf(b, "add rule %s prerouting iifname %s ip daddr 169.254.0.0/16 drop\n", in, q)
	fmt.Fprintf(b, "add chain %s input { type filter hook input priority 0; policy accept; }\n", in)
	fmt.Fprintf(b, "add rule %s input iifname %s ct state established,related accept\n", in, q)
	fmt.Fprintf(b, "add rule %s input iifname %s drop\n", in, q)
}

// writeGroup writes a tenant group's sets and chains: tp_<g> holds its
// ports, tip_<g> its addresses; fwd_<g> lets frames out only to its ports,
// out_<g> lets routed IPv4 in only from its addresses, the gateway or
// outside the subnet.
func (f *filter) writeGroup(b *strings.Builder, group string) {
	br, g := "bridge "+f.table, groupID(group)
	fmt.Fprintf(b, "add set %s tp_%s { type ifname; }\n", br, g)
	fmt.Fprintf(b, "add set %s tip_%s { type ipv4_addr; }\n", br, g)
	for _, c := range [][]string{
		{"fwd_" + g, "oifname @tp_" + g + " accept", "drop"},
		{"out_" + g, "ether type != ip accept", "ip saddr != " + f.subnet.String() + " accept",
			"ip saddr " + f.gateway.String() + " accept", "ip saddr @tip_" + g + " accept", "drop"},
	} {
		fmt.Fprintf(b, "add chain %s %s\nflush chain %s %s\n", br, c[0], br, c[0])
		for _, r := range c[1:] {
			fmt.Fprintf(b, "add rule %s %s %s\n", br, c[0], r)
		}
	}
}

// writePort writes p's elements with verb add or delete, as elements
// does over netlink.
func (f *filter) writePort(b *strings.Builder, verb string, p port) {
	br, g, v := "bridge "+f.table, groupID(p.Group), quote(p.Veth)
	for _, e := range []string{
		"ports { " + v + " }",
		"port_mac { " + v + " . " + p.MAC + " }",
		"port_ip { " + v + " . " + p.IP + " }",
		"port_fwd { " + v + " : jump fwd_" + g + " }",
		"port_out { " + v + " : jump out_" + g + " }",
		"tp_" + g + " { " + v + " }",
		"tip_" + g + " { " + p.IP + " }",
	} {
		fmt.Fprintf(b, "%s element %s %s\n", verb, br, e)
	}
}

func quote(s string) string { return `"` + s + `"` }

// nft runs script as one transaction: all of it or nothing.
func nft(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// sortPorts orders ports by id, so a sync's script does not depend on the
// order of the state files.
func sortPorts(ports []port) {
	slices.SortFunc(ports, func(a, b port) int { return strings.Compare(a.ID, b.ID) })
}
