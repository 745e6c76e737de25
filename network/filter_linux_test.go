package network

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The attack tests of the packet filter (filter.go). Every "nothing
// arrives" is checked against a marker sent after the attack on a path
// that is allowed, so a test waits on the marker, not on a clock.

// blockedWait bounds a connection attempt that must fail: the filter drops
// silently, so failing means timing out.
const blockedWait = time.Second

// markerWait bounds the wait for a marker, which should arrive at once.
const markerWait = 5 * time.Second

type testInstance struct {
	id  string
	att Attachment
	ip  netip.Addr
	raw *rawSock
}

type filterEnv struct {
	t   *testing.T
	cfg Config
	m   *cniManager
	gw  netip.Addr
	ctx context.Context
}

func newFilterEnv(t *testing.T) *filterEnv {
	requireCNI(t)
	cfg := testConfig(t)
	m, err := NewCNI(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewCNI() error = %v", err)
	}
	return &filterEnv{t: t, cfg: cfg, m: m.(*cniManager), gw: netip.MustParsePrefix(cfg.Subnet).Addr().Next(), ctx: context.Background()}
}

func (e *filterEnv) setup(name, tenant string, ports []PortMapping) *testInstance {
	e.t.Helper()
	id := name + "-" + randHex(e.t, 3)
	att, err := e.m.Setup(e.ctx, id, tenant, ports)
	if err != nil {
		e.t.Fatalf("Setup(%s, tenant %s) error = %v", id, tenant, err)
	}
	return &testInstance{id: id, att: att, ip: netip.MustParseAddr(att.IP), raw: openRaw(e.t, att.NetNS)}
}

// gwMAC is the bridge's MAC now (it follows its ports until it is set).
func (e *filterEnv) gwMAC() net.HardwareAddr {
	e.t.Helper()
	ifc, err := net.InterfaceByName(e.cfg.BridgeName)
	if err != nil {
		e.t.Fatal(err)
	}
	return ifc.HardwareAddr
}

