package qemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/jail"
)

const marker = "CUBE-TEST-INIT-OK"

// bootDeadline bounds a TCG boot on a loaded 2-core machine.
const bootDeadline = 60 * time.Second

type testVM struct {
	*VM
	cfg vmm.Config
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func randomID(t testing.TB) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// testConfig is a VM running testinit in the given mode, jailed with a
// fresh uid and a cgroup below /cube-test.
func testConfig(t testing.TB, kernel, mode string) vmm.Config {
	t.Helper()
	id := randomID(t)
	state := t.TempDir()
	idDir := filepath.Join(os.TempDir(), "cube-test-vmm-ids")
	uid, err := jail.AllocateID(idDir, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { jail.ReleaseID(idDir, id) })
	t.Cleanup(func() { removeCgroupParent("/cube-test/" + id) })
	return vmm.Config{
		ID:          id,
		Kernel:      kernel,
		Initrd:      testInitrd,
		Cmdline:     "quiet lpj=9781696 tsc=reliable cubemode=" + mode,
		VCPUs:       1,
		MemoryMiB:   128,
		AgentSocket: filepath.Join(state, "agent.sock"),
		ConsoleLog:  filepath.Join(state, "console.log"),
		Accel:       testAccel(),
		StateDir:    state,
		Jail:        vmm.JailConfig{UID: uid, GID: uid, CgroupParent: "/cube-test/" + id},
	}
}

// testAccel is tcg unless CUBE_TEST_ACCEL=kvm (on a host whose KVM
// works, e.g. to measure the KVM boot time with BenchmarkBootToInit).
func testAccel() vmm.Accel {
	if os.Getenv("CUBE_TEST_ACCEL") == "kvm" {
		return vmm.AccelKVM
	}
	return vmm.AccelTCG
}

func startVM(t *testing.T, cfg vmm.Config) *VM {
	t.Helper()
	d, err := New(Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := d.StartVM(ctx, cfg)
	if err != nil {
		t.Fatalf("StartVM: %v", err)
	}
	t.Cleanup(func() { v.Stop(context.Background()) })
	return v
}

func waitBoot(t *testing.T, v *VM) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	if err := v.WaitConsole(ctx, marker); err != nil {
		t.Fatalf("WaitConsole: %v; console:\n%s", err, v.Console())
	}
}

func waitExit(t *testing.T, v *VM) vmm.ExitInfo {
	t.Helper()
	select {
	case e := <-v.Wait():
		return e
	case <-time.After(bootDeadline):
		t.Fatalf("vm did not end; console:\n%s", v.Console())
		return vmm.ExitInfo{}
	}
}

// assertNothingLeft checks that a VM that ended left no process, socket,
// jail dir, cgroup or other file behind (the console log is the caller's).
func assertNothingLeft(t *testing.T, cfg vmm.Config, pid int) {
	t.Helper()
	if pid > 0 && !processGone(pid) {
		t.Errorf("vmm %d is still running", pid)
	}
	ents, _ := os.ReadDir(cfg.StateDir)
	for _, e := range ents {
		if filepath.Join(cfg.StateDir, e.Name()) != cfg.ConsoleLog {
			t.Errorf("state dir still holds %s", e.Name())
		}
	}
	for _, h := range []string{"memory", "pids", "unified", "cpu", "cpuacct"} {
		p := filepath.Join("/sys/fs/cgroup", h, cfg.Jail.CgroupParent, "vmm")
		if _, err := os.Stat(p); err == nil {
			t.Errorf("cgroup %s still exists", p)
		}
	}
}

// processGone: pid does not exist or is a zombie (dead, waiting for
// whoever adopted it to reap it).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && len(b) > i+2 && b[i+2] == 'Z'
}

func removeCgroupParent(parent string) {
	for _, h := range []string{"memory", "pids", "unified", "cpu", "cpuacct"} {
		syscall.Rmdir(filepath.Join("/sys/fs/cgroup", h, parent))
	}
}

