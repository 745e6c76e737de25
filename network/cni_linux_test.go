package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"golang.org/x/sys/unix"
)

const dialTimeout = 5 * time.Second

// freeHostPort returns a TCP port nothing on the host listens on now.
func freeHostPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serveGreeting listens on port inside the namespace at netns and answers
// every connection with greeting. The server stops in t.Cleanup.
func serveGreeting(t *testing.T, netns string, port int, greeting string) {
	t.Helper()
	var l net.Listener
	err := inNetNS(netns, func() (err error) {
		l, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", netns, err)
	}
	greet(t, l, greeting)
}

// greet answers every connection to l with greeting until t's cleanup.
func greet(t *testing.T, l net.Listener, greeting string) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(greeting + "\n"))
			c.Close()
		}
	})
	t.Cleanup(func() { l.Close(); wg.Wait() })
}

// readGreeting dials addr and returns the first line it sends.
func readGreeting(addr string) (string, error) {
	c, err := net.DialTimeout("tcp4", addr, dialTimeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(dialTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// assertNoTrace checks that nothing of an instance is left on the host:
// pin, state file, host-local reservation, iptables rules.
func assertNoTrace(t *testing.T, cfg Config, id string, att Attachment) {
	t.Helper()
	if _, err := os.Lstat(att.NetNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns pin %s after Teardown: Lstat error = %v; want not exist", att.NetNS, err)
	}
	if isPinnedNetNS(att.NetNS) {
		t.Errorf("netns %s still mounted after Teardown", att.NetNS)
	}
	if _, err := os.Lstat(filepath.Join(cfg.StateDir, "instances", id+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file of %s after Teardown: Lstat error = %v; want not exist", id, err)
	}
	if att.IP != "" {
		ipFile := filepath.Join(cfg.StateDir, "ipam", cfg.NetworkName, att.IP)
		if _, err := os.Lstat(ipFile); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("host-local reservation %s after Teardown: Lstat error = %v; want not exist", ipFile, err)
		}
	}
	rules := iptablesSave(t)
	if strings.Contains(rules, id) {
		t.Errorf("iptables rules mention id %s after Teardown:\n%s", id, grepLines(rules, id))
	}
	if att.IP != "" {
		ipRE := regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(att.IP) + `([^0-9]|$)`)
		if ipRE.MatchString(rules) {
			t.Errorf("iptables rules mention ip %s after Teardown:\n%s", att.IP, grepLines(rules, att.IP))
		}
		// The packet filter's elements are gone too (its table may not
		// exist: a test's cleanup runs after).
		out, _ := exec.Command("nft", "list", "table", "bridge", filterTable(cfg.BridgeName)).Output()
		if filter := string(out); ipRE.MatchString(filter) {
			t.Errorf("packet filter mentions ip %s after Teardown:\n%s", att.IP, grepLines(filter, att.IP))
		}
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestCNILifecycle(t *testing.T) {
	requireCNI(t)
	cfg := testConfig(t)
	ctx := context.Background()
	m, err := NewCNI(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewCNI() error = %v", err)
	}
	subnet := netip.MustParsePrefix(cfg.Subnet)

	idA, idB := "inst-a-"+randHex(t, 4), "inst-b-"+randHex(t, 4)
	anyPort, localPort := freeHostPort(t), freeHostPort(t)
	portsA := []PortMapping{
		{HostPort: anyPort, ContainerPort: 8080},
		{HostPort: localPort, ContainerPort: 8080, HostIP: "127.0.0.1"},
	}
	a, err := m.Setup(ctx, idA, testTenant, portsA)
	if err != nil {
		t.Fatalf("Setup(%s) error = %v", idA, err)
	}
	b, err := m.Setup(ctx, idB, testTenant, nil)
	if err != nil {
		t.Fatalf("Setup(%s) error = %v", idB, err)
	}
	t.Logf("a = %+v, b = %+v", a, b)

	// Addresses: distinct, in the subnet, namespaces pinned where promised;
	// the interface as CNI made it, for a VM guest to repeat.
	for _, att := range []Attachment{a, b} {
		if att.Interface != "eth0" || att.PrefixLen != subnet.Bits() || att.Gateway != subnet.Addr().Next().String() {
			t.Errorf("attachment interface %q prefix %d gateway %q; want eth0, %d, %s", att.Interface, att.PrefixLen, att.Gateway, subnet.Bits(), subnet.Addr().Next())
		}
		if hw, err := net.ParseMAC(att.MAC); err != nil || len(hw) != 6 {
			t.Errorf("attachment MAC %q: want a hardware address (%v)", att.MAC, err)
		}
		if !slices.ContainsFunc(att.Routes, func(r Route) bool { return r.Dst == "0.0.0.0/0" }) {
			t.Errorf("attachment routes %v; want the default route host-local set", att.Routes)
		}
		ip, err := netip.ParseAddr(att.IP)
		if err != nil || !subnet.Contains(ip) {
			t.Errorf("attachment IP %q is not in subnet %s", att.IP, subnet)
		}
		if !isPinnedNetNS(att.NetNS) || filepath.Dir(att.NetNS) != cfg.NetNSDir {
			t.Errorf("attachment netns %q is not a pinned namespace in %s", att.NetNS, cfg.NetNSDir)
		}
	}
	if a.IP == b.IP {
		t.Errorf("Setup gave both instances IP %s; want distinct", a.IP)
	}

	// Setup is idempotent.
	again, err := m.Setup(ctx, idA, testTenant, portsA)
	if err != nil || !reflect.DeepEqual(again, a) {
		t.Errorf("second Setup(%s) = %+v, %v; want %+v, nil", idA, again, err, a)
	}

	// A host port held by A is refused for another instance.
	_, err = m.Setup(ctx, "inst-c-"+randHex(t, 4), testTenant, []PortMapping{{HostPort: anyPort, ContainerPort: 80, HostIP: "127.0.0.1"}})
	if !errors.Is(err, ErrPortInUse) || !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Setup with A's host port %d error = %v; want ErrPortInUse and errdefs.ErrConflict", anyPort, err)
	}
	if ids, _ := m.List(ctx); !slices.Equal(ids, []string{idA, idB}) {
		t.Errorf("List() after refused Setup = %v; want [%s %s]", ids, idA, idB)
	}

	serveGreeting(t, a.NetNS, 8080, "hello from a")

	// lo is up inside the namespace.
	err = inNetNS(a.NetNS, func() error {
		got, err := readGreeting("127.0.0.1:8080")
		if err == nil && got != "hello from a" {
			t.Errorf("greeting on a's loopback = %q; want %q", got, "hello from a")
		}
		return err
	})
	if err != nil {
		t.Errorf("dial 127.0.0.1:8080 inside a: %v", err)
	}

	// Instance B reaches instance A by IP.
	err = inNetNS(b.NetNS, func() error {
		got, err := readGreeting(net.JoinHostPort(a.IP, "8080"))
		if err == nil && got != "hello from a" {
			t.Errorf("greeting from b = %q; want %q", got, "hello from a")
		}
		return err
	})
	if err != nil {
		t.Errorf("dial a (%s:8080) from b: %v", a.IP, err)
	}

	// The host reaches A through both published ports on 127.0.0.1.
	for _, port := range []int{anyPort, localPort} {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if got, err := readGreeting(addr); err != nil || got != "hello from a" {
			t.Errorf("readGreeting(%s) from host = %q, %v; want %q", addr, got, err, "hello from a")
		}
	}

	// Teardown removes everything and is idempotent.
	for _, tc := range []struct {
		id  string
		att Attachment
	}{{idA, a}, {idB, b}} {
		if err := m.Teardown(ctx, tc.id); err != nil {
			t.Fatalf("Teardown(%s) error = %v", tc.id, err)
		}
		assertNoTrace(t, cfg, tc.id, tc.att)
		if err := m.Teardown(ctx, tc.id); err != nil {
			t.Errorf("second Teardown(%s) error = %v; want nil", tc.id, err)
		}
	}
	if ids, err := m.List(ctx); err != nil || len(ids) != 0 {
		t.Errorf("List() after Teardown = %v, %v; want [], nil", ids, err)
	}
	if err := m.Teardown(ctx, "never-set-up"); err != nil {
		t.Errorf("Teardown(unknown id) error = %v; want nil", err)
	}

	// The published port is free again.
	if _, err := m.Setup(ctx, "inst-d-"+randHex(t, 4), testTenant, []PortMapping{{HostPort: anyPort, ContainerPort: 80}}); err != nil {
		t.Errorf("Setup with a torn-down instance's host port error = %v; want nil", err)
	}
}

func TestCNIRestartRecovery(t *testing.T) {
	requireCNI(t)
	cfg := testConfig(t)
	ctx := context.Background()
	old, err := NewCNI(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewCNI() error = %v", err)
	}
	port := freeHostPort(t)
	ids := []string{"r-1-" + randHex(t, 4), "r-2-" + randHex(t, 4)}
	slices.Sort(ids)
	atts := map[string]Attachment{}
	for i, id := range ids {
		var ports []PortMapping
		if i == 0 {
			ports = []PortMapping{{HostPort: port, ContainerPort: 80}}
		}
		if atts[id], err = old.Setup(ctx, id, testTenant, ports); err != nil {
			t.Fatalf("Setup(%s) error = %v", id, err)
		}
	}

	// A new manager, as after a node agent restart, sees the same world.
	m, err := NewCNI(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("second NewCNI() error = %v", err)
	}
	got, err := m.List(ctx)
	if err != nil || !slices.Equal(got, ids) {
		t.Fatalf("List() on restarted manager = %v, %v; want %v", got, err, ids)
	}
	if att, err := m.Setup(ctx, ids[0], testTenant, []PortMapping{{HostPort: port, ContainerPort: 80}}); err != nil || !reflect.DeepEqual(att, atts[ids[0]]) {
		t.Errorf("Setup(%s) on restarted manager = %+v, %v; want %+v", ids[0], att, err, atts[ids[0]])
	}
	if _, err := m.Setup(ctx, "r-3-"+randHex(t, 4), testTenant, []PortMapping{{HostPort: port, ContainerPort: 80}}); !errors.Is(err, ErrPortInUse) {
		t.Errorf("Setup with a port published before the restart error = %v; want ErrPortInUse", err)
	}
	for _, id := range ids {
		if err := m.Teardown(ctx, id); err != nil {
			t.Fatalf("Teardown(%s) on restarted manager error = %v", id, err)
		}
		assertNoTrace(t, cfg, id, atts[id])
	}
}

// TestCNISetupRollback makes the last plugin fail with a fake portmap
// (a shell script, since a real portmap cannot be told to fail) and checks
// that Setup leaves nothing behind.
func TestCNISetupRollback(t *testing.T) {
	requireCNI(t)
	cfg := testConfig(t)
	fakeDir := t.TempDir()
	fake := `#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.0.0","code":100,"msg":"fake portmap refuses ADD"}'; exit 1;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}';;
esac
`
	if err := os.WriteFile(filepath.Join(fakeDir, "portmap"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.PluginDirs = append([]string{fakeDir}, cfg.PluginDirs...)
	m, err := NewCNI(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewCNI() error = %v", err)
	}
	id := "rollback-" + randHex(t, 4)
	_, err = m.Setup(context.Background(), id, testTenant, []PortMapping{{HostPort: freeHostPort(t), ContainerPort: 80}})
	if err == nil || !strings.Contains(err.Error(), "fake portmap refuses ADD") {
		t.Fatalf("Setup() error = %v; want the fake portmap's error", err)
	}
	if ids, err := m.List(context.Background()); err != nil || len(ids) != 0 {
		t.Errorf("List() after failed Setup = %v, %v; want []", ids, err)
	}
	assertNoTrace(t, cfg, id, Attachment{NetNS: filepath.Join(cfg.NetNSDir, id)})
	ipam, _ := os.ReadDir(filepath.Join(cfg.StateDir, "ipam", cfg.NetworkName))
	for _, e := range ipam {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			t.Errorf("host-local still reserves %s after failed Setup", e.Name())
		}
	}
}

func TestNewCNIRefuses(t *testing.T) {
	requireCNI(t)
	// A route of the test's own, on a bridge of its own: the host's routes vary,
	// and ones through a cube bridge (a parallel e2e run) are allowed.
	routed := freeSubnet(t)
	bridge := "cubed" + randHex(t, 3)
	for _, args := range [][]string{
		{"link", "add", bridge, "type", "bridge"},
		{"addr", "add", routed.Addr().Next().String() + "/24", "dev", bridge},
		{"link", "set", bridge, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })

	tests := []struct {
		name    string
		modify  func(*Config)
		wantErr string
	}{
		{"missing plugins", func(c *Config) { c.PluginDirs = []string{"/nonexistent/cni"} },
			`cni plugin "bridge" not found in /nonexistent/cni: install containernetworking-plugins`},
		{"invalid config", func(c *Config) { c.Subnet = "10.0.0.0" }, "invalid network config"},
		{"subnet on a host route", func(c *Config) { c.Subnet = routed.String() },
			"overlaps host route " + routed.String() + " on " + bridge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.StateDir = t.TempDir()
			cfg.NetNSDir = filepath.Join(cfg.StateDir, "netns")
			tt.modify(&cfg)
			_, err := NewCNI(cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NewCNI() error = %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestNetworkMasqueradeIsMadeOnce: a second manager on the same network
// (a restart), and one with a new subnet, leave exactly one jump to the
// network's chain, for the subnet in force.
func TestNetworkMasqueradeIsMadeOnce(t *testing.T) {
	requireCNI(t)
	cfg := testConfig(t)
	chain, _ := networkMasqNames(cfg.NetworkName)
	jumps := func() []string {
		var out []string
		for _, l := range strings.Split(iptablesSave(t), "\n") {
			if strings.HasPrefix(l, "-A POSTROUTING ") && strings.HasSuffix(l, "-j "+chain) {
				out = append(out, l)
			}
		}
		return out
	}
	for range 2 {
		if _, err := NewCNI(cfg, testLogger(t)); err != nil {
			t.Fatalf("NewCNI() error = %v", err)
		}
	}
	if j := jumps(); len(j) != 1 || !strings.Contains(j[0], "-s "+cfg.Subnet+" ") {
		t.Errorf("jumps to %s after two starts: %q; want one for %s", chain, j, cfg.Subnet)
	}
	cfg.Subnet = freeSubnet(t).String()
	if _, err := NewCNI(cfg, testLogger(t)); err != nil {
		t.Fatalf("NewCNI() with a new subnet error = %v", err)
	}
	if j := jumps(); len(j) != 1 || !strings.Contains(j[0], "-s "+cfg.Subnet+" ") {
		t.Errorf("jumps to %s after the subnet changed: %q; want one for %s", chain, j, cfg.Subnet)
	}
	if rules := iptablesSave(t); !strings.Contains(rules, "-A "+chain+" -d "+cfg.Subnet+" -j RETURN") {
		t.Errorf("chain %s does not exempt the new subnet:\n%s", chain, grepLines(rules, chain))
	}
}

func TestSetupRejectsBadID(t *testing.T) {
	requireCNI(t)
	m, err := NewCNI(testConfig(t), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "../etc", "a/b", ".hidden", strings.Repeat("x", 129)} {
		if _, err := m.Setup(context.Background(), id, testTenant, nil); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Setup(%q) error = %v; want errdefs.ErrInvalid", id, err)
		}
		if err := m.Teardown(context.Background(), id); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("Teardown(%q) error = %v; want errdefs.ErrInvalid", id, err)
		}
	}
	if _, err := m.Setup(context.Background(), "no-tenant", "", nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Setup without a tenant error = %v; want errdefs.ErrInvalid", err)
	}
	if _, err := m.Pin(context.Background(), "no-tenant", "", nil); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("Pin without a tenant error = %v; want errdefs.ErrInvalid", err)
	}
}

// TestCNIConcurrentSetup races Setups: of one id (all must get the same
// attachment) and of different ids wanting one host port (one must win).
func TestCNIConcurrentSetup(t *testing.T) {
	requireCNI(t)
	cfg := testConfig(t)
	ctx := context.Background()
	m, err := NewCNI(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewCNI() error = %v", err)
	}
	const n = 3
	same := "same-" + randHex(t, 4)
	port := freeHostPort(t)
	var (
		wg      sync.WaitGroup
		sameAtt [n]Attachment
		sameErr [n]error
		portErr [n]error
	)
	for i := range n {
		wg.Go(func() { sameAtt[i], sameErr[i] = m.Setup(ctx, same, testTenant, nil) })
		wg.Go(func() {
			_, portErr[i] = m.Setup(ctx, "port-"+strconv.Itoa(i)+"-"+randHex(t, 4), testTenant, []PortMapping{{HostPort: port, ContainerPort: 80}})
		})
	}
	wg.Wait()
	for i := range n {
		if sameErr[i] != nil || !reflect.DeepEqual(sameAtt[i], sameAtt[0]) {
			t.Errorf("concurrent Setup(%s) #%d = %+v, %v; want %+v, nil", same, i, sameAtt[i], sameErr[i], sameAtt[0])
		}
	}
	wins := 0
	for i, err := range portErr {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrPortInUse):
			t.Errorf("concurrent Setup #%d for host port %d error = %v; want nil or ErrPortInUse", i, port, err)
		}
	}
	if wins != 1 {
		t.Errorf("%d concurrent Setups for host port %d succeeded; want exactly 1", wins, port)
	}
}

// TestCNISetupRepairsLostNetNS unmounts a pin behind the manager's back (as
// a reboot does) and checks that Setup builds a working attachment again
// and Teardown still cleans up.
func TestCNISetupRepairsLostNetNS(t *testing.T) {
	requireCNI(t)
	cfg := testConfig(t)
	ctx := context.Background()
	m, err := NewCNI(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewCNI() error = %v", err)
	}
	id := "lost-" + randHex(t, 4)
	first, err := m.Setup(ctx, id, testTenant, nil)
	if err != nil {
		t.Fatalf("Setup(%s) error = %v", id, err)
	}
	if err := unix.Unmount(first.NetNS, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	again, err := m.Setup(ctx, id, testTenant, nil)
	if err != nil {
		t.Fatalf("Setup(%s) after its netns vanished error = %v", id, err)
	}
	if !isPinnedNetNS(again.NetNS) || !netip.MustParsePrefix(cfg.Subnet).Contains(netip.MustParseAddr(again.IP)) {
		t.Errorf("Setup(%s) after its netns vanished = %+v; want a pinned netns and an IP in %s", id, again, cfg.Subnet)
	}
	serveGreeting(t, again.NetNS, 8080, "back")
	if got, err := readGreeting(net.JoinHostPort(again.IP, "8080")); err != nil || got != "back" {
		t.Errorf("readGreeting(%s:8080) from host = %q, %v; want %q", again.IP, got, err, "back")
	}
	if err := m.Teardown(ctx, id); err != nil {
		t.Fatalf("Teardown(%s) error = %v", id, err)
	}
	assertNoTrace(t, cfg, id, again)
}

// TestCNIPinThenAttach drives the two steps separately: a pinned namespace
// has only lo until Attach; both steps are idempotent; a new manager (after
// a node agent restart) attaches what an old one pinned; Teardown cleans up
// after either step.
func TestCNIPinThenAttach(t *testing.T) {
	requireCNI(t)
	cfg := testConfig(t)
	ctx := context.Background()
	m, err := NewCNI(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewCNI() error = %v", err)
	}
	interfaces := func(netns string) []string {
		t.Helper()
		var names []string
		err := inNetNS(netns, func() error {
			ifs, err := net.Interfaces()
			for _, i := range ifs {
				names = append(names, i.Name)
			}
			return err
		})
		if err != nil {
			t.Fatalf("list interfaces in %s: %v", netns, err)
		}
		slices.Sort(names)
		return names
	}

	if _, err := m.Attach(ctx, "never-pinned"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Attach(never pinned) error = %v; want errdefs.ErrNotFound", err)
	}

	id := "pin-" + randHex(t, 4)
	netns, err := m.Pin(ctx, id, testTenant, nil)
	if err != nil {
		t.Fatalf("Pin(%s) error = %v", id, err)
	}
	if !isPinnedNetNS(netns) || filepath.Dir(netns) != cfg.NetNSDir {
		t.Fatalf("Pin(%s) = %q; want a pinned namespace in %s", id, netns, cfg.NetNSDir)
	}
	if got := interfaces(netns); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("interfaces of a pinned, unattached namespace = %v; want [lo]", got)
	}
	if again, err := m.Pin(ctx, id, testTenant, nil); err != nil || again != netns {
		t.Errorf("second Pin(%s) = %q, %v; want %q, nil", id, again, err, netns)
	}
	att, err := m.Attach(ctx, id)
	if err != nil {
		t.Fatalf("Attach(%s) error = %v", id, err)
	}
	if att.NetNS != netns || !netip.MustParsePrefix(cfg.Subnet).Contains(netip.MustParseAddr(att.IP)) {
		t.Errorf("Attach(%s) = %+v; want netns %s and an IP in %s", id, att, netns, cfg.Subnet)
	}
	if got := interfaces(netns); !slices.Equal(got, []string{ifName, "lo"}) {
		t.Errorf("interfaces after Attach = %v; want [%s lo]", got, ifName)
	}
	if again, err := m.Attach(ctx, id); err != nil || !reflect.DeepEqual(again, att) {
		t.Errorf("second Attach(%s) = %+v, %v; want %+v, nil", id, again, err, att)
	}
	serveGreeting(t, netns, 8080, "attached")
	if got, err := readGreeting(net.JoinHostPort(att.IP, "8080")); err != nil || got != "attached" {
		t.Errorf("readGreeting(%s:8080) from host = %q, %v; want %q", att.IP, got, err, "attached")
	}
	if err := m.Teardown(ctx, id); err != nil {
		t.Fatalf("Teardown(%s) error = %v", id, err)
	}
	assertNoTrace(t, cfg, id, att)

	// Pinned only, then torn down.
	only := "pin-only-" + randHex(t, 4)
	onlyNS, err := m.Pin(ctx, only, testTenant, []PortMapping{{HostPort: freeHostPort(t), ContainerPort: 80}})
	if err != nil {
		t.Fatalf("Pin(%s) error = %v", only, err)
	}
	if err := m.Teardown(ctx, only); err != nil {
		t.Fatalf("Teardown(%s) after Pin alone error = %v", only, err)
	}
	assertNoTrace(t, cfg, only, Attachment{NetNS: onlyNS})

	// Pinned by one manager, attached by the next one.
	moved := "pin-moved-" + randHex(t, 4)
	port := freeHostPort(t)
	movedNS, err := m.Pin(ctx, moved, testTenant, []PortMapping{{HostPort: port, ContainerPort: 8080}})
	if err != nil {
		t.Fatalf("Pin(%s) error = %v", moved, err)
	}
	next, err := NewCNI(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("second NewCNI() error = %v", err)
	}
	movedAtt, err := next.Attach(ctx, moved)
	if err != nil || movedAtt.NetNS != movedNS {
		t.Fatalf("Attach(%s) on a new manager = %+v, %v; want netns %s", moved, movedAtt, err, movedNS)
	}
	serveGreeting(t, movedNS, 8080, "moved")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if got, err := readGreeting(addr); err != nil || got != "moved" {
		t.Errorf("readGreeting(%s) through the published port = %q, %v; want %q", addr, got, err, "moved")
	}
	if err := next.Teardown(ctx, moved); err != nil {
		t.Fatalf("Teardown(%s) error = %v", moved, err)
	}
	assertNoTrace(t, cfg, moved, movedAtt)
}

// TestCNIChainFollowsPorts checks that an instance without published ports
// is attached without portmap, that the network's masquerade rules cover
// every attachment without rules of its own, and that attachments made the
// old ways (bridge's own ipMasq, then portmap; or the manager's rules per
// instance) are still torn down without a trace.
func TestCNIChainFollowsPorts(t *testing.T) {
	requireCNI(t)
	cfg := testConfig(t)
	ctx := context.Background()
	mgr, err := NewCNI(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("NewCNI() error = %v", err)
	}
	m := mgr.(*cniManager)
	bare, err := m.Setup(ctx, "bare-"+randHex(t, 4), testTenant, nil)
	if err != nil {
		t.Fatal(err)
	}
	published, err := m.Setup(ctx, "pub-"+randHex(t, 4), testTenant, []PortMapping{{HostPort: freeHostPort(t), ContainerPort: 80}})
	if err != nil {
		t.Fatal(err)
	}

	// The old way, as a state file written before Chain existed says.
	legacyID := "legacy-" + randHex(t, 4)
	legacySt := instanceState{ID: legacyID, NetNS: filepath.Join(cfg.NetNSDir, legacyID), Ports: []PortMapping{{HostPort: freeHostPort(t), ContainerPort: 80, Protocol: "tcp"}}}
	if err := m.reserve(legacySt); err != nil {
		t.Fatal(err)
	}
	if err := pinNetNS(legacySt.NetNS); err != nil {
		t.Fatal(err)
	}
	res, err := m.add(ctx, legacySt)
	if err != nil {
		t.Fatalf("ADD with the legacy chain: %v", err)
	}
	legacySt.IP = res.ip
	legacySt.Ready = true
	if err := m.states.put(legacySt); err != nil {
		t.Fatal(err)
	}
	legacy := legacySt.attachment()

	// The manager's own rules per instance, as the version before the
	// network's rules made them.
	perInstance, err := m.Setup(ctx, "masq-"+randHex(t, 4), testTenant, nil)
	if err != nil {
		t.Fatal(err)
	}
	piID := filepath.Base(perInstance.NetNS)
	piSt, _, _ := m.states.get(piID)
	piSt.Masq = true
	if err := m.states.put(piSt); err != nil {
		t.Fatal(err)
	}
	chain, comment := masqNames(cfg.NetworkName, piID)
	c := strconv.Quote(comment)
	if err := iptablesRestore(ctx, fmt.Sprintf("*nat\n:%s - [0:0]\n-A %s -d %s -m comment --comment %s -j ACCEPT\n-A %s ! -d %s -m comment --comment %s -j MASQUERADE\n-A POSTROUTING -s %s/32 -m comment --comment %s -j %s\nCOMMIT\n",
		chain, chain, cfg.Subnet, c, chain, multicastNet, c, perInstance.IP, c, chain)); err != nil {
		t.Fatal(err)
	}

	netChain, _ := networkMasqNames(cfg.NetworkName)
	rules := iptablesSave(t)
	for _, want := range []string{"-A POSTROUTING -s " + cfg.Subnet + " ", "-j " + netChain, "-A " + netChain + " -d " + cfg.Subnet + " -j RETURN",
		"-A " + netChain + " -d 224.0.0.0/4 -j RETURN", "-A " + netChain + " -j MASQUERADE"} {
		if !strings.Contains(rules, want) {
			t.Errorf("the network's masquerade rules lack %q:\n%s", want, grepLines(rules, netChain))
		}
	}

	for _, tc := range []struct {
		att       Attachment
		chain     string
		plugins   int
		ownMasq   bool // rules of its own (the bridge plugin's or an older manager's)
		stateMasq bool
	}{{bare, chainBridge, 1, false, false}, {published, chainBridgePortMap, 2, false, false},
		{legacy, chainLegacy, 2, true, false}, {perInstance, chainBridge, 1, true, true}} {
		id := filepath.Base(tc.att.NetNS)
		st, found, err := m.states.get(id)
		if err != nil || !found || st.Chain != tc.chain || st.Masq != tc.stateMasq {
			t.Errorf("state of %s = %+v, %v, %v; want chain %q, masq %v", id, st, found, err, tc.chain, tc.stateMasq)
		}
		if l, err := m.listFor(st); err != nil || len(l.Plugins) != tc.plugins {
			t.Errorf("chain of %s = %v, %v; want %d plugins", id, l, err, tc.plugins)
		}
		chain, _ := masqNames(cfg.NetworkName, id)
		rules := iptablesSave(t)
		if has := strings.Contains(rules, "-A POSTROUTING -s "+tc.att.IP+"/32"); has != tc.ownMasq {
			t.Errorf("%s has masquerade rules of its own: %v; want %v:\n%s", id, has, tc.ownMasq, grepLines(rules, chain))
		}
		if err := m.Teardown(ctx, id); err != nil {
			t.Fatalf("Teardown(%s) error = %v", id, err)
		}
		assertNoTrace(t, cfg, id, tc.att)
	}
	if rules := iptablesSave(t); !strings.Contains(rules, "-A "+netChain+" -j MASQUERADE") {
		t.Errorf("the network's masquerade rules went with the instances:\n%s", grepLines(rules, netChain))
	}
	if _, err := m.listFor(instanceState{ID: "future", Chain: "bridge,something"}); err == nil {
		t.Error("listFor(unknown chain) succeeded; want an error")
	}
}
