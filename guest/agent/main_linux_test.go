package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/guest/agentapi"
)

// The tests run the agent as a child of the test binary (serveEnv), in
// its own network, mount and UTS namespaces, on one end of a socketpair
// in place of the virtio port, with loop devices in place of virtio
// drives: a real erofs image drive and a real ext4 writable drive. The
// child starts cmd/cube-init, built once per test binary (cubeInit), as
// each container's init.
const (
	serveEnv    = "_CUBE_AGENT_TEST_SERVE"
	stateEnv    = "_CUBE_AGENT_TEST_STATE"
	cgroupEnv   = "_CUBE_AGENT_TEST_CGROUP"
	drivesEnv   = "_CUBE_AGENT_TEST_DRIVES" // serial=dev,serial=dev
	sockEnv     = "_CUBE_AGENT_TEST_SOCK"   // more connections, for raw requests
	initEnv     = "_CUBE_AGENT_TEST_INIT"   // the cube-init binary
	testTimeout = 60 * time.Second
)

func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) == "1" {
		os.Exit(serveChild())
	}
	code := m.Run()
	if initDir != "" {
		os.RemoveAll(initDir)
	}
	if code == 0 {
		if err := checkGoroutineLeaks(5 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// serveChild is the agent under test: it makes its namespaces private,
// gives itself an eth0 (one end of a veth pair: the host has no dummy driver) and serves on fd 3.
func serveChild() int {
	runtime.LockOSThread()
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fmt.Fprintln(os.Stderr, "make / private:", err)
		return 1
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
		fmt.Fprintln(os.Stderr, "add eth0:", err)
		return 1
	}
	drives := map[string]string{}
	for _, kv := range strings.Split(os.Getenv(drivesEnv), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			drives[k] = v
		}
	}
	cfg := DefaultConfig()
	cfg.Init = false
	cfg.ReapAll = true
	cfg.StateDir = os.Getenv(stateEnv)
	cfg.InitBinary = os.Getenv(initEnv)
	cfg.CgroupParent = os.Getenv(cgroupEnv)
	cfg.FindDrive = func(serial string) (string, error) {
		if d, ok := drives[serial]; ok {
			return d, nil
		}
		return "", fmt.Errorf("no drive %q", serial)
	}
	cfg.PowerOff = nil
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// As init does: children that outlive their parents come to us.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	a, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := net.FileConn(os.NewFile(3, "host"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-a.Done()
		cancel()
	}()
	srv, err := a.NewServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	l, err := net.Listen("unix", os.Getenv(sockEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go srv.Serve(ctx, l)
	defer srv.Close()
	if err := a.ServeConn(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	select {
	case <-a.Done():
		return 0 // as a VM that powered off
	default:
		return 3
	}
}

func requireAgentHost(t *testing.T) {
	t.Helper()
	missing := func(reason string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s, but CI=true", reason)
		}
		t.Skip(reason)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, mounts, cgroups, loop devices): run as root")
	}
	for _, tool := range []string{"mkfs.erofs", "mkfs.ext4", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(tool + " not found: apt-get install erofs-utils e2fsprogs mount")
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		missing("no /bin/busybox: apt-get install busybox-static")
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
			missing("no cgroup memory controller (v1 memory or v2) at /sys/fs/cgroup")
		}
	}
}

