package runc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox"
)

// newTestSandbox builds and creates a sandbox whose containers all run on
// the busybox image; Destroy runs at cleanup (before the temp dir goes).
func newTestSandbox(t *testing.T, containers ...sandbox.ContainerSpec) (sandbox.Sandbox, sandbox.Spec) {
	t.Helper()
	return newTestSandboxWith(t, nil, containers...)
}

// newTestSandboxWith is newTestSandbox with the spec changed by edit first.
func newTestSandboxWith(t *testing.T, edit func(*sandbox.Spec), containers ...sandbox.ContainerSpec) (sandbox.Sandbox, sandbox.Spec) {
	t.Helper()
	requireRunc(t)
	id := randomID(t)
	for i := range containers {
		containers[i].RootFS = testRootFS
	}
	spec := sandbox.Spec{
		ID:           id,
		Hostname:     "host-" + id,
		StateDir:     filepath.Join(t.TempDir(), "state"),
		CgroupParent: "/cube-test/" + id,
		Containers:   containers,
	}
	if edit != nil {
		edit(&spec)
	}
	sb, err := New(spec, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sb.Destroy(ctx); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sb.Create(ctx); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return sb, spec
}

func shell(name, script string) sandbox.ContainerSpec {
	return sandbox.ContainerSpec{Name: name, Args: []string{"sh", "-c", script}}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// runToExit starts name and waits for it, returning its state and output.
func runToExit(t *testing.T, sb sandbox.Sandbox, name string) (sandbox.ContainerState, string, string) {
	t.Helper()
	ctx := testCtx(t)
	var stdout, stderr syncBuffer
	if err := sb.Start(ctx, name, sandbox.Stdio{Stdout: &stdout, Stderr: &stderr}); err != nil {
		t.Fatalf("Start(%s): %v", name, err)
	}
	st, err := sb.Wait(ctx, name)
	if err != nil {
		t.Fatalf("Wait(%s): %v", name, err)
	}
	return st, stdout.String(), stderr.String()
}

func TestRunCapturesOutputAndExitCode(t *testing.T) {
	sb, _ := newTestSandbox(t,
		shell("ok", "echo hello; echo oops >&2; id -u"),
		shell("fail", "exit 7"),
		sandbox.ContainerSpec{Name: "user", Args: []string{"id"}, User: "65534"},
	)
	st, out, errOut := runToExit(t, sb, "ok")
	if st.ExitCode != 0 || st.Phase != sandbox.PhaseExited || st.FinishedAt.IsZero() {
		t.Errorf("ok: state = %+v; want exited 0 with a finish time", st)
	}
	if out != "hello\n0\n" || errOut != "oops\n" {
		t.Errorf("ok: stdout %q stderr %q; want %q and %q", out, errOut, "hello\n0\n", "oops\n")
	}
	if st, _, _ := runToExit(t, sb, "fail"); st.ExitCode != 7 || st.Signal != 0 {
		t.Errorf("fail: exit %d signal %d; want 7, 0", st.ExitCode, st.Signal)
	}
	if _, out, _ := runToExit(t, sb, "user"); !strings.Contains(out, "uid=65534") || !strings.Contains(out, "gid=65534") {
		t.Errorf("user: id says %q; want uid=65534 gid=65534 (gid from the image's /etc/passwd)", out)
	}
}

func TestStartErrorIsExit127(t *testing.T) {
	sb, _ := newTestSandbox(t,
		sandbox.ContainerSpec{Name: "path", Args: []string{"/no/such/cmd"}},
		sandbox.ContainerSpec{Name: "lookup", Args: []string{"nosuchcmd"}},
	)
	ctx := testCtx(t)
	for name, want := range map[string]string{"path": "no such file", "lookup": "executable file not found"} {
		var stderr syncBuffer
		err := sb.Start(ctx, name, sandbox.Stdio{Stderr: &stderr})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Start(%s) = %v; want an error saying %q", name, err, want)
		}
		st, err := sb.Wait(ctx, name)
		if err != nil || st.ExitCode != 127 || st.Phase != sandbox.PhaseExited {
			t.Errorf("Wait(%s) = %+v, %v; want exited 127", name, st, err)
		}
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr of %s = %q; want runc's message (it lands in the container log)", name, stderr.String())
		}
	}
}

