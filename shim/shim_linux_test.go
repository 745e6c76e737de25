package shim

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/internal/logfile"
	"github.com/cube-platform/cube/internal/stream"
	"github.com/cube-platform/cube/sandbox"
)

func readLog(t *testing.T, cfg Config, container string) string {
	t.Helper()
	var b bytes.Buffer
	if err := logfile.Read(testCtx(t), filepath.Join(cfg.LogDir, container+".log"), logfile.ReadOptions{Tail: -1}, &b); err != nil {
		t.Fatalf("read log of %s: %v", container, err)
	}
	return b.String()
}

func TestRunToSuccessWithLogs(t *testing.T) {
	cfg := testConfig(t, RestartNever, shell("c", "echo hello; echo oops >&2; sleep 0.5"))
	c := launch(t, cfg)
	var phases []string
	st := waitState(t, c, "Succeeded", func(s State) bool {
		if len(phases) == 0 || phases[len(phases)-1] != s.Phase {
			phases = append(phases, s.Phase)
		}
		return s.Phase == PhaseSucceeded || s.Phase == PhaseFailed
	})
	if st.Phase != PhaseSucceeded || st.Containers[0].Reason != ReasonCompleted || st.Containers[0].ExitCode != 0 {
		t.Errorf("final state %+v; want Succeeded, container Completed with exit 0", st)
	}
	if !strings.Contains(strings.Join(phases, ","), PhaseRunning) {
		t.Errorf("phases seen %v; want Running before Succeeded", phases)
	}
	// The two streams are copied independently: only each one's order holds.
	if got := readLog(t, cfg, "c"); got != "hello\noops\n" && got != "oops\nhello\n" {
		t.Errorf("log = %q; want hello and oops", got)
	}
}

