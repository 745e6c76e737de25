package agent

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
)

// TestStartOutputExit: a declared container starts, its stdout and
// stderr reach the host apart, and its exit code comes back from Wait.
func TestStartOutputExit(t *testing.T) {
	vm := startAgent(t)
	info, err := vm.c.Hello(ctx(t))
	if err != nil {
		t.Fatalf("Hello: %v", err)
	}
	if info.KernelRelease == "" || info.SetupDone {
		t.Errorf("Hello = %+v; want a kernel release and setup not done", info)
	}
	if err := vm.c.Setup(ctx(t), baseSetup(sh("app", "echo out; echo err >&2; exit 3"))); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	p := agentapi.Process{Container: "app"}
	if _, err := vm.c.Start(ctx(t), "app"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if got := readAll(t, vm, p, agentapi.Stream_STREAM_STDOUT); got != "out\n" {
		t.Errorf("stdout = %q; want %q", got, "out\n")
	}
	if got := readAll(t, vm, p, agentapi.Stream_STREAM_STDERR); got != "err\n" {
		t.Errorf("stderr = %q; want %q", got, "err\n")
	}
	st, err := vm.c.Wait(ctx(t), p)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if st.Code != 3 || st.Signal != 0 || st.OOMKilled {
		t.Errorf("Wait = %+v; want exit code 3", st)
	}
	if st.Finished.Before(st.Started) || st.Started.IsZero() {
		t.Errorf("Wait = %+v; want started <= finished", st)
	}
}

// TestContainerEnvironment: the container sees the VM's network as Setup
// configured it (shared network namespace), its hostname, resolv.conf
// and its own PID namespace, and its root is the image's; it holds only
// its bounded capabilities and no fd of its init's.
func TestContainerEnvironment(t *testing.T) {
	vm := startAgent(t)
	script := `cat /sys/class/net/eth0/address; cat /sys/class/net/eth0/mtu; ip -4 addr show eth0 | grep -o 'inet [0-9./]*'; ip route | grep -c 'via 10.88.0.1'; hostname; cat /etc/resolv.conf; tr "\\0" "\\n" < /proc/1/cmdline; ls /bin/busybox; touch /newfile && echo writable; grep -E "^(CapBnd|NoNewPrivs)" /proc/self/status; echo x > /proc/sys/kernel/core_pattern || echo sysctl-ro; test -s /proc/kcore || echo kcore-masked; mknod /tmp/vda b 254 0 || echo no-mknod; cat /proc/sys/net/ipv4/ping_group_range; echo sockets=$(ls -l /proc/$$/fd | grep -c socket:); echo oom=$(cat /proc/self/oom_score_adj) init-oom=$(cat /proc/1/oom_score_adj)`
	if err := vm.c.Setup(ctx(t), baseSetup(sh("app", script))); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if _, err := vm.c.Start(ctx(t), "app"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	p := agentapi.Process{Container: "app"}
	got := readAll(t, vm, p, agentapi.Stream_STREAM_STDOUT)
	errOut := readAll(t, vm, p, agentapi.Stream_STREAM_STDERR)
	for _, want := range []string{"02:00:0a:58:00:05\n", "1400\n", "inet 10.88.0.5/24\n", "2\n", "vm-test\n", "nameserver 10.88.0.1\n", "search default.svc.cube\n", "cube-init:app\n", "/bin/busybox\n", "writable\n",
		// Docker's default capabilities without CAP_NET_RAW (as runc's)
		// and CAP_MKNOD (the guest has no device cgroup).
		"CapBnd:\t00000000a00405fb\n", "sysctl-ro\n", "kcore-masked\n", "no-mknod\n", "NoNewPrivs:\t1\n", "0\t2147483647\n",
		// The init's channel to the agent stays in the init; the OOM
		// killer picks the container's process, not its init.
		"sockets=0\n", "oom=0 init-oom=" + initOOM(t) + "\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("container output lacks %q:\n%s\nstderr: %s", want, got, errOut)
		}
	}
	if st, err := vm.c.Wait(ctx(t), p); err != nil || st.Code != 0 {
		t.Errorf("Wait = %+v, %v; want exit 0", st, err)
	}
}

// initOOM is the container init's oom_score_adj: -1000, when the agent may
// lower it (CAP_SYS_RESOURCE: a VM's init has it, some test hosts do not).
func initOOM(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "CapEff:\t"); ok {
			if caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && caps&(1<<unix.CAP_SYS_RESOURCE) == 0 {
				t.Log("no CAP_SYS_RESOURCE here: the init cannot lower its oom_score_adj")
				return "0"
			}
		}
	}
	return "-1000"
}

