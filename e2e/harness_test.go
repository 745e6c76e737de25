// Package e2e runs Cube end to end on this machine: a real `cube up`
// (embedded etcd, API server, placement, node agent), real shims, runc,
// CNI plugins and a real OCI registry on loopback, driven through the
// `cube` CLI and the Go client. It needs root.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/shim"
)

// cubeBin is the cube binary built once for the whole suite.
var cubeBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			fmt.Println("e2e: needs root (cgroups, mounts, network namespaces), and CI=true runs every test")
			return 1
		}
		fmt.Println("e2e: skipping: needs root (cgroups, mounts, network namespaces); run `sudo make test`")
		return 0
	}
	dir, err := os.MkdirTemp("", "cube-e2e-bin")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	cubeBin = filepath.Join(dir, "cube")
	args := []string{"build", "-o", cubeBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "../cmd/cube")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("e2e: building cube failed:", err)
		return 1
	}
	// cube-shim beside cube, the layout `make install` gives: cube up runs
	// every instance's shim with it, as in production.
	args[2] = filepath.Join(dir, "cube-shim")
	build = exec.Command("go", append(args, "../cmd/cube-shim")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("e2e: building cube-shim failed:", err)
		return 1
	}
	// cube-agent and cube-init beside them too, static (PID 1 of every
	// VM, and of each of its containers): the node makes the VMs'
	// initramfs from them.
	for _, guest := range []string{"cube-agent", "cube-init"} {
		build = exec.Command("go", "build", "-o", filepath.Join(dir, guest), "../cmd/"+guest)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Println("e2e: building", guest, "failed:", err)
			return 1
		}
	}
	return m.Run()
}

// cluster is one `cube up` under test.
type cluster struct {
	t       testing.TB
	dataDir string
	config  string
	listen  string
	subnet  string
	bridge  string
	exited  chan struct{} // closed when the cube up process has exited
	logPath string
	cmd     *exec.Cmd
	client  *client.Client
	// upFlags are extra `cube up` flags, kept across restarts.
	upFlags []string
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freeHostPort finds a free TCP port an instance may publish: below the
// host's ephemeral range, which the API refuses for host ports (freePort's
// kernel-chosen ports are all in it).
func freeHostPort(t testing.TB) int {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscanf(string(b), "%d", &lo)
	}
	start := 10000 + int(randByte())*37%max(lo-10000, 1)
	for i := 0; i < lo-10000; i++ {
		p := 10000 + (start-10000+i)%(lo-10000)
		l, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", p))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatalf("no free port between 10000 and %d", lo)
	return 0
}

func randByte() byte {
	var b [1]byte
	_, _ = rand.Read(b[:])
	return b[0]
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freeSubnet picks a random /24 in 10.200.0.0-10.249.255.0 that no route
// of this host overlaps (another cluster's bridge, a leftover one).
func freeSubnet(t testing.TB) string {
	t.Helper()
	for range 200 {
		b := make([]byte, 2)
		_, _ = rand.Read(b)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200 + b[0]%50, b[1], 0}), 24)
		if !routeOverlaps(p) {
			return p.String()
		}
	}
	t.Fatal("no free /24 in 10.200.0.0/13 for a test cluster: remove leftover cube bridges")
	return ""
}

// routeOverlaps tells whether an IPv4 route of this host (/proc/net/route)
// overlaps p.
func routeOverlaps(p netip.Prefix) bool {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		mask, err2 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || mask == 0 {
			continue // the default route overlaps everything
		}
		le := func(v uint64) [4]byte { return [4]byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }
		bits := 0
		for m := uint32(mask); m != 0; m &= m - 1 {
			bits++
		}
		r := netip.PrefixFrom(netip.AddrFrom4(le(dst)), bits)
		if r.Overlaps(p) {
			return true
		}
	}
	return false
}

// startCluster runs `cube up` in a fresh data dir (short: unix socket
// paths live under it) with its own bridge and subnet.
func startCluster(t testing.TB) *cluster {
	t.Helper()
	dataDir, err := os.MkdirTemp("/tmp", "cube-")
	if err != nil {
		t.Fatal(err)
	}
	id := randHex(2)
	c := &cluster{
		t: t, dataDir: dataDir, config: filepath.Join(dataDir, "client.yaml"),
		listen:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		subnet:  freeSubnet(t),
		bridge:  "cubee" + id,
		logPath: filepath.Join(dataDir, "up.log"),
	}
	t.Cleanup(c.destroy)
	c.start()
	return c
}