func TestRestartAlways(t *testing.T) {
	cfg := testConfig(t, RestartAlways, shell("c", "echo run; exit 0"))
	c := launch(t, cfg)
	st := waitState(t, c, "3 restarts", func(s State) bool { return s.Containers[0].RestartCount >= 3 })
	if st.Phase != PhaseRunning {
		t.Errorf("phase %s while restarting for ever; want Running", st.Phase)
	}
	if err := c.Stop(testCtx(t), time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st, err := c.State(testCtx(t), 0)
	if err != nil || st.Phase != PhaseSucceeded {
		t.Errorf("after Stop: %+v, %v; want Succeeded (last run exited 0)", st, err)
	}
	time.Sleep(300 * time.Millisecond) // a restart, had Stop not disabled them
	if st2, _ := c.State(testCtx(t), 0); st2.Containers[0].RestartCount != st.Containers[0].RestartCount {
		t.Errorf("restarted after Stop: count %d -> %d", st.Containers[0].RestartCount, st2.Containers[0].RestartCount)
	}
	if n := strings.Count(readLog(t, cfg, "c"), "run\n"); n < 4 {
		t.Errorf("log has %d runs; want at least 4", n)
	}
}

func TestRestartOnFailure(t *testing.T) {
	// Fails once, then succeeds: the marker survives the restart in the
	// container's writable layer.
	cfg := testConfig(t, RestartOnFailure, shell("c", "test -f /marker && exit 0; touch /marker; exit 3"))
	c := launch(t, cfg)
	st := waitState(t, c, "Succeeded", func(s State) bool { return s.Phase == PhaseSucceeded || s.Phase == PhaseFailed })
	if st.Phase != PhaseSucceeded || st.Containers[0].RestartCount != 1 {
		t.Errorf("state %+v; want Succeeded after exactly 1 restart", st)
	}
}

// TestMaxRestarts bounds OnFailure (Docker's on-failure:N), counting the
// restarts a previous shim had: 1 carried over + 2 here reach the bound 3.
func TestMaxRestarts(t *testing.T) {
	cfg := testConfig(t, RestartOnFailure, shell("c", "echo run; exit 3"))
	cfg.MaxRestarts, cfg.RestartCounts = 3, map[string]int{"c": 1}
	c := launch(t, cfg)
	st := waitState(t, c, "Failed", func(s State) bool { return s.Phase == PhaseFailed })
	if cs := st.Containers[0]; cs.RestartCount != 3 || cs.ExitCode != 3 || cs.WillRestart {
		t.Errorf("container %+v; want exit 3 after restart 3 of 3, and no more", cs)
	}
	if l := st.Containers[0].LastExit; l == nil || l.ExitCode != 3 || l.Reason != ReasonError || l.FinishedAt.IsZero() || !l.FinishedAt.Before(st.Containers[0].FinishedAt) {
		t.Errorf("lastExit %+v; want the run before the last one: exit 3, Error, finished earlier", l)
	}
	time.Sleep(300 * time.Millisecond) // a restart, had the bound not held
	if n := strings.Count(readLog(t, cfg, "c"), "run\n"); n != 3 {
		t.Errorf("log has %d runs; want 3 (the first and 2 restarts)", n)
	}
}

func TestFailedPhases(t *testing.T) {
	tests := []struct {
		name       string
		container  sandbox.ContainerSpec
		wantReason string
		wantCode   int
		wantMsg    string
	}{
		{"error", shell("c", "exit 3"), ReasonError, 3, ""},
		{"not found", sandbox.ContainerSpec{Name: "c", Args: []string{"nosuchcmd"}}, ReasonStartError, 127, "executable file not found"},
		{"oom", sandbox.ContainerSpec{Name: "c", Args: []string{"tail", "/dev/zero"}, MemoryBytes: 32 << 20}, ReasonOOMKilled, 137, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, RestartNever, tt.container)
			c := launch(t, cfg)
			st := waitState(t, c, "Failed", func(s State) bool { return s.Phase == PhaseSucceeded || s.Phase == PhaseFailed })
			cs := st.Containers[0]
			if st.Phase != PhaseFailed || st.Reason != tt.wantReason || cs.Reason != tt.wantReason || cs.ExitCode != tt.wantCode || !strings.Contains(st.Message, tt.wantMsg) {
				t.Errorf("state %+v; want Failed, reason %s, exit %d, message with %q", st, tt.wantReason, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

func TestExecThroughShim(t *testing.T) {
	cfg := testConfig(t, RestartNever, sandbox.ContainerSpec{Name: "c", Args: []string{"sleep", "1000"}}, shell("done", "exit 0"))
	c := launch(t, cfg)
	waitState(t, c, "c running, done exited", func(s State) bool {
		return s.Containers[0].Phase == sandbox.PhaseRunning && s.Containers[1].Phase == sandbox.PhaseExited
	})
	ctx := testCtx(t)
	t.Run("pipes", func(t *testing.T) {
		var out, errOut syncBuffer
		code, err := c.Exec(ctx, "c", ExecRequest{Args: []string{"sh", "-c", "read l; echo out $l; echo err >&2; exit 4"}},
			strings.NewReader("x\n"), &out, &errOut, nil)
		if err != nil || code != 4 || out.String() != "out x\n" || errOut.String() != "err\n" {
			t.Errorf("Exec = %d, %v, stdout %q, stderr %q; want 4, nil, %q, %q", code, err, out.String(), errOut.String(), "out x\n", "err\n")
		}
	})
	t.Run("tty", func(t *testing.T) {
		resize := make(chan sandbox.WindowSize, 1)
		resize <- sandbox.WindowSize{Rows: 40, Cols: 100}
		var out syncBuffer
		code, err := c.Exec(ctx, "c", ExecRequest{Args: []string{"sh", "-c", "sleep 0.5; tty; stty size; exit 2"}, TTY: true}, nil, &out, nil, resize)
		if err != nil || code != 2 || !strings.Contains(out.String(), "/dev/pts/") || !strings.Contains(out.String(), "40 100") {
			t.Errorf("Exec(tty) = %d, %v, output %q; want 2, a pts and size 40 100", code, err, out.String())
		}
	})
	t.Run("raw conn", func(t *testing.T) {
		conn, err := c.ExecConn(ctx, "c", ExecRequest{Args: []string{"cat"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fw := stream.NewWriter(conn)
		fw.WriteFrame(stream.Stdin, []byte("raw\n"))
		fw.WriteFrame(stream.CloseStdin, nil)
		var out []byte
		for {
			f, err := stream.ReadFrame(conn)
			if err != nil {
				t.Fatalf("ReadFrame: %v (output so far %q)", err, out)
			}
			if f.Kind == stream.Stdout {
				out = append(out, f.Payload...)
			}
			if f.Kind == stream.Exit {
				if string(f.Payload) != "0" || string(out) != "raw\n" {
					t.Errorf("exit %s output %q; want 0, raw", f.Payload, out)
				}
				return
			}
		}
	})
	t.Run("errors", func(t *testing.T) {
		if _, err := c.Exec(ctx, "nope", ExecRequest{Args: []string{"true"}}, nil, nil, nil, nil); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("Exec(unknown container) = %v; want errdefs.ErrNotFound", err)
		}
		if _, err := c.Exec(ctx, "done", ExecRequest{Args: []string{"true"}}, nil, nil, nil, nil); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("Exec(exited container) = %v; want errdefs.ErrConflict", err)
		}
	})
}

// TestShimOutlivesItsLauncher launches a shim from a child process, kills
// that child with SIGKILL, and checks the shim serves on, in its own
// session; then Shutdown must leave no trace but the container logs.
func TestShimOutlivesItsLauncher(t *testing.T) {
	cfg := testConfig(t, RestartNever, sandbox.ContainerSpec{Name: "c", Args: []string{"sleep", "1000"}})
	cfgPath := filepath.Join(t.TempDir(), "launch.json")
	if err := writeConfig(cfgPath, cfg); err != nil {
		t.Fatal(err)
	}
	launcher := exec.Command(os.Args[0])
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envShimMain+"=") {
			launcher.Env = append(launcher.Env, kv)
		}
	}
	launcher.Env = append(launcher.Env, envLauncher+"="+cfgPath)
	out, _ := launcher.StdoutPipe()
	if err := launcher.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "launched" {
		launcher.Process.Kill()
		launcher.Wait()
		t.Fatalf("launcher said %q", line)
	}
	c := Dial(cfg.Socket)
	t.Cleanup(func() { shutdownOrKill(t, c, cfg) })
	pid := readPidFile(t, cfg)
	launcher.Process.Kill()
	launcher.Wait()

	waitState(t, c, "Running", phaseIs(PhaseRunning))
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("shim session = %d; want its own (%d)", sid, pid)
	}
	if ppid := parentOf(t, pid); ppid == launcher.Process.Pid {
		t.Errorf("shim still child of its dead launcher")
	}
	unix.Kill(pid, unix.SIGHUP) // a hang-up (say, of a terminal it came from) is ignored
	unix.Kill(pid, unix.SIGPIPE)
	again, err := Launch(testCtx(t), []string{"/bin/false"}, cfg)
	if err != nil || readPidFile(t, cfg) != pid {
		t.Fatalf("second Launch = %v (pid %d); want the running shim %d", err, readPidFile(t, cfg), pid)
	}
	if err := again.Shutdown(testCtx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	reap(t, pid)
	for _, p := range []string{cfg.Socket, FilesFor(cfg.Socket).Pid, FilesFor(cfg.Socket).Config, cfg.Sandbox.StateDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s remains after Shutdown", p)
		}
	}
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mountinfo), cfg.Sandbox.StateDir) {
		t.Errorf("mounts under %s remain", cfg.Sandbox.StateDir)
	}
	for _, h := range []string{"cpu", "memory", "pids", "unified"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, cfg.Sandbox.CgroupParent)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s remains in %s", cfg.Sandbox.CgroupParent, h)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.LogDir, "c.log")); err != nil {
		t.Errorf("container log is gone after Shutdown: %v; the node agent removes it", err)
	}
	if err := c.Ping(testCtx(t)); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Ping after Shutdown = %v; want errdefs.ErrUnavailable", err)
	}
}

