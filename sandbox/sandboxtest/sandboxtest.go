// Package sandboxtest is the conformance suite of sandbox.Sandbox: every
// backend runs it (sandbox/runc, sandbox/microvm), the way containerd's
// content stores run core/content/testsuite. It checks the contract the
// shim relies on — output, exit codes, exec with and without a TTY, stop
// and kill, restarts that keep the writable layer, memory, pids and disk
// bounds, a new owner cleaning up after a dead one, and Destroy leaving
// nothing — through the interface alone. What only one backend can see
// (cgroup files, runc state, QMP) stays in that backend's own tests.
package sandboxtest

import (
	"bytes"
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
	"sync"
	"testing"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox"
)

// Harness is what a backend gives the suite.
type Harness struct {
	// New builds the backend's sandbox for spec; it must not Create it.
	// The suite has filled ID, Hostname, StateDir, CgroupParent and every
	// container's RootFS (with Image below); New may set more (a VM's
	// sizes), never change those.
	New func(t *testing.T, spec sandbox.Spec) (sandbox.Sandbox, error)
	// Image is the busybox image (see Busybox) as the backend runs it.
	Image sandbox.RootFS
	// HostPids lists the host processes that belong to spec's sandbox now:
	// the containers' processes, or the VMM. Destroy must leave none.
	HostPids func(t *testing.T, spec sandbox.Spec) []int
	// Traces lists whatever else of spec's sandbox is on the host (mounts,
	// cgroups, devices, sockets, files), each as a line for a message.
	// Destroy must leave none.
	Traces func(t *testing.T, spec sandbox.Spec) []string
	// Crash ends sb the way the death of its owner (the shim, SIGKILLed)
	// does, without Destroy: whatever a real crash leaves is left.
	Crash func(t *testing.T, sb sandbox.Sandbox, spec sandbox.Spec)
	// Timeout bounds each step (a VM boots slowly under TCG). Default 60s.
	Timeout time.Duration
}

// Run runs the whole suite against h.
func Run(t *testing.T, h Harness) {
	if h.Timeout == 0 {
		h.Timeout = 60 * time.Second
	}
	s := &suite{h: h}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"OutputAndExitCode", s.outputAndExitCode},
		{"StartErrorIsExit127", s.startErrorIsExit127},
		{"StopEscalatesToKill", s.stopEscalatesToKill},
		{"SharedNamespaces", s.sharedNamespaces},
		{"MemoryLimitOOMKills", s.memoryLimitOOMKills},
		{"Exec", s.exec},
		{"RestartKeepsWritableLayer", s.restartKeepsWritableLayer},
		{"DiskBound", s.diskBound},
		{"PidsBound", s.pidsBound},
		{"IdempotentCreateAndSharedShm", s.idempotentCreateAndSharedShm},
		{"StopBeforeStart", s.stopBeforeStart},
		{"DestroyBeforeStart", s.destroyBeforeStart},
		{"DestroyLeavesNothing", s.destroyLeavesNothing},
		{"CreateCleansUpAfterADeadOwner", s.createCleansUpAfterADeadOwner},
	} {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct{ h Harness }

// Shell is a container running script under busybox sh.
func Shell(name, script string) sandbox.ContainerSpec {
	return sandbox.ContainerSpec{Name: name, Args: []string{"sh", "-c", script}}
}

// newSandbox builds and creates a sandbox of containers on the test image;
// Destroy runs at cleanup.
func (s *suite) newSandbox(t *testing.T, edit func(*sandbox.Spec), containers ...sandbox.ContainerSpec) (sandbox.Sandbox, sandbox.Spec) {
	t.Helper()
	spec := s.spec(t, edit, containers...)
	sb := s.build(t, spec)
	ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
	defer cancel()
	if err := sb.Create(ctx); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return sb, spec
}

func (s *suite) spec(t *testing.T, edit func(*sandbox.Spec), containers ...sandbox.ContainerSpec) sandbox.Spec {
	t.Helper()
	id := RandomID()
	for i := range containers {
		containers[i].RootFS = s.h.Image
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
	return spec
}

// build is New with a Destroy at cleanup.
func (s *suite) build(t *testing.T, spec sandbox.Spec) sandbox.Sandbox {
	t.Helper()
	sb, err := s.h.New(t, spec)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.h.Timeout)
		defer cancel()
		if err := sb.Destroy(ctx); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	return sb
}

func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.h.Timeout)
	t.Cleanup(cancel)
	return ctx
}

