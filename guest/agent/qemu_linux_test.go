package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/guest/agentapi"
)

// The QEMU tests boot the real guest kernel with this agent as /init of a
// throwaway initramfs (guest/initramfs makes the real one), and talk to
// it over the real virtio-serial port. The kernel comes from
// CUBE_TEST_KERNEL (a vmlinux path), else guest/kernel's cache.

// guestCmdline is guest/kernel's Cmdline. QEMU runs with acpi=off: the kernel has no
// ACPI, and without it microvm lists the virtio-mmio devices on the cmdline.
const guestCmdline = "console=ttyS0 quiet reboot=t panic=-1 lpj=9781696 tsc=reliable random.trust_cpu=on"

func requireQEMU(t testing.TB) string {
	t.Helper()
	missing := func(reason string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s, but CI=true", reason)
		}
		t.Skip(reason)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod for the initramfs' /dev/console): run as root")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		missing("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
	}
	for _, tool := range []string{"cpio", "mkfs.erofs", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(tool + " not found: apt-get install cpio erofs-utils e2fsprogs")
		}
	}
	k := os.Getenv("CUBE_TEST_KERNEL")
	if k == "" {
		// guest/kernel's cache (TODO once merged: ask guest/kernel for the
		// kernel of the current config instead).
		ks, _ := filepath.Glob("/var/cache/cube/kernel/*/vmlinux")
		if len(ks) == 0 {
			missing("no guest kernel: set CUBE_TEST_KERNEL to a vmlinux, or build one (make kernel)")
		}
		k = ks[len(ks)-1]
	}
	if _, err := os.Stat(k); err != nil {
		missing(fmt.Sprintf("guest kernel %s: %v", k, err))
	}
	return k
}

var (
	initrdOnce sync.Once
	initrdPath string
	initrdErr  error
)

// testInitrd builds cmd/cube-agent and cmd/cube-init (static) and packs
// them as /init and InitPath of a newc cpio, once per test binary.
func testInitrd(t testing.TB) string {
	t.Helper()
	initrdOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cube-initrd-")
		if err != nil {
			initrdErr = err
			return
		}
		root := filepath.Join(dir, "root")
		os.MkdirAll(filepath.Join(root, "dev"), 0o755)
		for out, pkg := range map[string]string{"init": "cube-agent", strings.TrimPrefix(InitPath, "/"): "cube-init"} {
			build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(root, out), "github.com/cube-platform/cube/cmd/"+pkg)
			build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
			if out, err := build.CombinedOutput(); err != nil {
				initrdErr = fmt.Errorf("build %s: %v: %s", pkg, err, out)
				return
			}
		}
		if err := unix.Mknod(filepath.Join(root, "dev", "console"), unix.S_IFCHR|0o600, int(unix.Mkdev(5, 1))); err != nil {
			initrdErr = err
			return
		}
		initrdPath = filepath.Join(dir, "initrd.cpio")
		pack := exec.Command("sh", "-c", "find . | sort | cpio --quiet -o -H newc -R 0:0 > "+initrdPath)
		pack.Dir = root
		if out, err := pack.CombinedOutput(); err != nil {
			initrdErr = fmt.Errorf("cpio: %v: %s", err, out)
		}
	})
	if initrdErr != nil {
		t.Fatal(initrdErr)
	}
	return initrdPath
}

// qemuVM is a booted guest.
type qemuVM struct {
	sock    string
	qmp     string
	cmd     *exec.Cmd
	c       *agentapi.Client
	console *strings.Builder
	exited  chan error
	start   time.Time
}

type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// bootQEMU starts QEMU microvm (TCG) with the agent port and, when given,
// the drives (serial -> image file), and connects to the port.
func bootQEMU(t testing.TB, kernel string, drives map[string]string) (*qemuVM, *lockedBuilder) {
	return bootQEMUWith(t, kernel, drives, true)
}