func TestStopEscalatesToKill(t *testing.T) {
	sb, _ := newTestSandbox(t,
		shell("polite", `trap "exit 0" TERM; echo ready; while true; do sleep 0.1; done`),
		sandbox.ContainerSpec{Name: "stubborn", Args: []string{"sleep", "1000"}},
	)
	ctx := testCtx(t)
	var ready syncBuffer
	for _, name := range []string{"polite", "stubborn"} {
		if err := sb.Start(ctx, name, sandbox.Stdio{Stdout: &ready}); err != nil {
			t.Fatalf("Start(%s): %v", name, err)
		}
	}
	for ready.String() == "" && ctx.Err() == nil { // the trap is installed
		time.Sleep(10 * time.Millisecond)
	}
	if err := sb.Stop(ctx, "polite", 10*time.Second); err != nil {
		t.Fatalf("Stop(polite): %v", err)
	}
	if st, _ := sb.Wait(ctx, "polite"); st.ExitCode != 0 {
		t.Errorf("polite exit = %d; want 0 (it traps SIGTERM)", st.ExitCode)
	}
	// sleep as PID 1 has no SIGTERM handler, so only SIGKILL ends it.
	if err := sb.Stop(ctx, "stubborn", 200*time.Millisecond); err != nil {
		t.Fatalf("Stop(stubborn): %v", err)
	}
	if st, _ := sb.Wait(ctx, "stubborn"); st.ExitCode != 137 || st.Signal != 9 {
		t.Errorf("stubborn exit = %d signal %d; want 137, 9", st.ExitCode, st.Signal)
	}
	if err := sb.Stop(ctx, "stubborn", time.Second); err != nil {
		t.Errorf("Stop of a stopped container = %v; want nil", err)
	}
}

// TestSharedNamespaces proves the built-in infra: without any pause
// container, two containers share hostname, IPC and network namespace.
func TestSharedNamespaces(t *testing.T) {
	sb, spec := newTestSandbox(t,
		shell("server", "hostname; for n in ipc net pid; do readlink /proc/self/ns/$n; done; nc -l -p 9000"),
		shell("client", `hostname; for n in ipc net pid; do readlink /proc/self/ns/$n; done
			for i in $(seq 50); do echo ping | nc 127.0.0.1 9000 && exit 0; sleep 0.1; done; exit 1`),
	)
	ctx := testCtx(t)
	var server syncBuffer
	if err := sb.Start(ctx, "server", sandbox.Stdio{Stdout: &server, Stderr: &server}); err != nil {
		t.Fatalf("Start(server): %v", err)
	}
	st, client, _ := runToExit(t, sb, "client")
	if st.ExitCode != 0 {
		t.Fatalf("client could not reach the server on 127.0.0.1:9000: exit %d", st.ExitCode)
	}
	if st, err := sb.Wait(ctx, "server"); err != nil || st.ExitCode != 0 {
		t.Fatalf("server = %+v, %v; want exit 0 after one connection", st, err)
	}
	s, c := strings.Fields(server.String()), strings.Fields(client)
	if len(s) != 5 || len(c) != 4 {
		t.Fatalf("unexpected output: server %q client %q", server.String(), client)
	}
	if s[0] != spec.Hostname || c[0] != spec.Hostname {
		t.Errorf("hostnames %q, %q; want both %q", s[0], c[0], spec.Hostname)
	}
	if s[1] != c[1] || s[2] != c[2] {
		t.Errorf("ipc/net namespaces differ: server %v client %v", s[1:3], c[1:3])
	}
	if s[3] == c[3] {
		t.Errorf("pid namespace %s is shared; want one per container", s[3])
	}
	if s[4] != "ping" {
		t.Errorf("server received %q; want ping", s[4])
	}
}

func TestMemoryLimitOOMKills(t *testing.T) {
	sb, _ := newTestSandbox(t, sandbox.ContainerSpec{Name: "hog", Args: []string{"tail", "/dev/zero"}, MemoryBytes: 32 << 20})
	st, _, _ := runToExit(t, sb, "hog")
	if !st.OOMKilled || st.ExitCode != 137 {
		t.Errorf("hog = %+v; want OOMKilled with exit 137", st)
	}
}

func TestResourcesReachCgroups(t *testing.T) {
	sb, spec := newTestSandbox(t, sandbox.ContainerSpec{Name: "c", Args: []string{"sleep", "1000"}, MilliCPU: 250, MemoryBytes: 64 << 20})
	ctx := testCtx(t)
	if err := sb.Start(ctx, "c", sandbox.Stdio{}); err != nil {
		t.Fatal(err)
	}
	path := cgroupsPath(spec, "c")
	for file, want := range map[string]string{
		"/sys/fs/cgroup/cpu" + path + "/cpu.cfs_quota_us":               "25000",
		"/sys/fs/cgroup/cpu" + path + "/cpu.cfs_period_us":              "100000",
		"/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes":       strconv.Itoa(64 << 20),
		"/sys/fs/cgroup/memory" + path + "/memory.memsw.limit_in_bytes": strconv.Itoa(64 << 20),
	} {
		b, err := os.ReadFile(file)
		if errors.Is(err, os.ErrNotExist) && strings.Contains(file, "memsw") {
			continue // no swap accounting on this kernel
		}
		if got := strings.TrimSpace(string(b)); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", file, got, err, want)
		}
	}
}