// TestPoweroff: the guest reboots itself (the agent's clean power-off);
// the VM ends by itself as Poweroff and leaves nothing behind.
func TestPoweroff(t *testing.T) {
	kernel := requireVM(t)
	cfg := testConfig(t, kernel, "poweroff")
	v := startVM(t, cfg)
	waitBoot(t, v)
	e := waitExit(t, v)
	if e.Reason != vmm.ExitPoweroff {
		t.Errorf("exit = %v; want %s; console:\n%s", e, vmm.ExitPoweroff, v.Console())
	}
	assertNothingLeft(t, cfg, v.Pid())
	b, err := os.ReadFile(cfg.ConsoleLog)
	if err != nil || !strings.Contains(string(b), marker) {
		t.Errorf("console log = %q, %v; want the marker", b, err)
	}
}

// TestRunningJailedAndStop: a booted VM reports "running" over QMP, runs
// jailed (uid, capabilities, no_new_privs, seccomp, root, fds, cgroup),
// and Stop ends it without a trace.
func TestRunningJailedAndStop(t *testing.T) {
	kernel := requireVM(t)
	cfg := testConfig(t, kernel, "hang")
	cfg.VCPUs = 2
	v := startVM(t, cfg)
	waitBoot(t, v)
	// The guest is sized as asked: 2 vCPUs, and 128 MiB less what the
	// kernel reserves.
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer bcancel()
	if err := v.WaitConsole(bctx, "kB"); err != nil { // the marker line's end
		t.Fatal(err)
	}
	line := v.console.lastLine(marker)
	var kb int
	fmt.Sscanf(line[strings.Index(line, "MemTotal:")+len("MemTotal:"):], "%dkB", &kb)
	if !strings.Contains(line, "cpus=2") || kb < 100<<10 || kb > 128<<10 {
		t.Errorf("guest reports %q; want cpus=2 and MemTotal near 128 MiB", line)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := v.QMP().QueryStatus(ctx)
	if err != nil || !st.Running || st.Status != "running" {
		t.Errorf("QueryStatus = %+v, %v; want running", st, err)
	}
	assertJailed(t, cfg, v.Pid())

	pid := v.Pid()
	if err := v.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if e := v.Exit(); e.Reason != vmm.ExitStopped {
		t.Errorf("exit = %v; want %s", e, vmm.ExitStopped)
	}
	assertNothingLeft(t, cfg, pid)
	if err := v.Stop(ctx); err != nil {
		t.Errorf("second Stop = %v; want nil", err)
	}
}

func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func assertJailed(t *testing.T, cfg vmm.Config, pid int) {
	t.Helper()
	st := procStatus(t, pid)
	id := strconv.Itoa(cfg.Jail.UID)
	wantIDs := id + "\t" + id + "\t" + id + "\t" + id
	for _, k := range []string{"Uid", "Gid"} {
		if st[k] != wantIDs {
			t.Errorf("%s = %q; want %q", k, st[k], wantIDs)
		}
	}
	if st["Groups"] != "" {
		t.Errorf("Groups = %q; want none", st["Groups"])
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if st[k] != "0000000000000000" {
			t.Errorf("%s = %s; want 0", k, st[k])
		}
	}
	if st["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %s; want 1", st["NoNewPrivs"])
	}
	if st["Seccomp"] != "2" {
		t.Errorf("Seccomp = %s; want 2 (filter)", st["Seccomp"])
	}

	// The root holds only what the jail bound: /usr /lib /lib64 /etc
	// (binary, libraries, firmware), /dev (null, zero, urandom), /vm.
	root := "/proc/" + strconv.Itoa(pid) + "/root"
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	for _, n := range names {
		if !slices.Contains([]string{"usr", "lib", "lib64", "etc", "dev", "vm"}, n) {
			t.Errorf("jail root holds %q; want only usr lib lib64 etc dev vm (all: %v)", n, names)
		}
	}
	devs, _ := os.ReadDir(root + "/dev")
	var dn []string
	for _, e := range devs {
		dn = append(dn, e.Name())
	}
	if strings.Join(dn, " ") != "null urandom zero" {
		t.Errorf("jail /dev = %v; want null urandom zero", dn)
	}
	vmf, _ := os.ReadDir(root + "/vm")
	if len(vmf) != 2 {
		t.Errorf("jail /vm holds %d files; want 2 (vmlinux, initrd)", len(vmf))
	}
	if _, err := os.Stat(root + "/proc/self"); err == nil {
		t.Errorf("the jail has /proc")
	}
	if _, err := os.Stat(root + cfg.StateDir); err == nil {
		t.Errorf("the jail sees the state dir %s", cfg.StateDir)
	}
	// Writing into the jail root must fail: it is read-only.
	if err := os.WriteFile(root+"/x", nil, 0o644); err == nil {
		os.Remove(root + "/x")
		t.Errorf("the jail root is writable")
	}

	// fds: 0-2 plus the two listeners (and what QEMU opened itself).
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	sockets := 0
	for _, f := range fds {
		target, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + f.Name())
		// stdio (/dev/null, the console and stderr pipes), the handed
		// sockets, QEMU's own eventfds/epoll/signalfd, and at most
		// the jail's device nodes and VM files: nothing else.
		ok := false
		for _, p := range []string{"pipe:", "socket:", "anon_inode:", "/dev/null", "/dev/zero", "/dev/urandom", "/vm/"} {
			ok = ok || strings.HasPrefix(target, p)
		}
		if !ok {
			t.Errorf("vmm fd %s -> %s: not one the jail handed it", f.Name(), target)
		}
		if strings.HasPrefix(target, "socket:") {
			sockets++
		}
	}
	if sockets < 2 {
		t.Errorf("vmm holds %d sockets; want the qmp and agent ones", sockets)
	}

	// Its own cgroup with the memory limit.
	limit, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", cfg.Jail.CgroupParent, "vmm/memory.limit_in_bytes"))
	want := strconv.FormatInt(int64(cfg.MemoryMiB+vmm.DefaultMemoryOverheadMiB)<<20, 10)
	if err != nil || strings.TrimSpace(string(limit)) != want {
		t.Errorf("vmm memory limit = %q, %v; want %s", limit, err, want)
	}
	procs, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", cfg.Jail.CgroupParent, "vmm/cgroup.procs"))
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(pid)) {
		t.Errorf("vmm %d not in its memory cgroup (procs %q)", pid, procs)
	}
	if env, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ"); len(env) != 0 {
		t.Errorf("vmm environment = %q; want empty", env)
	}
}