func (c *cluster) start() {
	c.t.Helper()
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	defer logf.Close()
	c.cmd = exec.Command(cubeBin, append([]string{"up", "--data-dir", c.dataDir, "--listen", c.listen, "--config", c.config,
		"--subnet", c.subnet, "--bridge", c.bridge, "--node-name", "e2e", "--log-level", "debug",
		// The suites test the runc path unless they ask for microvm; the
		// tenants they make are granted runc for that.
		"--default-runtime", "runc",
		// VM tests boot the cached guest kernel (make kernel); a test
		// cluster never spends minutes building one.
		"--build-kernel=false"}, c.upFlags...)...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	// One waiter for the process's whole life: an exit is seen at once,
	// by the wait below and by kill9 and stop.
	cmd, exited := c.cmd, make(chan struct{})
	c.exited = exited
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	deadline := time.NewTimer(90 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(c.config); err == nil {
			if resp, err := http.Get("http://" + c.listen + "/healthz"); err == nil {
				resp.Body.Close()
				break
			}
		}
		select {
		case <-deadline.C:
			c.t.Fatalf("cube up did not come up in 90s; log:\n%s", c.log())
		case <-exited:
			c.t.Fatalf("cube up exited (%v); log:\n%s", cmd.ProcessState, c.log())
		case <-tick.C:
		}
	}
	cfg, err := client.LoadConfig(c.config)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, err := cfg.Resolve("")
	if err != nil {
		c.t.Fatal(err)
	}
	c.client = client.New(ctx.Server, ctx.Token)
	// The node registers right after the API server answers.
	c.eventually(30*time.Second, "node e2e is Ready", func() error {
		nodes, err := c.client.ListNodes(context.Background())
		if err != nil {
			return err
		}
		for _, n := range nodes.Items {
			if n.Metadata.Name == "e2e" && n.Status.Ready {
				return nil
			}
		}
		return errors.New("not yet")
	})
}

func (c *cluster) log() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 20000 {
		b = b[len(b)-20000:]
	}
	return string(b)
}

// running tells whether cube up still runs.
func (c *cluster) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// kill9 kills `cube up` (and only it: shims run in their own sessions).
func (c *cluster) kill9() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

func (c *cluster) stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-c.exited:
	case <-t.C:
		c.kill9()
	}
}

// destroy removes every instance through Cube (so their shims, mounts,
// cgroups and namespaces go the normal way), then stops cube up and
// removes the bridge.
func (c *cluster) destroy() {
	if c.client != nil && c.running() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		// Every tenant's instances, not only the admin's: shims outlive
		// cube up, so one left here would run on after the test.
		clients := []*client.Client{c.client}
		if tenants, err := c.client.ListTenants(ctx); err == nil {
			for _, tn := range tenants.Items {
				if tn.Metadata.Name == "admin" {
					continue
				}
				if tok, err := c.client.CreateToken(ctx, v1.TokenRequest{Tenant: tn.Metadata.Name, TTL: "1h"}); err == nil {
					clients = append(clients, client.New(c.client.Server(), tok.Token))
				}
			}
		}
		for _, cl := range clients {
			list, err := cl.ListInstances(ctx, client.ListOptions{})
			if err != nil {
				continue
			}
			for _, in := range list.Items {
				_ = cl.DeleteInstance(ctx, in.Metadata.Name, true)
			}
			for _, in := range list.Items {
				_, _ = cl.WaitInstance(ctx, in.Metadata.Name, []string{"deleted"}, time.Minute)
			}
		}
		cancel()
	}
	c.stop()
	// A cube up that stops stops its warm VMs; one killed leaves them to
	// the next, and there is none.
	socks, _ := filepath.Glob(filepath.Join(c.dataDir, "warm", "*", "shim.sock"))
	for _, sock := range socks {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = shim.Dial(sock).Shutdown(ctx)
		cancel()
	}
	_ = exec.Command("ip", "link", "del", c.bridge).Run()
	// The network's packet filter is per bridge (network/filter*.go).
	for _, family := range []string{"bridge", "inet"} {
		_ = exec.Command("nft", "delete", "table", family, "cube_"+c.bridge).Run()
	}
	if c.t.Failed() {
		c.t.Logf("cube up log:\n%s", c.log())
	}
	_ = os.RemoveAll(c.dataDir)
}

// cube runs the CLI against this cluster as the admin and returns stdout,
// stderr and the exit code.
func (c *cluster) cube(stdin string, args ...string) (string, string, int) {
	c.t.Helper()
	return c.runCLI("", stdin, args...)
}

// cubeAs runs the CLI as the tenant whose token is given.
func (c *cluster) cubeAs(token string, args ...string) (string, string, int) {
	c.t.Helper()
	return c.runCLI(token, "", args...)
}

// mustCubeAs is cubeAs that fails the test on a non-zero exit.
func (c *cluster) mustCubeAs(token string, args ...string) string {
	c.t.Helper()
	out, errOut, code := c.cubeAs(token, args...)
	if code != 0 {
		c.t.Fatalf("cube %s (as a tenant): exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// runCLI runs cube with the cluster's config, and token (when set) in
// CUBE_TOKEN. Safe to call from goroutines: a CLI that cannot run at all
// is an Errorf and exit code -1.
func (c *cluster) runCLI(token, stdin string, args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(cubeBin, args...)
	cmd.Env = append(os.Environ(), "CUBE_CONFIG="+c.config)
	if token != "" {
		cmd.Env = append(cmd.Env, "CUBE_TOKEN="+token)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	case err != nil:
		c.t.Errorf("cube %v: %v", args, err)
		return out.String(), errb.String(), -1
	}
	return out.String(), errb.String(), 0
}

// restartWith starts `cube up` again on c's data dir, with extra flags
// added to the ones it had, and waits until it is up.
func (c *cluster) restartWith(extra ...string) {
	c.t.Helper()
	c.upFlags = append(c.upFlags, extra...)
	c.start()
}

// mustCube runs the CLI and fails the test on a non-zero exit.
func (c *cluster) mustCube(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.cube("", args...)
	if code != 0 {
		c.t.Fatalf("cube %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (c *cluster) eventually(timeout time.Duration, what string, fn func() error) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("%s: still not true after %s: %v", what, timeout, err)
}