func TestExec(t *testing.T) {
	sb, _ := newTestSandbox(t, sandbox.ContainerSpec{Name: "c", Args: []string{"sleep", "1000"}, Env: []string{"FROM_SPEC=1"}})
	ctx := testCtx(t)
	if _, err := sb.Exec(ctx, "c", sandbox.ExecSpec{Args: []string{"true"}}, sandbox.Stdio{}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Exec before Start = %v; want errdefs.ErrConflict (container not running)", err)
	}
	if _, err := sb.Exec(ctx, "nope", sandbox.ExecSpec{Args: []string{"true"}}, sandbox.Stdio{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Exec in unknown container = %v; want errdefs.ErrNotFound", err)
	}
	if err := sb.Start(ctx, "c", sandbox.Stdio{}); err != nil {
		t.Fatal(err)
	}
	t.Run("pipes", func(t *testing.T) {
		var out, errOut syncBuffer
		code, err := sb.Exec(ctx, "c", sandbox.ExecSpec{
			Args: []string{"sh", "-c", `read line; echo "got $line $FROM_SPEC $EXTRA"; echo e >&2; exit 3`},
			Env:  []string{"EXTRA=x"},
		}, sandbox.Stdio{Stdin: strings.NewReader("hi\n"), Stdout: &out, Stderr: &errOut})
		if err != nil || code != 3 {
			t.Errorf("Exec = %d, %v; want 3, nil", code, err)
		}
		if out.String() != "got hi 1 x\n" || errOut.String() != "e\n" {
			t.Errorf("stdout %q stderr %q; want %q, %q", out.String(), errOut.String(), "got hi 1 x\n", "e\n")
		}
	})
	t.Run("tty", func(t *testing.T) {
		resize := make(chan sandbox.WindowSize, 1)
		resize <- sandbox.WindowSize{Rows: 40, Cols: 100}
		var out syncBuffer
		code, err := sb.Exec(ctx, "c", sandbox.ExecSpec{
			Args: []string{"sh", "-c", "sleep 0.5; tty; stty size; echo $TERM; exit 5"}, TTY: true, Resize: resize,
		}, sandbox.Stdio{Stdout: &out})
		if err != nil || code != 5 {
			t.Errorf("Exec(tty) = %d, %v; want 5, nil", code, err)
		}
		got := strings.ReplaceAll(out.String(), "\r\n", "\n")
		if !strings.Contains(got, "/dev/pts/") || !strings.Contains(got, "40 100\n") || !strings.Contains(got, "xterm\n") {
			t.Errorf("tty output %q; want a /dev/pts name, size 40 100 and TERM=xterm", got)
		}
	})
	t.Run("cancel kills", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		code, err := sb.Exec(cctx, "c", sandbox.ExecSpec{Args: []string{"sleep", "1000"}}, sandbox.Stdio{})
		if !errors.Is(err, context.DeadlineExceeded) || code != 137 {
			t.Errorf("Exec(cancelled) = %d, %v; want 137 and a deadline error", code, err)
		}
	})
}

// TestRestartKeepsWritableLayer restarts an exited container: the files it
// wrote stay (like docker), the image below is untouched.
func TestRestartKeepsWritableLayer(t *testing.T) {
	sb, _ := newTestSandbox(t, shell("c", "echo run >> /runs; wc -l < /runs"))
	for want := 1; want <= 3; want++ {
		st, out, _ := runToExit(t, sb, "c")
		if st.ExitCode != 0 || strings.TrimSpace(out) != strconv.Itoa(want) {
			t.Errorf("run %d: exit %d output %q; want 0, %d", want, st.ExitCode, out, want)
		}
	}
	if _, err := os.Stat(filepath.Join(testRootFS, "runs")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the container wrote into the shared image: stat = %v", err)
	}
}