func readPidFile(t *testing.T, cfg Config) int {
	t.Helper()
	b, err := os.ReadFile(FilesFor(cfg.Socket).Pid)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func parentOf(t *testing.T, pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// reap waits for the orphaned shim (reparented to this subreaper) to exit.
func reap(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid {
			if !ws.Exited() || ws.ExitStatus() != 0 {
				t.Errorf("shim ended with %v; want exit 0", ws)
			}
			return
		}
		if errors.Is(err, unix.ECHILD) && unix.Kill(pid, 0) != nil {
			return // reaped elsewhere, and gone
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("shim %d still running after Shutdown", pid)
}

func TestSandboxCreateFailure(t *testing.T) {
	cfg := testConfig(t, RestartAlways, shell("c", "true"))
	cfg.Sandbox.NetNS = "/no/such/netns"
	c := launch(t, cfg)
	st := waitState(t, c, "Failed", phaseIs(PhaseFailed))
	if st.Reason != ReasonSandboxCreateFailed || !strings.Contains(st.Message, "/no/such/netns") {
		t.Errorf("state %+v; want SandboxCreateFailed naming the netns", st)
	}
}

// TestSIGTERMShutsDown: an operator's SIGTERM is an orderly shutdown.
func TestSIGTERMShutsDown(t *testing.T) {
	cfg := testConfig(t, RestartAlways, sandbox.ContainerSpec{Name: "c", Args: []string{"sleep", "1000"}})
	c := launch(t, cfg)
	waitState(t, c, "Running", phaseIs(PhaseRunning))
	pid := readPidFile(t, cfg)
	unix.Kill(pid, unix.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for unix.Kill(pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // Launch's goroutine reaps it
	}
	if unix.Kill(pid, 0) == nil {
		t.Fatal("shim still running 30s after SIGTERM")
	}
	for _, p := range []string{cfg.Socket, cfg.Sandbox.StateDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s remains after SIGTERM", p)
		}
	}
}

// TestAwaitStart: a shim launched with AwaitStart creates the sandbox but
// runs nothing until Start; Start is idempotent, and a Shutdown before it
// leaves no trace.
func TestAwaitStart(t *testing.T) {
	cfg := testConfig(t, RestartNever, shell("c", "echo started"))
	cfg.AwaitStart = true
	c := launch(t, cfg)
	time.Sleep(500 * time.Millisecond) // ample time to create the sandbox and, were it not held, run
	st, err := c.State(testCtx(t), 0)
	if err != nil || st.Phase != PhaseCreating || st.Containers[0].Reason != ReasonContainerCreating {
		t.Fatalf("state before Start = %+v, %v; want Creating, container ContainerCreating", st, err)
	}
	if b, _ := os.ReadFile(filepath.Join(cfg.LogDir, "c.log")); len(b) != 0 {
		t.Fatalf("log before Start = %q; want empty", b)
	}
	for range 2 {
		if err := c.Start(testCtx(t), nil); err != nil {
			t.Fatalf("Start: %v", err)
		}
	}
	st = waitState(t, c, "Succeeded", func(s State) bool { return s.Phase == PhaseSucceeded || s.Phase == PhaseFailed })
	if st.Phase != PhaseSucceeded || readLog(t, cfg, "c") != "started\n" {
		t.Errorf("after Start: %+v, log %q; want Succeeded, %q", st, readLog(t, cfg, "c"), "started\n")
	}

	held := testConfig(t, RestartNever, sandbox.ContainerSpec{Name: "c", Args: []string{"sleep", "1000"}})
	held.AwaitStart = true
	hc := launch(t, held)
	time.Sleep(500 * time.Millisecond) // the sandbox is created, its init waits
	if err := hc.Shutdown(testCtx(t)); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}
	for _, p := range []string{held.Socket, held.Sandbox.StateDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s remains after Shutdown", p)
		}
	}
	for _, h := range []string{"cpu", "memory", "pids"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, held.Sandbox.CgroupParent)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s remains in %s", held.Sandbox.CgroupParent, h)
		}
	}
}