// TestKill9: SIGKILL of the QEMU process is reported as VMMExited with
// the signal, and the driver cleans up.
func TestKill9(t *testing.T) {
	kernel := requireVM(t)
	cfg := testConfig(t, kernel, "hang")
	v := startVM(t, cfg)
	waitBoot(t, v)
	if err := syscall.Kill(v.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e := waitExit(t, v)
	if e.Reason != vmm.ExitVMMExited || e.Signal != syscall.SIGKILL {
		t.Errorf("exit = %v; want %s by SIGKILL", e, vmm.ExitVMMExited)
	}
	assertNothingLeft(t, cfg, v.Pid())
}

// TestGuestPanic: init exits, the kernel panics, panic=-1 resets the
// guest and -no-reboot ends QEMU: reported as GuestPanic, not Poweroff.
func TestGuestPanic(t *testing.T) {
	kernel := requireVM(t)
	cfg := testConfig(t, kernel, "panic")
	v := startVM(t, cfg)
	e := waitExit(t, v)
	if e.Reason != vmm.ExitGuestPanic || !strings.Contains(e.Detail, "Attempted to kill init") {
		t.Errorf("exit = %v; want %s with the panic message; console:\n%s", e, vmm.ExitGuestPanic, v.Console())
	}
	assertNothingLeft(t, cfg, v.Pid())
}

// TestNotAKernel: a kernel file that is no kernel fails Start with QEMU's
// reason and leaves nothing behind.
func TestNotAKernel(t *testing.T) {
	requireVM(t)
	bogus := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(bogus, []byte(strings.Repeat("not a kernel\n", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, bogus, "poweroff")
	d, err := New(Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := d.StartVM(ctx, cfg)
	if err == nil {
		// QEMU may only notice once running: then the VM must end.
		e := waitExit(t, v)
		if e.Reason != vmm.ExitVMMExited {
			t.Errorf("exit = %v; want %s", e, vmm.ExitVMMExited)
		}
	} else if t.Logf("StartVM: %v", err); !strings.Contains(err.Error(), "qemu: linux kernel") {
		t.Errorf("StartVM error %q does not carry qemu's reason", err)
	}
	t.Cleanup(func() { removeCgroupParent(cfg.Jail.CgroupParent) })
	assertNothingLeft(t, cfg, 0)
}

// TestBootDeadline: a guest that never reaches the marker runs into the
// caller's boot deadline with a timeout error; Stop then leaves nothing.
func TestBootDeadline(t *testing.T) {
	kernel := requireVM(t)
	cfg := testConfig(t, kernel, "hang")
	cfg.Initrd = "" // no init at all: the kernel cannot finish booting
	cfg.Cmdline += " root=/dev/nonexistent panic=0"
	v := startVM(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := v.WaitConsole(ctx, marker)
	if !errors.Is(err, errdefs.ErrTimeout) {
		t.Errorf("WaitConsole = %v; want a timeout", err)
	}
	pid := v.Pid()
	if err := v.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, cfg, pid)
}

// TestConsoleFlood: a guest that writes far more to its console than the
// host keeps gets its log cut at the cap (with a note) and the in-memory
// tail bounded, and the host still sees what it prints last.
func TestConsoleFlood(t *testing.T) {
	kernel := requireVM(t)
	old := consoleLogLimit
	consoleLogLimit = 64 << 10
	t.Cleanup(func() { consoleLogLimit = old })
	cfg := testConfig(t, kernel, "flood")
	v := startVM(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	if err := v.WaitConsole(ctx, "CUBE-FLOOD-DONE"); err != nil {
		t.Fatal(err)
	}
	if n := len(v.Console()); n > tailBytes {
		t.Errorf("console tail holds %d bytes; want at most %d", n, tailBytes)
	}
	v.Stop(ctx)
	b, _ := os.ReadFile(cfg.ConsoleLog)
	if len(b) > 64<<10+100 || !strings.Contains(string(b), "[console log truncated at 65536 bytes]") {
		t.Errorf("console log is %d bytes (ends %q); want it cut at 64 KiB with a note", len(b), b[max(0, len(b)-60):])
	}
}

// TestMemoryLimitRoom: a guest that touches most of its memory keeps its
// VMM alive under the VMM cgroup's limit (guest memory + the default
// overhead), and the cgroup's peak stays below that limit.
func TestMemoryLimitRoom(t *testing.T) {
	kernel := requireVM(t)
	cfg := testConfig(t, kernel, "touch")
	cfg.MemoryMiB = 256
	cfg.Cmdline += " cubemib=200"
	v := startVM(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	if err := v.WaitConsole(ctx, "CUBE-TEST-TOUCHED 200"); err != nil {
		t.Fatalf("%v; console:\n%s", err, v.Console())
	}
	st, err := v.QMP().QueryStatus(ctx)
	if err != nil || !st.Running {
		t.Fatalf("after touching 200 MiB: %+v, %v; want running", st, err)
	}
	// ReadMemoryUsage finds the guest's touched memory in QEMU's RSS.
	u, err := ReadMemoryUsage(v.Pid(), cfg.MemoryMiB)
	if err != nil || u.Guest < 200<<20 || u.Guest > int64(cfg.MemoryMiB)<<20 || u.Overhead() <= 0 || u.Anon > u.RSS {
		t.Errorf("ReadMemoryUsage = %+v, %v; want guest resident between 200 and 256 MiB, a positive overhead", u, err)
	}
	t.Logf("qemu rss %d MiB, guest resident %d MiB, overhead %d MiB", u.RSS>>20, u.Guest>>20, u.Overhead()>>20)
	dir := filepath.Join("/sys/fs/cgroup/memory", cfg.Jail.CgroupParent, "vmm")
	peak, _ := os.ReadFile(filepath.Join(dir, "memory.max_usage_in_bytes"))
	failcnt, _ := os.ReadFile(filepath.Join(dir, "memory.failcnt"))
	p, _ := strconv.ParseInt(strings.TrimSpace(string(peak)), 10, 64)
	limit := int64(cfg.MemoryMiB+vmm.DefaultMemoryOverheadMiB) << 20
	t.Logf("vmm cgroup peak %d MiB of %d MiB, failcnt %s", p>>20, limit>>20, strings.TrimSpace(string(failcnt)))
	if p == 0 || p >= limit || strings.TrimSpace(string(failcnt)) != "0" {
		t.Errorf("vmm cgroup peak %d, failcnt %s; want below the limit %d and no failures", p, failcnt, limit)
	}
}