// TestDestroyLeavesNothing checks every kind of trace: processes, mounts,
// pinned namespaces, cgroups and state files.
func TestDestroyLeavesNothing(t *testing.T) {
	sb, spec := newTestSandbox(t, sandbox.ContainerSpec{Name: "a", Args: []string{"sleep", "1000"}, MemoryBytes: 64 << 20, MilliCPU: 100}, shell("b", "sleep 1000"))
	ctx := testCtx(t)
	var pids []int
	for _, name := range []string{"a", "b"} {
		if err := sb.Start(ctx, name, sandbox.Stdio{}); err != nil {
			t.Fatal(err)
		}
	}
	states, _ := sb.State(ctx)
	for _, st := range states {
		if st.Phase != sandbox.PhaseRunning || st.Pid == 0 {
			t.Fatalf("state %+v; want running with a pid", st)
		}
		pids = append(pids, st.Pid)
	}
	execDone := make(chan error, 1)
	go func() {
		_, err := sb.Exec(ctx, "a", sandbox.ExecSpec{Args: []string{"sleep", "1000"}}, sandbox.Stdio{})
		execDone <- err
	}()
	time.Sleep(300 * time.Millisecond)
	for range 2 { // idempotent
		if err := sb.Destroy(ctx); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
	}
	if err := <-execDone; err != nil {
		t.Logf("exec ended with %v", err)
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			t.Errorf("pid %d still exists after Destroy (kill 0 = %v)", pid, err)
		}
	}
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mountinfo), spec.StateDir) {
		t.Errorf("mounts under %s remain:\n%s", spec.StateDir, mountinfo)
	}
	if _, err := os.Stat(spec.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir remains: %v", err)
	}
	ms, _ := cgroupMounts()
	for _, m := range ms {
		if _, err := os.Stat(filepath.Join(m.point, spec.CgroupParent)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s remains in %s", spec.CgroupParent, m.point)
		}
	}
	if err := sb.Start(ctx, "a", sandbox.Stdio{}); err == nil {
		t.Error("Start after Destroy succeeded; want an error")
	}
}

func TestNodeNetNSIsJoinedNotRemoved(t *testing.T) {
	requireRunc(t)
	pin := filepath.Join(t.TempDir(), "netns")
	if err := pinNamespaces("", nsPins{net: pin}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unpinNamespace(pin) })
	// pinNamespaces also made throwaway ipc/uts namespaces on its thread
	// (none pinned), which is harmless.
	target, _ := os.Readlink("/proc/self/ns/net")
	sb := func() sandbox.Sandbox {
		id := randomID(t)
		spec := sandbox.Spec{ID: id, Hostname: "h", NetNS: pin, StateDir: filepath.Join(t.TempDir(), "s"), CgroupParent: "/cube-test/" + id,
			Containers: []sandbox.ContainerSpec{{Name: "c", RootFS: testRootFS, Args: []string{"readlink", "/proc/self/ns/net"}}}}
		sb, err := New(spec, Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sb.Destroy(context.Background()) })
		if err := sb.Create(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		return sb
	}()
	st, out, _ := runToExit(t, sb, "c")
	var stat unix.Stat_t
	unix.Stat(pin, &stat)
	if want := "net:[" + strconv.FormatUint(stat.Ino, 10) + "]"; st.ExitCode != 0 || strings.TrimSpace(out) != want || want == target {
		t.Errorf("container netns %q; want the node's %s (host is %s)", out, want, target)
	}
	if err := sb.Destroy(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if ok, _ := isMountPoint(pin); !ok {
		t.Error("Destroy unpinned the node's network namespace; it belongs to the node")
	}
}

// TestSharedShmAndIdempotentCreate: /dev/shm is one tmpfs for the whole
// sandbox (POSIX shared memory works across containers, as with a pod's
// shared IPC), and a second Create changes nothing.
func TestSharedShmAndIdempotentCreate(t *testing.T) {
	sb, spec := newTestSandbox(t, shell("writer", "echo shared > /dev/shm/x"), shell("reader", "cat /dev/shm/x"))
	before, _ := mountsUnder(spec.StateDir)
	if err := sb.Create(testCtx(t)); err != nil {
		t.Fatalf("second Create: %v", err)
	}
	if after, _ := mountsUnder(spec.StateDir); len(after) != len(before) {
		t.Errorf("second Create changed the mounts: %v -> %v", before, after)
	}
	runToExit(t, sb, "writer")
	if st, out, _ := runToExit(t, sb, "reader"); st.ExitCode != 0 || out != "shared\n" {
		t.Errorf("reader: exit %d output %q; want the writer's /dev/shm/x", st.ExitCode, out)
	}
}