// runToExit starts name and waits for it, returning its state and output.
func (s *suite) runToExit(t *testing.T, sb sandbox.Sandbox, name string) (sandbox.ContainerState, string, string) {
	t.Helper()
	ctx := s.ctx(t)
	var stdout, stderr Buffer
	if err := sb.Start(ctx, name, sandbox.Stdio{Stdout: &stdout, Stderr: &stderr}); err != nil {
		t.Fatalf("Start(%s): %v", name, err)
	}
	st, err := sb.Wait(ctx, name)
	if err != nil {
		t.Fatalf("Wait(%s): %v", name, err)
	}
	return st, stdout.String(), stderr.String()
}

func (s *suite) outputAndExitCode(t *testing.T) {
	sb, _ := s.newSandbox(t, nil,
		Shell("ok", "echo hello; echo oops >&2; id -u"),
		Shell("fail", "exit 7"),
		sandbox.ContainerSpec{Name: "user", Args: []string{"id"}, User: "65534"},
		sandbox.ContainerSpec{Name: "env", Args: []string{"sh", "-c", "echo $GREETING; pwd; echo $HOME"}, Env: []string{"GREETING=hi there"}, WorkingDir: "/tmp"},
	)
	st, out, errOut := s.runToExit(t, sb, "ok")
	if st.ExitCode != 0 || st.Phase != sandbox.PhaseExited || st.FinishedAt.IsZero() || st.StartedAt.IsZero() {
		t.Errorf("ok: state = %+v; want exited 0 with start and finish times", st)
	}
	if out != "hello\n0\n" || errOut != "oops\n" {
		t.Errorf("ok: stdout %q stderr %q; want %q and %q", out, errOut, "hello\n0\n", "oops\n")
	}
	if st, _, _ := s.runToExit(t, sb, "fail"); st.ExitCode != 7 || st.Signal != 0 || st.OOMKilled {
		t.Errorf("fail: %+v; want exit 7, no signal", st)
	}
	if _, out, _ := s.runToExit(t, sb, "user"); !strings.Contains(out, "uid=65534") || !strings.Contains(out, "gid=65534") {
		t.Errorf("user: id says %q; want uid=65534 gid=65534 (gid from the image's /etc/passwd)", out)
	}
	if _, out, _ := s.runToExit(t, sb, "env"); out != "hi there\n/tmp\n/root\n" {
		t.Errorf("env: %q; want the spec's env and working dir, and HOME from the image's passwd (as runc sets it)", out)
	}
}

func (s *suite) startErrorIsExit127(t *testing.T) {
	sb, _ := s.newSandbox(t, nil,
		sandbox.ContainerSpec{Name: "path", Args: []string{"/no/such/cmd"}},
		sandbox.ContainerSpec{Name: "lookup", Args: []string{"nosuchcmd"}},
	)
	ctx := s.ctx(t)
	for name, want := range map[string]string{"path": "no such file", "lookup": "not found"} {
		var stderr Buffer
		err := sb.Start(ctx, name, sandbox.Stdio{Stderr: &stderr})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Start(%s) = %v; want an error saying %q", name, err, want)
		}
		st, err := sb.Wait(ctx, name)
		if err != nil || st.ExitCode != 127 || st.Phase != sandbox.PhaseExited {
			t.Errorf("Wait(%s) = %+v, %v; want exited 127", name, st, err)
		}
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr of %s = %q; want the reason (it lands in the container log)", name, stderr.String())
		}
	}
}