// bootQEMUWith connects to the agent socket at once when dial, else
// leaves vm.c nil and the QMP socket at vm.qmp. extra are more QEMU
// arguments, but a first "port=NAME" names the agent port otherwise.
func bootQEMUWith(t testing.TB, kernel string, drives map[string]string, dial bool, extra ...string) (*qemuVM, *lockedBuilder) {
	t.Helper()
	port := PortName
	if len(extra) > 0 && strings.HasPrefix(extra[0], "port=") {
		port, extra = strings.TrimPrefix(extra[0], "port="), extra[1:]
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	qmp := filepath.Join(dir, "qmp.sock")
	args := []string{
		"-qmp", "unix:" + qmp + ",server=on,wait=off",
		"-M", "microvm,x-option-roms=off,isa-serial=on,pit=on,pic=on,rtc=on,acpi=off",
		"-accel", "tcg", "-cpu", "max", "-m", "256M", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "stdio",
		"-kernel", kernel, "-initrd", testInitrd(t), "-append", cmdline(),
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path=" + sock + ",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=" + port,
	}
	args = append(args, extra...)
	serials := make([]string, 0, len(drives))
	for s := range drives {
		serials = append(serials, s)
	}
	slices.Sort(serials)
	for _, s := range serials {
		ro := ""
		if strings.HasSuffix(drives[s], ".erofs") {
			ro = ",readonly=on"
		}
		args = append(args,
			"-drive", "id="+s+",file="+drives[s]+",format=raw,if=none"+ro,
			"-device", "virtio-blk-device,drive="+s+",serial="+s)
	}
	console := &lockedBuilder{}
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdout, cmd.Stderr = console, console
	vm := &qemuVM{sock: sock, qmp: qmp, cmd: cmd, exited: make(chan error, 1), start: time.Now()}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { vm.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if vm.c != nil {
			vm.c.Close()
		}
		cmd.Process.Kill()
		<-vm.exited
	})
	// QEMU creates the socket before it runs the guest: dial until it is
	// there (or QEMU is gone), within a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if !dial {
			if _, err := os.Stat(qmp); err == nil {
				return vm, console
			}
		}
		conn, err := net.Dial("unix", sock)
		if dial && err == nil {
			vm.c = agentapi.NewClient(conn)
			return vm, console
		}
		if conn != nil {
			conn.Close()
		}
		select {
		case err := <-vm.exited:
			vm.exited <- err
			t.Fatalf("qemu exited: %v: %s", err, console.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu made no agent socket: %v: %s", err, console.String())
		}
		time.Sleep(time.Millisecond)
	}
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testDrives makes a busybox erofs image drive and an ext4 writable one.
func testDrives(t *testing.T) map[string]string {
	t.Helper()
	tmp := t.TempDir()
	img := filepath.Join(tmp, "image.erofs")
	run(t, "mkfs.erofs", "--quiet", img, busyboxDir(t))
	rw := filepath.Join(tmp, "rw.ext4")
	os.WriteFile(rw, nil, 0o600)
	os.Truncate(rw, 64<<20)
	run(t, "mkfs.ext4", "-q", "-F", rw)
	return map[string]string{"img0": img, "rw": rw}
}