// TestSetupOnce: a second Setup is refused, whatever it says.
func TestSetupOnce(t *testing.T) {
	vm := startAgent(t)
	if err := vm.c.Setup(ctx(t), baseSetup(sh("app", "true"))); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	err := vm.c.Setup(ctx(t), baseSetup(sh("app", "true"), sh("evil", "true")))
	if !errors.Is(err, errdefs.ErrForbidden) {
		t.Fatalf("second Setup = %v; want ErrForbidden", err)
	}
	info, err := vm.c.Hello(ctx(t))
	if err != nil || !info.SetupDone {
		t.Errorf("Hello after Setup = %+v, %v; want setup done", info, err)
	}
}

// TestDriveMounts: Setup mounts the image drive read-only and the
// writable ext4 drive with noinit_itable (the host made it with lazy
// inode tables; without the option the guest kernel zeroes them after
// the mount, during the container's start).
func TestDriveMounts(t *testing.T) {
	vm := startAgent(t)
	if err := vm.c.Setup(ctx(t), baseSetup(sh("app", "true"))); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mounts", vm.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var rw, img []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[1], vm.state+"/") {
			continue
		}
		switch {
		case f[2] == "ext4":
			rw = strings.Split(f[3], ",")
		case f[2] == "erofs":
			img = strings.Split(f[3], ",")
		}
	}
	if !slices.Contains(rw, "noinit_itable") || !slices.Contains(rw, "rw") {
		t.Errorf("writable drive mount options %v; want rw and noinit_itable\n%s", rw, b)
	}
	if !slices.Contains(img, "ro") {
		t.Errorf("image drive mount options %v; want ro\n%s", img, b)
	}
}

// TestUndeclaredRefused: calls before Setup, and calls naming a container
// Setup did not declare, are refused; the agent keeps serving.
func TestUndeclaredRefused(t *testing.T) {
	vm := startAgent(t)
	if _, err := vm.c.Start(ctx(t), "app"); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Start before Setup = %v; want ErrConflict", err)
	}
	if err := vm.c.Setup(ctx(t), baseSetup(sh("app", "sleep 1000"))); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if _, err := vm.c.Start(ctx(t), "other"); !errors.Is(err, errdefs.ErrForbidden) {
		t.Errorf("Start(undeclared) = %v; want ErrForbidden", err)
	}
	exec := &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "other", ExecId: "e1"}, Args: []string{"true"}}
	if err := vm.c.Exec(ctx(t), exec); !errors.Is(err, errdefs.ErrForbidden) {
		t.Errorf("Exec(undeclared) = %v; want ErrForbidden", err)
	}
	if err := vm.c.Signal(ctx(t), agentapi.Process{Container: "other"}, syscall.SIGKILL); !errors.Is(err, errdefs.ErrForbidden) {
		t.Errorf("Signal(undeclared) = %v; want ErrForbidden", err)
	}
	if _, err := vm.c.Start(ctx(t), "app"); err != nil {
		t.Fatalf("Start(app): %v", err)
	}
	if _, err := vm.c.Start(ctx(t), "app"); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Start(running) = %v; want ErrConflict", err)
	}
	if err := vm.c.Signal(ctx(t), agentapi.Process{Container: "app"}, syscall.SIGKILL); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	if st, err := vm.c.Wait(ctx(t), agentapi.Process{Container: "app"}); err != nil || st.Signal != syscall.SIGKILL {
		t.Errorf("Wait = %+v, %v; want killed by SIGKILL", st, err)
	}
}