// dialFrom connects to addr from inside netns and reads the greeting.
func dialFrom(netns, addr string, timeout time.Duration) (string, error) {
	var got string
	err := inNetNS(netns, func() error {
		c, err := net.DialTimeout("tcp4", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		b := make([]byte, 64)
		n, err := c.Read(b)
		got = strings.TrimSpace(string(b[:n]))
		return err
	})
	return got, err
}

// hostListener answers with greeting on addr in the host's namespace.
func hostListener(t *testing.T, addr, greeting string) string {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	greet(t, l, greeting)
	return l.Addr().String()
}

// otherHostAddr gives the host an address of the test's own on a
// bridge with no ports: a host address that is neither the gateway nor
// loopback.
func otherHostAddr(t *testing.T) netip.Addr {
	t.Helper()
	addr := freeSubnet(t).Addr().Next()
	link := "cubeh" + randHex(t, 3)
	for _, args := range [][]string{
		{"link", "add", link, "type", "bridge"},
		{"addr", "add", addr.String() + "/32", "dev", link},
		{"link", "set", link, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", link).Run() })
	return addr
}

func portOf(addr string) uint16 {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

// TestFilterHostIsolation: an instance reaches no host address (loopback
// through the gateway with raw frames, the gateway, another host address),
// while the host still reaches its services and its published port.
func TestFilterHostIsolation(t *testing.T) {
	e := newFilterEnv(t)
	pub := freeHostPort(t)
	a1 := e.setup("a1", "tenant-a", []PortMapping{{HostPort: pub, ContainerPort: 8080}})
	a2 := e.setup("a2", "tenant-a", nil)
	serveGreeting(t, a1.att.NetNS, 8080, "a1")
	serveGreeting(t, a2.att.NetNS, 8080, "a2")

	other := otherHostAddr(t)
	loop := hostListener(t, "127.0.0.1:0", "host loopback")
	gw := hostListener(t, net.JoinHostPort(e.gw.String(), "0"), "host gateway")
	oth := hostListener(t, net.JoinHostPort(other.String(), "0"), "host other")

	// Positive controls: the host reaches its listeners and a1's
	// published port, on loopback and on the gateway address.
	for _, addr := range []string{loop, gw, oth} {
		if _, err := readGreeting(addr); err != nil {
			t.Fatalf("host cannot reach its own listener %s: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:" + strconv.Itoa(pub), net.JoinHostPort(e.gw.String(), strconv.Itoa(pub))} {
		if got, err := readGreeting(addr); err != nil || got != "a1" {
			t.Errorf("host: published port %s = %q, %v; want %q", addr, got, err, "a1")
		}
	}

	// An instance connects to no host listener.
	var wg sync.WaitGroup
	for _, addr := range []string{gw, oth} {
		wg.Go(func() {
			if got, err := dialFrom(a1.att.NetNS, addr, blockedWait); err == nil {
				t.Errorf("instance reached host listener %s (%q); want it dropped", addr, got)
			}
		})
	}
	wg.Wait()

	// CVE-2020-8558: a SYN to 127.0.0.1 sent to the gateway's MAC gets no
	// SYN-ACK. The same crafted SYN to a2, sent after it, does.
	gwMAC := e.gwMAC()
	a2MAC := a2.raw.mac
	a1.raw.send(t, tcpSYNFrame(a1.raw.mac, gwMAC, a1.ip, netip.MustParseAddr("127.0.0.1"), 40001, portOf(loop)))
	a1.raw.send(t, tcpSYNFrame(a1.raw.mac, a2MAC, a1.ip, a2.ip, 40002, 8080))
	leaked := false
	got := a1.raw.waitFor(markerWait,
		func(f frame) { leaked = leaked || f.isSYNACK(netip.MustParseAddr("127.0.0.1"), portOf(loop)) },
		func(f frame) bool { return f.isSYNACK(a2.ip, 8080) })
	if !got {
		t.Fatal("positive control: no SYN-ACK from a2 to a crafted SYN")
	}
	if leaked {
		t.Error("a SYN to 127.0.0.1 through the gateway got a SYN-ACK from the host; want it dropped")
	}

	// The published port is DNATed, so instances of the tenant reach it
	// through a host address, a1 itself included.
	for _, in := range []*testInstance{a1, a2} {
		addr := net.JoinHostPort(e.gw.String(), strconv.Itoa(pub))
		if got, err := dialFrom(in.att.NetNS, addr, markerWait); err != nil || got != "a1" {
			t.Errorf("%s: published port %s = %q, %v; want %q", in.id, addr, got, err, "a1")
		}
	}
}

// TestFilterTenantIsolation: instances of tenants A and B exchange no TCP,
// ICMP or ARP, directly or routed through the gateway or a published
// port; instances of one tenant do.
func TestFilterTenantIsolation(t *testing.T) {
	e := newFilterEnv(t)
	pub := freeHostPort(t)
	a1 := e.setup("a1", "tenant-a", []PortMapping{{HostPort: pub, ContainerPort: 8080}})
	a2 := e.setup("a2", "tenant-a", nil)
	b1 := e.setup("b1", "tenant-b", nil)
	b2 := e.setup("b2", "tenant-b", nil)
	for _, in := range []*testInstance{a1, b2} {
		serveGreeting(t, in.att.NetNS, 8080, in.id)
	}
	a1Addr := net.JoinHostPort(a1.att.IP, "8080")
	pubAddr := net.JoinHostPort(e.gw.String(), strconv.Itoa(pub))

	// TCP through the kernel: within A it works, from B it does not,
	// neither directly nor through A's published port.
	for _, addr := range []string{a1Addr, pubAddr} {
		if got, err := dialFrom(a2.att.NetNS, addr, markerWait); err != nil || got != a1.id {
			t.Errorf("a2 -> %s = %q, %v; want %q", addr, got, err, a1.id)
		}
	}
	var wg sync.WaitGroup
	for _, addr := range []string{a1Addr, pubAddr} {
		wg.Go(func() {
			if got, err := dialFrom(b1.att.NetNS, addr, blockedWait); err == nil {
				t.Errorf("b1 -> %s = %q; want no connection across tenants", addr, got)
			}
		})
	}
	wg.Wait()
	if got, err := dialFrom(b1.att.NetNS, net.JoinHostPort(b2.att.IP, "8080"), markerWait); err != nil || got != b2.id {
		t.Errorf("b1 -> b2 = %q, %v; want %q", got, err, b2.id)
	}

	// Raw frames straight to a1's MAC: ICMP echo and an ARP request get
	// no answer; the same to b2, sent after them, do.
	b1.raw.send(t, icmpEchoFrame(b1.raw.mac, a1.raw.mac, b1.ip, a1.ip, 7001))
	b1.raw.send(t, arpFrame(b1.raw.mac, broadcastMAC, 1, b1.raw.mac, b1.ip, make(net.HardwareAddr, 6), a1.ip))
	b1.raw.send(t, icmpEchoFrame(b1.raw.mac, b2.raw.mac, b1.ip, b2.ip, 7002))
	b1.raw.send(t, arpFrame(b1.raw.mac, broadcastMAC, 1, b1.raw.mac, b1.ip, make(net.HardwareAddr, 6), b2.ip))
	var pingA, arpA, pingB, arpB bool
	b1.raw.waitFor(markerWait, func(f frame) {
		switch {
		case f.ethertype == etherIPv4 && f.proto == unix.IPPROTO_ICMP && f.icmpType == 0 && f.ipSrc == a1.ip:
			pingA = true
		case f.ethertype == etherIPv4 && f.proto == unix.IPPROTO_ICMP && f.icmpType == 0 && f.ipSrc == b2.ip:
			pingB = true
		case f.ethertype == etherARP && f.arpOp == 2 && f.arpSenderIP == a1.ip:
			arpA = true
		case f.ethertype == etherARP && f.arpOp == 2 && f.arpSenderIP == b2.ip:
			arpB = true
		}
	}, func(frame) bool { return pingB && arpB })
	if !pingB || !arpB {
		t.Fatalf("positive control: b2 answered ping %v, arp %v; want both", pingB, arpB)
	}
	if pingA || arpA {
		t.Errorf("a1 answered b1: ping %v, arp %v; want neither", pingA, arpA)
	}

	// Routed through the gateway (L3 hairpin): a1 never sees b1's SYN,
	// while a2's marker, routed the same way after it, arrives.
	gwMAC := e.gwMAC()
	b1.raw.send(t, tcpSYNFrame(b1.raw.mac, gwMAC, b1.ip, a1.ip, 41001, 8080))
	a2.raw.send(t, udpFrame(a2.raw.mac, gwMAC, a2.ip, a1.ip, "routed-marker"))
	sawSYN := false
	got := a1.raw.waitFor(markerWait,
		func(f frame) { sawSYN = sawSYN || f.ethertype == etherIPv4 && f.ipSrc == b1.ip },
		func(f frame) bool { return bytes.Equal(f.payload, []byte("routed-marker")) })
	if !got {
		t.Fatal("positive control: a2's marker routed through the gateway did not reach a1")
	}
	if sawSYN {
		t.Error("b1's SYN routed through the gateway reached a1; want it dropped")
	}
}

// TestFilterAntiSpoofing: an instance's frames with a foreign source IP or
// MAC, forged ARP, IPv6 or a VLAN tag never reach a peer of its own
// tenant, while its plain frames do.
func TestFilterAntiSpoofing(t *testing.T) {
	e := newFilterEnv(t)
	peer := e.setup("peer", "tenant-a", nil)
	atk := e.setup("atk", "tenant-a", nil)
	other := e.setup("other", "tenant-b", nil)
	foreignMAC := mustMAC("02:00:de:ad:be:ef")
	zero := make(net.HardwareAddr, 6)
	pm, am := peer.raw.mac, atk.raw.mac

	vlan := make([]byte, 4)
	binary.BigEndian.PutUint16(vlan[0:2], 42)
	binary.BigEndian.PutUint16(vlan[2:4], etherIPv4)
	inner := udpFrame(am, pm, atk.ip, peer.ip, "spoof-vlan")[14:]

	attacks := []struct {
		name  string
		frame []byte
	}{
		{"foreign source ip", udpFrame(am, pm, other.ip, peer.ip, "spoof-ip")},
		{"foreign source mac", udpFrame(foreignMAC, pm, atk.ip, peer.ip, "spoof-mac")},
		{"arp reply claiming the gateway", arpFrame(am, pm, 2, am, e.gw, pm, peer.ip)},
		{"arp reply claiming another instance", arpFrame(am, pm, 2, am, other.ip, pm, peer.ip)},
		{"arp reply with a foreign sender mac", arpFrame(am, pm, 2, foreignMAC, atk.ip, pm, peer.ip)},
		{"gratuitous arp for the gateway", arpFrame(am, broadcastMAC, 1, am, e.gw, zero, e.gw)},
		{"ipv6", ether(pm, am, etherIPv6, make([]byte, 48))},
		{"vlan tag", ether(pm, am, etherVLAN, append(vlan, inner...))},
	}

	for _, a := range attacks {
		atk.raw.send(t, a.frame)
	}
	atk.raw.send(t, arpFrame(am, pm, 2, am, atk.ip, pm, peer.ip)) // its own, true ARP
	atk.raw.send(t, udpFrame(am, pm, atk.ip, peer.ip, "marker"))

	seen := map[string]bool{}
	got := peer.raw.waitFor(markerWait, func(f frame) {
		switch {
		case bytes.Equal(f.payload, []byte("spoof-ip")) || f.ipSrc == other.ip:
			seen["foreign source ip"] = true
		case bytes.Equal(f.src, foreignMAC) || bytes.Equal(f.payload, []byte("spoof-mac")):
			seen["foreign source mac"] = true
		case f.ethertype == etherARP && f.arpSenderIP == e.gw && bytes.Equal(f.arpSenderMAC, am):
			seen["arp reply claiming the gateway"] = true
		case f.ethertype == etherARP && f.arpSenderIP == other.ip:
			seen["arp reply claiming another instance"] = true
		case f.ethertype == etherARP && bytes.Equal(f.arpSenderMAC, foreignMAC):
			seen["arp reply with a foreign sender mac"] = true
		case f.ethertype == etherARP && f.arpSenderIP == atk.ip && bytes.Equal(f.arpSenderMAC, am):
			seen["true arp"] = true
		case bytes.Equal(f.src, am) && f.ethertype == etherIPv6:
			seen["ipv6"] = true
		case f.ethertype == etherVLAN || bytes.Equal(f.payload, []byte("spoof-vlan")):
			// The tag may arrive stripped (vlan offload): the payload tells.
			seen["vlan tag"] = true
		}
	}, func(f frame) bool { return bytes.Equal(f.payload, []byte("marker")) })
	if !got {
		t.Fatal("positive control: the attacker's plain marker frame did not reach its peer")
	}
	if !seen["true arp"] {
		t.Error("positive control: the attacker's true ARP reply did not reach its peer")
	}
	delete(seen, "true arp")
	for what := range seen {
		t.Errorf("peer received the attacker's %s; want it dropped", what)
	}
}

func (e *filterEnv) ruleset() string {
	e.t.Helper()
	out, err := exec.Command("nft", "list", "table", "bridge", filterTable(e.cfg.BridgeName)).CombinedOutput()
	if err != nil {
		e.t.Fatalf("nft list table: %v: %s", err, out)
	}
	return string(out)
}

// TestFilterFollowsAttachments: Attach adds an instance's elements once,
// Teardown removes them, and a new manager re-makes those of attached
// instances and drops the rest.
func TestFilterFollowsAttachments(t *testing.T) {
	e := newFilterEnv(t)
	x := e.setup("x", "tenant-a", nil)
	y := e.setup("y", "tenant-b", nil)
	stX, _, _ := e.m.states.get(x.id)
	stY, _, _ := e.m.states.get(y.id)
	if stX.HostVeth == "" || stX.MAC != x.raw.mac.String() || stX.Tenant != "tenant-a" {
		t.Fatalf("state of %s = %+v; want its host veth, mac %s and tenant-a", x.id, stX, x.raw.mac)
	}
	has := func(rules string, st instanceState) bool {
		return strings.Contains(rules, `"`+st.HostVeth+`"`) || strings.Contains(rules, st.IP+" ") || strings.Contains(rules, st.IP+"\n")
	}
	before := e.ruleset()
	if !has(before, stX) || !has(before, stY) {
		t.Fatalf("ruleset lacks x or y:\n%s", before)
	}
	if n := e.m.filter.rewrites; n != 1 {
		t.Errorf("filter rewritten %d times after NewCNI and two Setups; want once (changes are incremental)", n)
	}
	if again, err := e.m.Attach(e.ctx, x.id); err != nil || !reflect.DeepEqual(again, x.att) {
		t.Fatalf("second Attach(%s) = %+v, %v; want %+v", x.id, again, err, x.att)
	}
	if after := e.ruleset(); after != before {
		t.Errorf("second Attach changed the ruleset:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// A port left in the filter by a crash (no state file) and a state
	// whose veth vanished with its namespace.
	ghost := port{ID: "ghost", Veth: "vethdead0001", MAC: "02:00:00:00:0d:01", IP: "10.255.255.7", Group: tenantGroup("tenant-a", "")}
	if err := e.m.filter.add(e.ctx, ghost); err != nil {
		t.Fatal(err)
	}
	vanished := instanceState{ID: "vanished-" + randHex(t, 3), NetNS: "/nonexistent", Tenant: "tenant-b", Chain: chainBridge,
		IP: "10.255.255.8", Ready: true, HostVeth: "vethdead0002", MAC: "02:00:00:00:0d:02"}
	if err := e.m.states.put(vanished); err != nil {
		t.Fatal(err)
	}
	// The rules are lost too, as after `nft flush ruleset`.
	for _, fam := range []string{"bridge", "inet"} {
		if out, err := exec.Command("nft", "delete", "table", fam, filterTable(e.cfg.BridgeName)).CombinedOutput(); err != nil {
			t.Fatalf("nft delete table %s: %v: %s", fam, err, out)
		}
	}
	m2, err := NewCNI(e.cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewCNI() after the rules were lost: %v", err)
	}
	e.m = m2.(*cniManager)
	rules := e.ruleset()
	if !has(rules, stX) || !has(rules, stY) || !has(rules, vanished) {
		t.Errorf("restarted manager's ruleset lacks x, y or the vanished instance (until its Teardown):\n%s", rules)
	}
	if strings.Contains(rules, ghost.Veth) {
		t.Errorf("restarted manager's ruleset keeps a port without a state:\n%s", rules)
	}
	// The filter works again: y (tenant B) does not reach x.
	serveGreeting(t, x.att.NetNS, 8080, "x")
	if _, err := dialFrom(y.att.NetNS, net.JoinHostPort(x.att.IP, "8080"), blockedWait); err == nil {
		t.Error("after the restart, y (tenant-b) reached x (tenant-a)")
	}

	// Tables flushed behind the manager's back: the next Attach notices
	// and rewrites them whole.
	if out, err := exec.Command("nft", "delete", "table", "bridge", filterTable(e.cfg.BridgeName)).CombinedOutput(); err != nil {
		t.Fatalf("nft delete table: %v: %s", err, out)
	}
	z := e.setup("z", "tenant-a", nil)
	stZ, _, _ := e.m.states.get(z.id)
	if rules := e.ruleset(); !has(rules, stX) || !has(rules, stZ) || e.m.filter.rewrites != 2 {
		t.Errorf("after the tables were lost, Setup(%s) rewrote the filter %d times in all; want 2, with x and z:\n%s", z.id, e.m.filter.rewrites, rules)
	}

	for _, st := range []instanceState{stX, stY, stZ, vanished} {
		if err := e.m.Teardown(e.ctx, st.ID); err != nil {
			t.Fatalf("Teardown(%s) error = %v", st.ID, err)
		}
		if rules := e.ruleset(); has(rules, st) {
			t.Errorf("ruleset after Teardown(%s) still has it:\n%s", st.ID, rules)
		}
		if err := e.m.Teardown(e.ctx, st.ID); err != nil {
			t.Errorf("second Teardown(%s) error = %v", st.ID, err)
		}
	}
	if n := e.m.filter.rewrites; n != 2 {
		t.Errorf("restarted manager rewrote the filter %d times in all; want 2 (its start, the lost tables), none for Teardowns", n)
	}
	if _, err := os.Stat(x.att.NetNS); !os.IsNotExist(err) {
		t.Errorf("netns of x after Teardown: %v", err)
	}
}

// TestFilterAdoptsLegacyAttachments: an attachment made before the filter
// (its state has no tenant, veth or mac) gets its filter from libcni's
// cache when the manager starts, isolated from every other instance.
func TestFilterAdoptsLegacyAttachments(t *testing.T) {
	e := newFilterEnv(t)
	old := e.setup("old", "tenant-a", nil)
	peer := e.setup("peer", "tenant-a", nil)
	serveGreeting(t, old.att.NetNS, 8080, "old")
	st, _, _ := e.m.states.get(old.id)
	veth, mac := st.HostVeth, st.MAC
	st.Tenant, st.HostVeth, st.MAC = "", "", ""
	if err := e.m.states.put(st); err != nil {
		t.Fatal(err)
	}
	m2, err := NewCNI(e.cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewCNI() with a legacy state: %v", err)
	}
	e.m = m2.(*cniManager)
	st, _, _ = e.m.states.get(old.id)
	if st.HostVeth != veth || st.MAC != mac {
		t.Errorf("adopted state veth, mac = %q, %q; want %q, %q from the cni cache", st.HostVeth, st.MAC, veth, mac)
	}
	if rules := e.ruleset(); !strings.Contains(rules, `"`+veth+`"`) {
		t.Errorf("ruleset lacks the adopted attachment's veth %s:\n%s", veth, rules)
	}
	// Its tenant is unknown: even a former neighbour is cut off, while the
	// host still reaches it.
	if got, err := readGreeting(net.JoinHostPort(old.att.IP, "8080")); err != nil || got != "old" {
		t.Errorf("host -> adopted instance = %q, %v; want %q", got, err, "old")
	}
	if _, err := dialFrom(peer.att.NetNS, net.JoinHostPort(old.att.IP, "8080"), blockedWait); err == nil {
		t.Error("an instance reached an adopted attachment without a tenant; want it isolated")
	}
}
