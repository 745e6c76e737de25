package network

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"golang.org/x/sys/unix"
)

// requireCNI skips unless the test can drive real CNI plugins: it needs
// root, the plugins and iptables. With CI=true missing tools fail the test
// instead, so CI cannot go green by skipping.
func requireCNI(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces and bridges: run go test as root")
	}
	var missing []string
	for _, p := range requiredPlugins {
		if _, err := invoke.FindInPath(p, DefaultConfig().PluginDirs); err != nil {
			missing = append(missing, "cni plugin "+p)
		}
	}
	for _, bin := range []string{"iptables", "iptables-save", "ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("missing %s: apt-get install containernetworking-plugins iptables iproute2 nftables", strings.Join(missing, ", "))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// testTenant owns the instances of tests that are not about tenants.
const testTenant = "tenant-a"

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// freeSubnet picks a random 10.x.y.0/24 that no host route touches.
func freeSubnet(t testing.TB) netip.Prefix {
	t.Helper()
	routes, err := hostRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		x, _ := rand.Int(rand.Reader, big.NewInt(150))
		y, _ := rand.Int(rand.Reader, big.NewInt(256))
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(100 + x.Int64()), byte(y.Int64()), 0}), 24)
		free := true
		for _, r := range routes {
			if r.Dst.Bits() > 0 && r.Dst.Overlaps(p) {
				free = false
			}
		}
		if free {
			return p
		}
	}
	t.Fatal("no unrouted 10.x.y.0/24 found")
	return netip.Prefix{}
}

// testConfig returns a Config with a bridge, subnet, network name and
// directories of the test's own, and registers a cleanup that tears down
// what is left, deletes the bridge, removes iptables rules naming the
// network, and unmounts the netns dir.
func testConfig(t testing.TB) Config {
	t.Helper()
	suffix := randHex(t, 3)
	cfg := DefaultConfig()
	cfg.NetworkName = "cubetest-" + suffix
	cfg.BridgeName = "cubet" + suffix
	cfg.Subnet = freeSubnet(t).String()
	cfg.StateDir = t.TempDir()
	cfg.NetNSDir = filepath.Join(t.TempDir(), "netns")
	t.Cleanup(func() {
		if m, err := NewCNI(cfg, testLogger(t)); err == nil {
			ids, _ := m.List(context.Background())
			for _, id := range ids {
				if err := m.Teardown(context.Background(), id); err != nil {
					t.Errorf("cleanup: Teardown(%s): %v", id, err)
				}
			}
		}
		exec.Command("ip", "link", "del", cfg.BridgeName).Run()
		removeIPTablesRules(t, cfg.NetworkName)
		for _, fam := range []string{"bridge", "inet"} {
			exec.Command("nft", "delete", "table", fam, filterTable(cfg.BridgeName)).Run()
		}
		if err := unix.Unmount(cfg.NetNSDir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("cleanup: unmount %s: %v", cfg.NetNSDir, err)
		}
	})
	return cfg
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func iptablesSave(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	return string(out)
}

// removeIPTablesRules deletes rules whose comment names network (leftovers
// of a failed test) and the per-instance chains they jump to. The shared
// CNI-HOSTPORT-* chains stay: other CNI users on the host rely on them.
func removeIPTablesRules(t testing.TB, network string) {
	var chains []string
	jump := regexp.MustCompile(`-j ((?:CNI|CUBE)-[0-9a-zA-Z-]+)`)
	table := ""
	for _, line := range strings.Split(iptablesSave(t), "\n") {
		if strings.HasPrefix(line, "*") {
			table = line[1:]
		}
		if !strings.HasPrefix(line, "-A ") || !strings.Contains(line, network) {
			continue
		}
		t.Logf("cleanup: removing leftover iptables rule in %s: %s", table, line)
		exec.Command("sh", "-c", "iptables -t "+table+" -D "+line[3:]).Run()
		if m := jump.FindStringSubmatch(line); m != nil && !strings.HasPrefix(m[1], "CNI-HOSTPORT-") {
			chains = append(chains, table+" "+m[1])
		}
	}
	for _, c := range chains {
		tc := strings.Fields(c)
		exec.Command("iptables", "-t", tc[0], "-F", tc[1]).Run()
		exec.Command("iptables", "-t", tc[0], "-X", tc[1]).Run()
	}
}

// inNetNS runs fn on a thread inside the network namespace pinned at path.
// Sockets fn creates stay in that namespace after it returns.
func inNetNS(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(orig)
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err == nil {
			err = fn()
		}
		// Hand the thread back only if it is home again; else it dies with
		// this goroutine.
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