// cgroupProcs lists the processes in a container's cgroup (pids hierarchy).
func cgroupProcs(t *testing.T, spec sandbox.Spec, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids", cgroupsPath(spec, name), "cgroup.procs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// TestCreateRunsNothingOfTheImage: Create has runc create the container
// ahead of Start, but the command runs only after Start, under its CPU limit.
func TestCreateRunsNothingOfTheImage(t *testing.T) {
	sb, spec := newTestSandbox(t, sandbox.ContainerSpec{Name: "c", Args: []string{"sh", "-c", "touch /ran; exec sleep 1000"}, MilliCPU: 100})
	if procs := cgroupProcs(t, spec, "c"); len(procs) != 1 {
		t.Errorf("processes in the container's cgroup after Create = %v; want runc's waiting init alone", procs)
	}
	time.Sleep(200 * time.Millisecond)
	marker := filepath.Join(spec.StateDir, "disk", "containers", "c", "upper", "ran")
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the command ran before Start: stat %s = %v", marker, err)
	}
	quota := filepath.Join("/sys/fs/cgroup/cpu", cgroupsPath(spec, "c"), "cpu.cfs_quota_us")
	if b, _ := os.ReadFile(quota); strings.TrimSpace(string(b)) != "-1" {
		t.Errorf("cpu quota before Start = %q; want -1 (runc's init is not throttled)", b)
	}
	ctx := testCtx(t)
	if err := sb.Start(ctx, "c", sandbox.Stdio{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(quota); strings.TrimSpace(string(b)) != "10000" {
		t.Errorf("cpu quota after Start = %q; want 10000", b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command did not run after Start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStopBeforeStartKillsTheCreatedInit: a container stopped before its
// first Start leaves no process behind, and a later Start runs it afresh.
func TestStopBeforeStartKillsTheCreatedInit(t *testing.T) {
	sb, spec := newTestSandbox(t, shell("c", "echo fresh"))
	ctx := testCtx(t)
	if err := sb.Stop(ctx, "c", time.Second); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	if procs := cgroupProcs(t, spec, "c"); len(procs) != 0 {
		t.Errorf("processes in the container's cgroup after Stop = %v; want none", procs)
	}
	st, out, _ := runToExit(t, sb, "c")
	if st.ExitCode != 0 || out != "fresh\n" {
		t.Errorf("Start after Stop: exit %d, output %q; want 0, %q", st.ExitCode, out, "fresh\n")
	}
}

// TestDestroyBeforeStart: the inits Create made go with Destroy.
func TestDestroyBeforeStart(t *testing.T) {
	sb, spec := newTestSandbox(t, sandbox.ContainerSpec{Name: "a", Args: []string{"sleep", "1000"}}, shell("b", "sleep 1000"))
	var pids []int
	for _, name := range []string{"a", "b"} {
		for _, p := range cgroupProcs(t, spec, name) {
			pid, _ := strconv.Atoi(p)
			pids = append(pids, pid)
		}
	}
	if len(pids) != 2 {
		t.Fatalf("created inits = %v; want one per container", pids)
	}
	if err := sb.Destroy(testCtx(t)); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			t.Errorf("created init %d still exists after Destroy (kill 0 = %v)", pid, err)
		}
	}
	if _, err := os.Stat(spec.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir remains: %v", err)
	}
}

// TestCreateRemovesContainersOfADeadShim builds a second sandbox on the
// state of a first whose container still runs, as a shim started after a
// SIGKILLed one does: Create kills and deletes the orphan, the container
// starts again under its id, and its writable layer is kept.
func TestCreateRemovesContainersOfADeadShim(t *testing.T) {
	first, spec := newTestSandbox(t, shell("app", "cat /kept 2>/dev/null; echo kept >/kept; echo up; exec sleep 1000"))
	ctx := testCtx(t)
	var out1 syncBuffer
	if err := first.Start(ctx, "app", sandbox.Stdio{Stdout: &out1}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	for !strings.Contains(out1.String(), "up") && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	states, _ := first.State(ctx)
	orphan := states[0].Pid
	if orphan == 0 {
		t.Fatalf("state %+v; want a pid", states)
	}

	second, err := New(spec, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := second.Destroy(context.Background()); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	if err := second.Create(ctx); err != nil {
		t.Fatalf("Create over a live orphan: %v", err)
	}
	if unix.Kill(orphan, 0) == nil {
		t.Errorf("orphaned container init %d still runs after Create", orphan)
	}
	var out2 syncBuffer
	if err := second.Start(ctx, "app", sandbox.Stdio{Stdout: &out2}); err != nil {
		t.Fatalf("Start after Create: %v", err)
	}
	for !strings.Contains(out2.String(), "up") && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if out2.String() != "kept\nup\n" {
		t.Errorf("second run printed %q; want the writable layer kept (%q)", out2.String(), "kept\nup\n")
	}
	if procs := cgroupProcs(t, spec, "app"); len(procs) != 1 {
		t.Errorf("cgroup of app holds %v; want one process", procs)
	}
}