func (s *suite) stopEscalatesToKill(t *testing.T) {
	sb, _ := s.newSandbox(t, nil,
		Shell("polite", `trap "exit 0" TERM; echo ready; while true; do sleep 0.1; done`),
		Shell("stubborn", `trap "" TERM; echo ready; while true; do sleep 0.1; done`),
	)
	ctx := s.ctx(t)
	var ready Buffer
	for _, name := range []string{"polite", "stubborn"} {
		if err := sb.Start(ctx, name, sandbox.Stdio{Stdout: &ready}); err != nil {
			t.Fatalf("Start(%s): %v", name, err)
		}
	}
	WaitFor(t, ctx, "the TERM traps to be installed", func() bool { return ready.String() == "ready\nready\n" })
	if err := sb.Stop(ctx, "polite", 10*time.Second); err != nil {
		t.Fatalf("Stop(polite): %v", err)
	}
	if st, _ := sb.Wait(ctx, "polite"); st.ExitCode != 0 {
		t.Errorf("polite exit = %d; want 0 (it traps SIGTERM)", st.ExitCode)
	}
	// It ignores SIGTERM, so only SIGKILL ends it.
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

// sharedNamespaces is the built-in infra: without a pause container, the
// containers of a sandbox share hostname, IPC and network, each with its
// own PID namespace and filesystem.
func (s *suite) sharedNamespaces(t *testing.T) {
	// nc -e hands the connection to a shell, which reads one line: unlike
	// a plain `nc -l`, it cannot end before the line arrives.
	sb, spec := s.newSandbox(t, nil,
		Shell("server", `hostname; for n in ipc net pid; do readlink /proc/self/ns/$n; done; echo mine > /only-server
			nc -l -p 9000 -e sh -c 'read line; echo "$line" >&2'`),
		Shell("client", `hostname; for n in ipc net pid; do readlink /proc/self/ns/$n; done; test -e /only-server && echo leak
			for i in $(seq 100); do echo ping | nc 127.0.0.1 9000 && exit 0; sleep 0.1; done; exit 1`),
	)
	ctx := s.ctx(t)
	var server, got Buffer
	if err := sb.Start(ctx, "server", sandbox.Stdio{Stdout: &server, Stderr: &got}); err != nil {
		t.Fatalf("Start(server): %v", err)
	}
	WaitFor(t, ctx, "the server to start", func() bool { return strings.Count(server.String(), "\n") >= 4 })
	st, client, _ := s.runToExit(t, sb, "client")
	if st.ExitCode != 0 {
		t.Fatalf("client could not reach the server on 127.0.0.1:9000: exit %d", st.ExitCode)
	}
	if st, err := sb.Wait(ctx, "server"); err != nil || st.ExitCode != 0 {
		t.Fatalf("server = %+v, %v; want exit 0 after one connection", st, err)
	}
	sf, cf := strings.Fields(server.String()), strings.Fields(client)
	if len(sf) != 4 || len(cf) != 4 {
		t.Fatalf("unexpected output: server %q client %q (a leak line means the client saw the server's files)", server.String(), client)
	}
	if sf[0] != spec.Hostname || cf[0] != spec.Hostname {
		t.Errorf("hostnames %q, %q; want both %q", sf[0], cf[0], spec.Hostname)
	}
	if sf[1] != cf[1] || sf[2] != cf[2] {
		t.Errorf("ipc/net namespaces differ: server %v client %v", sf[1:3], cf[1:3])
	}
	if sf[3] == cf[3] {
		t.Errorf("pid namespace %s is shared; want one per container", sf[3])
	}
	if got.String() != "ping\n" {
		t.Errorf("server received %q; want ping", got.String())
	}
}

func (s *suite) memoryLimitOOMKills(t *testing.T) {
	sb, _ := s.newSandbox(t, nil, sandbox.ContainerSpec{Name: "hog", Args: []string{"tail", "/dev/zero"}, MemoryBytes: 32 << 20})
	st, _, _ := s.runToExit(t, sb, "hog")
	if !st.OOMKilled || st.ExitCode != 137 {
		t.Errorf("hog = %+v; want OOMKilled with exit 137", st)
	}
}

func (s *suite) exec(t *testing.T) {
	sb, _ := s.newSandbox(t, nil, sandbox.ContainerSpec{Name: "c", Args: []string{"sleep", "1000"}, Env: []string{"FROM_SPEC=1"}, WorkingDir: "/tmp"})
	ctx := s.ctx(t)
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
		var out, errOut Buffer
		code, err := sb.Exec(ctx, "c", sandbox.ExecSpec{
			// An exec starts in the container's working dir, with its HOME.
			Args: []string{"sh", "-c", `read line; echo "got $line $FROM_SPEC $EXTRA $(pwd) $HOME"; echo e >&2; exit 3`},
			Env:  []string{"EXTRA=x"},
		}, sandbox.Stdio{Stdin: strings.NewReader("hi\n"), Stdout: &out, Stderr: &errOut})
		if err != nil || code != 3 {
			t.Errorf("Exec = %d, %v; want 3, nil", code, err)
		}
		if out.String() != "got hi 1 x /tmp /root\n" || errOut.String() != "e\n" {
			t.Errorf("stdout %q stderr %q; want %q, %q", out.String(), errOut.String(), "got hi 1 x /tmp /root\n", "e\n")
		}
	})
	t.Run("env overrides", func(t *testing.T) {
		// The exec's own environment wins over the container's.
		var out Buffer
		code, err := sb.Exec(ctx, "c", sandbox.ExecSpec{Args: []string{"sh", "-c", `echo "$FROM_SPEC"; env | grep -c '^FROM_SPEC='`},
			Env: []string{"FROM_SPEC=exec"}}, sandbox.Stdio{Stdout: &out})
		if err != nil || code != 0 || out.String() != "exec\n1\n" {
			t.Errorf("exec with FROM_SPEC=exec printed %q (%d, %v); want the exec's value, once", out.String(), code, err)
		}
	})
	t.Run("large output", func(t *testing.T) {
		var out Buffer
		code, err := sb.Exec(ctx, "c", sandbox.ExecSpec{Args: []string{"sh", "-c", "seq 100000"}}, sandbox.Stdio{Stdout: &out})
		if err != nil || code != 0 {
			t.Fatalf("Exec(seq) = %d, %v", code, err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != 100000 || lines[99999] != "100000" {
			t.Errorf("seq 100000 gave %d lines ending %q; want every line, in order", len(lines), lines[len(lines)-1])
		}
	})
	t.Run("tty", func(t *testing.T) {
		resize := make(chan sandbox.WindowSize, 1)
		resize <- sandbox.WindowSize{Rows: 40, Cols: 100}
		var out Buffer
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
		var out Buffer
		if code, err := sb.Exec(ctx, "c", sandbox.ExecSpec{Args: []string{"sh", "-c", "ps -o comm | grep -c '^sleep'"}}, sandbox.Stdio{Stdout: &out}); err != nil || code != 0 || strings.TrimSpace(out.String()) != "1" {
			t.Errorf("sleeps in the container after the cancelled exec: %q (exec %d, %v); want the container's own alone", out.String(), code, err)
		}
	})
}

// restartKeepsWritableLayer restarts an exited container: the files it
// wrote stay (like docker).
func (s *suite) restartKeepsWritableLayer(t *testing.T) {
	sb, _ := s.newSandbox(t, nil, Shell("c", "echo run >> /runs; wc -l < /runs"), Shell("peer", "cat /runs"))
	for want := 1; want <= 3; want++ {
		st, out, _ := s.runToExit(t, sb, "c")
		if st.ExitCode != 0 || strings.TrimSpace(out) != strconv.Itoa(want) {
			t.Errorf("run %d: exit %d output %q; want 0, %d", want, st.ExitCode, out, want)
		}
	}
	if st, _, _ := s.runToExit(t, sb, "peer"); st.ExitCode == 0 {
		t.Errorf("another container of the sandbox sees /runs; want each container's writable layer its own")
	}
}

// diskBound: the sandbox's writes together stop at DiskBytes with ENOSPC.
func (s *suite) diskBound(t *testing.T) {
	const bound = 32 << 20
	sb, _ := s.newSandbox(t, func(sp *sandbox.Spec) { sp.DiskBytes = bound },
		Shell("fill", "cat /kept 2>/dev/null || { echo kept > /kept; sync; }; dd if=/dev/zero of=/big bs=1M count=64; echo rc=$?"),
		Shell("other", "dd if=/dev/zero of=/more bs=1M count=8; echo rc=$?"))
	st, out, errOut := s.runToExit(t, sb, "fill")
	if st.ExitCode != 0 || !strings.Contains(errOut, "No space left on device") || strings.Contains(out, "rc=0") {
		t.Errorf("dd past the bound: exit %d stdout %q stderr %q; want ENOSPC and a failing dd", st.ExitCode, out, errOut)
	}
	if _, out, _ := s.runToExit(t, sb, "other"); strings.Contains(out, "rc=0") {
		t.Errorf("another container wrote 8 MiB into a full layer: %q; want ENOSPC", out)
	}
	if _, out, _ := s.runToExit(t, sb, "fill"); !strings.HasPrefix(out, "kept\n") {
		t.Errorf("after a restart the container printed %q; want its file kept", out)
	}
}

// pidsBound: the sandbox's processes together stop at PidsLimit.
func (s *suite) pidsBound(t *testing.T) {
	const limit = 48
	sb, _ := s.newSandbox(t, func(sp *sandbox.Spec) { sp.PidsLimit = limit },
		// Past the bound a fork fails and the subshell gives up; the
		// count and the kill are shell builtins, which need no fork.
		Shell("many", `(for i in $(seq 200); do sleep 1000 & done) 2>/dev/null; set -- /proc/[0-9]*; echo $#; kill -9 -1; exit 0`))
	st, out, _ := s.runToExit(t, sb, "many")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if st.ExitCode != 0 || err != nil || n > limit || n < limit/2 {
		t.Errorf("200 background sleeps under a pids limit of %d: exit %d, /proc counted %q; want the limit reached and not passed", limit, st.ExitCode, out)
	}
}

func (s *suite) idempotentCreateAndSharedShm(t *testing.T) {
	sb, spec := s.newSandbox(t, nil, Shell("writer", "echo shared > /dev/shm/x"), Shell("reader", "cat /dev/shm/x"))
	before := s.h.HostPids(t, spec)
	if err := sb.Create(s.ctx(t)); err != nil {
		t.Fatalf("second Create: %v", err)
	}
	if after := s.h.HostPids(t, spec); !slices.Equal(before, after) {
		t.Errorf("second Create changed the sandbox's host processes: %v -> %v", before, after)
	}
	s.runToExit(t, sb, "writer")
	if st, out, _ := s.runToExit(t, sb, "reader"); st.ExitCode != 0 || out != "shared\n" {
		t.Errorf("reader: exit %d output %q; want the writer's /dev/shm/x", st.ExitCode, out)
	}
}

// stopBeforeStart: a container stopped before its first Start runs afresh
// on a later Start.
func (s *suite) stopBeforeStart(t *testing.T) {
	sb, _ := s.newSandbox(t, nil, Shell("c", "echo fresh"))
	if err := sb.Stop(s.ctx(t), "c", time.Second); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	st, out, _ := s.runToExit(t, sb, "c")
	if st.ExitCode != 0 || out != "fresh\n" {
		t.Errorf("Start after Stop: exit %d, output %q; want 0, %q", st.ExitCode, out, "fresh\n")
	}
}

func (s *suite) destroyBeforeStart(t *testing.T) {
	sb, spec := s.newSandbox(t, nil, sandbox.ContainerSpec{Name: "a", Args: []string{"sleep", "1000"}}, Shell("b", "sleep 1000"))
	pids := s.h.HostPids(t, spec)
	if err := sb.Destroy(s.ctx(t)); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	s.assertGone(t, spec, pids)
}

// destroyLeavesNothing destroys a sandbox with running containers and an
// exec under way, twice (idempotent), and checks every kind of trace.
func (s *suite) destroyLeavesNothing(t *testing.T) {
	sb, spec := s.newSandbox(t, nil, sandbox.ContainerSpec{Name: "a", Args: []string{"sleep", "1000"}, MemoryBytes: 64 << 20, MilliCPU: 100}, Shell("b", "sleep 1000"))
	ctx := s.ctx(t)
	for _, name := range []string{"a", "b"} {
		if err := sb.Start(ctx, name, sandbox.Stdio{}); err != nil {
			t.Fatal(err)
		}
	}
	states, err := sb.State(ctx)
	if err != nil || len(states) != 2 {
		t.Fatalf("State = %+v, %v; want two containers", states, err)
	}
	for _, st := range states {
		if st.Phase != sandbox.PhaseRunning || st.Pid == 0 {
			t.Fatalf("state %+v; want running with a pid", st)
		}
	}
	var execOut Buffer
	execDone := make(chan error, 1)
	go func() {
		_, err := sb.Exec(ctx, "a", sandbox.ExecSpec{Args: []string{"sh", "-c", "echo in; exec sleep 1000"}}, sandbox.Stdio{Stdout: &execOut})
		execDone <- err
	}()
	WaitFor(t, ctx, "the exec to run", func() bool { return execOut.String() != "" })
	pids := s.h.HostPids(t, spec)
	if len(pids) == 0 {
		t.Fatal("HostPids lists nothing for a running sandbox; the check below would prove nothing")
	}
	for range 2 { // idempotent
		if err := sb.Destroy(ctx); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
	}
	select {
	case err := <-execDone:
		t.Logf("exec ended with %v", err)
	case <-ctx.Done():
		t.Error("an exec under way did not end with Destroy")
	}
	s.assertGone(t, spec, pids)
	if err := sb.Start(ctx, "a", sandbox.Stdio{}); err == nil {
		t.Error("Start after Destroy succeeded; want an error")
	}
}

// createCleansUpAfterADeadOwner builds a second sandbox on the state of a
// first whose owner died, as a shim started after a SIGKILLed one does:
// Create removes what the first left, the container starts again, and
// its writable layer is kept.
func (s *suite) createCleansUpAfterADeadOwner(t *testing.T) {
	first, spec := s.newSandbox(t, nil, Shell("app", "cat /kept 2>/dev/null; echo kept >/kept; sync; echo up; exec sleep 1000"))
	ctx := s.ctx(t)
	var out1 Buffer
	if err := first.Start(ctx, "app", sandbox.Stdio{Stdout: &out1}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	WaitFor(t, ctx, "the first run", func() bool { return strings.Contains(out1.String(), "up") })
	old := s.h.HostPids(t, spec)
	s.h.Crash(t, first, spec)

	second := s.build(t, spec)
	if err := second.Create(ctx); err != nil {
		t.Fatalf("Create over a dead owner's leftovers: %v", err)
	}
	for _, pid := range s.h.HostPids(t, spec) {
		if slices.Contains(old, pid) {
			t.Errorf("process %d of the dead owner still belongs to the sandbox after Create", pid)
		}
	}
	var out2 Buffer
	if err := second.Start(ctx, "app", sandbox.Stdio{Stdout: &out2}); err != nil {
		t.Fatalf("Start after Create: %v", err)
	}
	WaitFor(t, ctx, "the second run", func() bool { return strings.Contains(out2.String(), "up") })
	if out2.String() != "kept\nup\n" {
		t.Errorf("second run printed %q; want the writable layer kept (%q)", out2.String(), "kept\nup\n")
	}
}

// assertGone checks that pids and every trace of spec's sandbox are gone.
func (s *suite) assertGone(t *testing.T, spec sandbox.Spec, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d still exists after Destroy", pid)
		}
	}
	if left := s.h.HostPids(t, spec); len(left) > 0 {
		t.Errorf("host processes of the sandbox after Destroy: %v", left)
	}
	if tr := s.h.Traces(t, spec); len(tr) > 0 {
		t.Errorf("traces after Destroy:\n%s", strings.Join(tr, "\n"))
	}
	if _, err := os.Stat(spec.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir remains: %v", err)
	}
	if spec.WritableLayer != "" {
		if _, err := os.Stat(spec.WritableLayer); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("writable layer remains: %v", err)
		}
	}
}

// alive tells whether pid names a live (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// WaitFor polls cond until it holds, failing t when ctx ends first.
func WaitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// RandomID is a fresh sandbox id.
func RandomID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// Buffer is a bytes.Buffer safe for a copier's writes and a test's reads.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Logger logs to t, at debug level.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