// TestExitedContainersStayEnded: a shim that replaces a lost one leaves a
// container that had ended for good as it was, and runs the others.
func TestExitedContainersStayEnded(t *testing.T) {
	cfg := testConfig(t, RestartNever, shell("setup", "echo ran-again"), shell("app", "echo app-up; sleep 30"))
	finished := time.Now().Add(-time.Minute).UTC()
	cfg.Exited = map[string]sandbox.ContainerState{"setup": {ExitCode: 3, FinishedAt: finished}}
	cfg.RestartCounts = map[string]int{"setup": 0, "app": 1}
	c := launch(t, cfg)
	st := waitState(t, c, "app running", func(s State) bool { return s.Containers[1].Phase == sandbox.PhaseRunning })
	setup := st.Containers[0]
	if setup.Phase != sandbox.PhaseExited || setup.ExitCode != 3 || setup.Reason != ReasonError || !setup.FinishedAt.Equal(finished) {
		t.Errorf("setup %+v; want it as it ended: exited 3 (Error) at %s", setup, finished)
	}
	if st.Phase != PhaseRunning || st.Containers[1].RestartCount != 1 {
		t.Errorf("state %+v; want Running with app's restart count carried over", st)
	}
	time.Sleep(300 * time.Millisecond)
	if got := readLog(t, cfg, "setup"); got != "" {
		t.Errorf("setup ran again: log %q", got)
	}
}