// TestTwoContainers: two containers of one VM reach each other on
// localhost (one network namespace) and each has its own filesystem.
func TestTwoContainers(t *testing.T) {
	vm := startAgent(t)
	server := sh("server", "touch /only-server; echo hi-from-server | nc -l -p 8080")
	client := sh("client", "test -e /only-server && echo shared-fs; until nc 127.0.0.1 8080 </dev/null; do sleep 0.05; done")
	if err := vm.c.Setup(ctx(t), baseSetup(server, client)); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	for _, n := range []string{"server", "client"} {
		if _, err := vm.c.Start(ctx(t), n); err != nil {
			t.Fatalf("Start(%s): %v", n, err)
		}
	}
	got := readAll(t, vm, agentapi.Process{Container: "client"}, agentapi.Stream_STREAM_STDOUT)
	if got != "hi-from-server\n" {
		t.Errorf("client printed %q; want the server's line over localhost and no shared file", got)
	}
	// One WaitAny at a time, over the processes still running, sees both.
	left := []agentapi.Process{{Container: "server"}, {Container: "client"}}
	for len(left) > 0 {
		p, st, err := vm.c.WaitAny(ctx(t), left...)
		if err != nil || st.Code != 0 {
			t.Fatalf("WaitAny(%v) = %v, %+v, %v; want an exit 0", left, p, st, err)
		}
		n := len(left)
		left = slices.DeleteFunc(left, func(q agentapi.Process) bool { return q == p })
		if len(left) != n-1 {
			t.Fatalf("WaitAny returned %v, not one of those asked", p)
		}
	}
}

// TestBootIDAfterSetup: Hello answers no boot id before Setup (the kernel
// makes it from the RNG on first read, which Setup reseeds first), and
// the kernel's after it.
func TestBootIDAfterSetup(t *testing.T) {
	vm := startAgent(t)
	info, err := vm.c.Hello(ctx(t))
	if err != nil || info.BootID != "" {
		t.Fatalf("Hello before Setup = %+v, %v; want no boot id", info, err)
	}
	if err := vm.c.Setup(ctx(t), baseSetup(sh("app", "true"))); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	want, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := vm.c.Hello(ctx(t)); err != nil || info.BootID != strings.TrimSpace(string(want)) {
		t.Errorf("Hello after Setup = %+v, %v; want boot id %q", info, err, strings.TrimSpace(string(want)))
	}
}

// TestResumeRefused: Resume before Setup is refused, as is one that
// breaks the bounds (sent raw, past the client's own check); after Setup
// a valid one is served.
func TestResumeRefused(t *testing.T) {
	vm := startAgent(t)
	now := time.Now().UnixNano()
	if err := vm.c.Resume(ctx(t), now, make([]byte, 32)); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Resume before Setup = %v; want ErrConflict", err)
	}
	if err := vm.c.Setup(ctx(t), baseSetup(sh("app", "true"))); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	svc := agentapi.NewAgentClient(rawClient(t, vm))
	for _, bad := range []*agentapi.ResumeRequest{
		{TimeUnixNano: now, Entropy: make([]byte, 31)},
		{TimeUnixNano: now, Entropy: make([]byte, 257)},
		{Entropy: make([]byte, 32)},
	} {
		_, err := svc.Resume(ctx(t), bad)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "resume") && !strings.Contains(err.Error(), "entropy") && !strings.Contains(err.Error(), "time") {
			t.Errorf("raw Resume(%d bytes, time %d) = %v; want ErrInvalid", len(bad.Entropy), bad.TimeUnixNano, err)
		}
	}
	if err := vm.c.Resume(ctx(t), now, make([]byte, 32)); err != nil {
		t.Errorf("Resume after Setup: %v", err)
	}
}