// TestQEMUBoot: the agent boots as PID 1 of a real guest, answers Hello
// over virtio-serial, mounts the drives found by serial, runs a container
// and an exec that see the guest's kernel, and Shutdown ends QEMU.
func TestQEMUBoot(t *testing.T) {
	kernel := requireQEMU(t)
	vm, console := bootQEMU(t, kernel, testDrives(t))
	c, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	info, err := vm.c.Hello(c)
	if err != nil {
		t.Fatalf("Hello: %v; console: %s", err, console.String())
	}
	t.Logf("agent ready %v after qemu start: %+v", time.Since(vm.start), info)
	var host unix.Utsname
	unix.Uname(&host)
	if info.KernelRelease == "" || info.KernelRelease == unix.ByteSliceToString(host.Release[:]) {
		t.Errorf("guest kernel release %q; want the guest's, not the host's", info.KernelRelease)
	}
	if want, err := os.ReadFile(filepath.Join(filepath.Dir(kernel), "release")); err == nil && strings.TrimSpace(string(want)) != info.KernelRelease {
		t.Errorf("guest kernel release %q; want %q", info.KernelRelease, strings.TrimSpace(string(want)))
	}
	oom := sh("oom", "dd if=/dev/zero of=/dev/null bs=96M count=1")
	oom.MemoryBytes = 32 << 20
	setup := baseSetup(sh("app", "uname -r; cat /proc/1/cmdline; echo; echo data > /written; cat /written; exec sleep 1000"), oom)
	setup.Network = nil
	t0 := time.Now()
	if err := vm.c.Setup(c, setup); err != nil {
		t.Fatalf("Setup: %v; console: %s", err, console.String())
	}
	t1 := time.Now()
	if _, err := vm.c.Start(c, "app"); err != nil {
		t.Fatalf("Start: %v; console: %s", err, console.String())
	}
	t.Logf("Setup took %v, Start %v", t1.Sub(t0), time.Since(t1))
	p := agentapi.Process{Container: "app"}
	var out strings.Builder
	for !strings.Contains(out.String(), "data\n") {
		b, err := vm.c.ReadOutput(c, p, agentapi.Stream_STREAM_STDOUT, uint64(out.Len()), 0)
		if err != nil {
			t.Fatalf("ReadOutput: %v (so far %q); console: %s", err, out.String(), console.String())
		}
		out.Write(b)
	}
	if !strings.HasPrefix(out.String(), info.KernelRelease+"\ncube-init:app") {
		t.Errorf("container printed %q; want the guest release, then its init", out.String())
	}
	e := agentapi.Process{Container: "app", ExecID: "uname"}
	if err := vm.c.Exec(c, &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "uname"}, Args: []string{"uname", "-r"}}); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	var eout strings.Builder
	if _, err := vm.c.CopyOutput(c, e, agentapi.Stream_STREAM_STDOUT, &eout); err != nil || eout.String() != info.KernelRelease+"\n" {
		t.Errorf("exec uname -r = %q, %v; want %q", eout.String(), err, info.KernelRelease)
	}
	// What a container's init costs its memory limit (logged: the VM's
	// size counts it).
	rss := agentapi.Process{Container: "app", ExecID: "rss"}
	if err := vm.c.Exec(c, &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "rss"}, Args: []string{"grep", "-E", "VmRSS|RssAnon", "/proc/1/status"}}); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	var rout strings.Builder
	vm.c.CopyOutput(c, rss, agentapi.Stream_STREAM_STDOUT, &rout)
	t.Logf("container init: %s", strings.Join(strings.Fields(rout.String()), " "))

	// cgroup v2 in the guest: memory.max holds and memory.events counts
	// the OOM kill.
	if _, err := vm.c.Start(c, "oom"); err != nil {
		t.Fatalf("Start(oom): %v", err)
	}
	wc, wcancel := context.WithTimeout(c, 60*time.Second)
	defer wcancel()
	if st, err := vm.c.Wait(wc, agentapi.Process{Container: "oom"}); err != nil || !st.OOMKilled {
		t.Fatalf("Wait(oom) = %+v, %v; want OOMKilled; console: %s", st, err, console.String())
	}
	if err := vm.c.Shutdown(c); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-vm.exited:
		vm.exited <- err
		if err != nil {
			t.Errorf("qemu exited with %v after Shutdown; want 0 (reboot under -no-reboot); console: %s", err, console.String())
		}
	case <-c.Done():
		t.Fatalf("qemu still running after Shutdown; console: %s", console.String())
	}
	t.Logf("console:\n%s", console.String())
	if s := console.String(); strings.Contains(s, "Kernel panic") || strings.Contains(s, "fatal") {
		t.Errorf("console shows a failure: %s", s)
	}
}

// BenchmarkBootToHello measures QEMU start (TCG) to the agent's Hello
// answered, and reports the median as p50-ms.
//
//	CUBE_TEST_KERNEL=/var/cache/cube/kernel/<hash>/vmlinux \
//	  go test -run '^$' -bench BootToHello -benchtime 5x ./guest/agent
func BenchmarkBootToHello(b *testing.B) {
	kernel := requireQEMU(b)
	var ds []time.Duration
	for i := 0; i < b.N; i++ {
		vm, console := bootQEMU(b, kernel, nil)
		c, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		if _, err := vm.c.Hello(c); err != nil {
			cancel()
			b.Fatalf("Hello: %v; console: %s", err, console.String())
		}
		ds = append(ds, time.Since(vm.start))
		cancel()
		vm.c.Shutdown(context.Background())
		select {
		case err := <-vm.exited:
			vm.exited <- err
		case <-time.After(30 * time.Second):
			b.Fatal(errors.New("qemu did not exit after Shutdown"))
		}
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "p50-ms")
	b.Logf("boot to Hello: %v", ds)
}