func randomID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// busyboxDir writes a minimal busybox root filesystem.
func busyboxDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields("sh cat echo sleep hostname ls id ip head tr dd tty stty ps kill true false test wc grep env uname nc touch mknod") {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc", "group"), []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	return dir
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// loopDrive attaches img as a loop device until the test ends.
func loopDrive(t *testing.T, img string) string {
	t.Helper()
	dev := run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// testVM is an agent under test and a client to it.
type testVM struct {
	c     *agentapi.Client
	cmd   *exec.Cmd
	state string
	sock  string
	cg    string
	exit  chan error
}

// startAgent builds the drives and starts the agent child.
func startAgent(t *testing.T) *testVM {
	t.Helper()
	requireAgentHost(t)
	tmp := t.TempDir()
	img := filepath.Join(tmp, "image.erofs")
	run(t, "mkfs.erofs", "--quiet", img, busyboxDir(t))
	rw := filepath.Join(tmp, "rw.ext4")
	if err := os.WriteFile(rw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(rw, 64<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", "-q", "-F", rw)
	drives := "img0=" + loopDrive(t, img) + ",rw=" + loopDrive(t, rw)

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	host, guest := os.NewFile(uintptr(fds[0]), "host"), os.NewFile(uintptr(fds[1]), "guest")
	defer guest.Close()
	vm := &testVM{state: filepath.Join(tmp, "state"), sock: filepath.Join(tmp, "agent.sock"), cg: "cube-agent-test/" + randomID(), exit: make(chan error, 1)}
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"=1", initEnv+"="+cubeInit(t), stateEnv+"="+vm.state, sockEnv+"="+vm.sock, cgroupEnv+"="+vm.cg, drivesEnv+"="+drives)
	cmd.ExtraFiles = []*os.File{guest}
	cmd.Stdout, cmd.Stderr = testWriter{t}, testWriter{t}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNET | unix.CLONE_NEWNS | unix.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	vm.cmd = cmd
	go func() { vm.exit <- cmd.Wait() }()
	conn, err := net.FileConn(host)
	host.Close()
	if err != nil {
		t.Fatal(err)
	}
	vm.c = agentapi.NewClient(conn)
	t.Cleanup(func() {
		vm.c.Close()
		cmd.Process.Kill()
		<-vm.exit
		// The agent's mounts died with its mount namespace; its cgroups
		// are left to remove once their processes are gone.
		for _, h := range []string{"memory", "pids"} {
			rmdirTree(filepath.Join("/sys/fs/cgroup", h, vm.cg))
		}
		rmdirTree(filepath.Join("/sys/fs/cgroup", vm.cg))
	})
	return vm
}

var (
	initOnce sync.Once
	initDir  string
	initBin  string
	initErr  error
)

// cubeInit builds cmd/cube-init (static, as the Makefile does) once per
// test binary; TestMain removes it.
func cubeInit(t *testing.T) string {
	t.Helper()
	initOnce.Do(func() {
		if initDir, initErr = os.MkdirTemp("", "cube-init-"); initErr != nil {
			return
		}
		initBin = filepath.Join(initDir, "cube-init")
		build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, "github.com/cube-platform/cube/cmd/cube-init")
		build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
		if out, err := build.CombinedOutput(); err != nil {
			initErr = fmt.Errorf("build cube-init: %v: %s", err, out)
		}
	})
	if initErr != nil {
		t.Fatal(initErr)
	}
	return initBin
}

// ctx is a test's deadline for one step.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return c
}

func baseSetup(containers ...*agentapi.ContainerSpec) *agentapi.SetupRequest {
	for _, c := range containers {
		if c.ImageDrive == "" {
			c.ImageDrive = "img0"
		}
		if c.Env == nil {
			c.Env = []string{"PATH=/bin", "HOME=/root"}
		}
	}
	return &agentapi.SetupRequest{
		Hostname: "vm-test",
		Network: &agentapi.Network{
			Mac: "02:00:0a:58:00:05", Ipv4Cidr: "10.88.0.5/24", Gateway: "10.88.0.1", Mtu: 1400,
			Routes:     []*agentapi.Route{{Destination: "10.96.0.0/12", Gateway: "10.88.0.1"}},
			DnsServers: []string{"10.88.0.1"}, DnsSearch: []string{"default.svc.cube"},
		},
		Drives: []*agentapi.Drive{
			{Serial: "rw", Role: agentapi.DriveRole_DRIVE_ROLE_WRITABLE, FsType: "ext4"},
			{Serial: "img0", Role: agentapi.DriveRole_DRIVE_ROLE_IMAGE, FsType: "erofs"},
		},
		Containers: containers,
	}
}

func sh(name, script string) *agentapi.ContainerSpec {
	return &agentapi.ContainerSpec{Name: name, Args: []string{"sh", "-c", script}}
}

// output reads a process's stream to EOF.
func readAll(t *testing.T, vm *testVM, p agentapi.Process, s agentapi.Stream) string {
	t.Helper()
	var b strings.Builder
	if _, err := vm.c.CopyOutput(ctx(t), p, s, &b); err != nil {
		t.Fatalf("CopyOutput(%v, %v): %v", p, s, err)
	}
	return b.String()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// checkGoroutineLeaks waits for goroutines the tests started to end.
func checkGoroutineLeaks(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "cube-platform/cube") && !strings.Contains(g, "checkGoroutineLeaks") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaked goroutines:\n%s", strings.Join(leaked, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