// cmdline is guestCmdline, or CUBE_TEST_CMDLINE to debug a boot.
func cmdline() string {
	if s := os.Getenv("CUBE_TEST_CMDLINE"); s != "" {
		return s
	}
	return guestCmdline
}

// TestQEMULateHost: the guest's agent opens its port before the host has
// connected (it reads EOF and reopens); a host that connects only then is
// served.
func TestQEMULateHost(t *testing.T) {
	kernel := requireQEMU(t)
	vm, console := bootQEMUWith(t, kernel, nil, false)
	c, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	// QEMU tells, over QMP, when the guest has the port open.
	if err := waitFrontendOpen(c, vm.qmp, "agent"); err != nil {
		t.Fatalf("the guest never opened the agent port: %v; console: %s", err, console.String())
	}
	conn, err := net.Dial("unix", vm.sock)
	if err != nil {
		t.Fatal(err)
	}
	vm.c = agentapi.NewClient(conn)
	if _, err := vm.c.Hello(c); err != nil {
		t.Fatalf("Hello from a late host: %v; console: %s", err, console.String())
	}
	if err := vm.c.Shutdown(c); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// waitFrontendOpen polls QMP's query-chardev until chardev id reports
// frontend-open (the guest opened its port) or ctx ends.
func waitFrontendOpen(ctx context.Context, qmpPath, id string) error {
	// QEMU makes the socket file before it listens on it.
	var conn net.Conn
	for {
		var err error
		if conn, err = net.Dial("unix", qmpPath); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dial qmp: %w", err)
		case <-time.After(time.Millisecond):
		}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	dec := json.NewDecoder(conn)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		return fmt.Errorf("qmp greeting: %w", err)
	}
	cmd := func(name string) (json.RawMessage, error) {
		if _, err := fmt.Fprintf(conn, `{"execute":%q}`+"\n", name); err != nil {
			return nil, err
		}
		for {
			var r struct {
				Return json.RawMessage `json:"return"`
				Error  any             `json:"error"`
				Event  string          `json:"event"`
			}
			if err := dec.Decode(&r); err != nil {
				return nil, err
			}
			if r.Event != "" {
				continue
			}
			if r.Error != nil {
				return nil, fmt.Errorf("qmp %s: %v", name, r.Error)
			}
			return r.Return, nil
		}
	}
	if _, err := cmd("qmp_capabilities"); err != nil {
		return err
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		raw, err := cmd("query-chardev")
		if err != nil {
			return err
		}
		var devs []struct {
			Label        string `json:"label"`
			FrontendOpen bool   `json:"frontend-open"`
		}
		if err := json.Unmarshal(raw, &devs); err != nil {
			return err
		}
		for _, d := range devs {
			if d.Label == id && d.FrontendOpen {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// TestQEMUNoPort: a guest whose agent port never appears does not hang:
// the agent says why on the console and reboots, and QEMU exits.
func TestQEMUNoPort(t *testing.T) {
	kernel := requireQEMU(t)
	// Replace the agent's port by one of another name.
	vm, console := bootQEMUWith(t, kernel, nil, false, "port=not.the.agent", "-append", cmdline()+" cube_agent_port_wait=1s")
	select {
	case err := <-vm.exited:
		vm.exited <- err
		if !strings.Contains(console.String(), "cube-agent: fatal: no virtio-serial port") {
			t.Errorf("console after the agent gave up: %q; want its reason", console.String())
		}
	case <-time.After(120 * time.Second):
		t.Fatalf("QEMU still running 120 s after boot with no agent port; console: %s", console.String())
	}
}
