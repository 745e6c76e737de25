package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

// fakeSuspendBackend is a sandbox that can be suspended, for the
// supervisor's and server's side of suspend and resume: nothing here can
// save a real process, and the real Suspender (sandbox/microvm, QEMU
// migrate) is covered end to end with real QEMU by the e2e suite. Its
// containers run nothing; each has a counter that the exec "tick" bumps
// and prints on the container's stdout, and the exec "exit N" ends it.
// Suspend saves the counters to <StateDir>/fake-suspended.json (and
// fails while <StateDir>/fail-suspend exists), and Create
// of a sandbox whose state dir has that file loads it suspended. Every
// call the supervisor makes is appended, with the process's pid, to
// <StateDir>.calls, so a test sees which shim started what.
const fakeSuspendBackend = "fake-suspend"

func init() {
	Backends[fakeSuspendBackend] = func(spec sandbox.Spec, _ sandbox.Options) (sandbox.Sandbox, error) {
		return &fakeSuspender{spec: spec, ctrs: map[string]*fakeCtr{}}, nil
	}
}

type fakeSuspender struct {
	spec      sandbox.Spec
	mu        sync.Mutex
	suspended bool                // protected by mu
	ctrs      map[string]*fakeCtr // protected by mu
}

var _ sandbox.Suspender = (*fakeSuspender)(nil)

type fakeCtr struct {
	State   sandbox.ContainerState `json:"state"`
	Counter int                    `json:"counter"`
	stdout  io.Writer
	done    chan struct{} // closed when the current run ends
}

func (f *fakeSuspender) savedPath() string {
	return filepath.Join(f.spec.StateDir, "fake-suspended.json")
}

func (f *fakeSuspender) record(format string, args ...any) {
	fh, err := os.OpenFile(filepath.Clean(f.spec.StateDir)+".calls", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer fh.Close()
	fmt.Fprintf(fh, "%d "+format+"\n", append([]any{os.Getpid()}, args...)...)
}

func (f *fakeSuspender) Create(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.MkdirAll(f.spec.StateDir, 0o700); err != nil {
		return err
	}
	for _, c := range f.spec.Containers {
		f.ctrs[c.Name] = &fakeCtr{State: sandbox.ContainerState{Name: c.Name, Phase: sandbox.PhaseCreated}, done: make(chan struct{})}
	}
	b, err := os.ReadFile(f.savedPath())
	if errors.Is(err, os.ErrNotExist) {
		f.record("create fresh")
		return nil
	}
	saved := map[string]*fakeCtr{}
	if err != nil || json.Unmarshal(b, &saved) != nil {
		return fmt.Errorf("fake: saved state %s unreadable: %v", f.savedPath(), err)
	}
	for name, c := range saved {
		c.done = make(chan struct{})
		f.ctrs[name] = c
	}
	f.suspended = true
	f.record("create loaded")
	return nil
}

func (f *fakeSuspender) Connect(context.Context, sandbox.Interface) error { return nil }

func (f *fakeSuspender) Start(_ context.Context, name string, stdio sandbox.Stdio) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("start %s", name)
	if f.suspended {
		return errors.New("fake: Start on a suspended sandbox")
	}
	c := f.ctrs[name]
	if c.State.Phase == sandbox.PhaseExited {
		c.done = make(chan struct{})
	}
	c.State = sandbox.ContainerState{Name: name, Phase: sandbox.PhaseRunning, Pid: os.Getpid(), StartedAt: time.Now()}
	c.stdout = stdio.Stdout
	return nil
}

func (f *fakeSuspender) Wait(ctx context.Context, name string) (sandbox.ContainerState, error) {
	f.mu.Lock()
	c := f.ctrs[name]
	done := c.done
	f.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return sandbox.ContainerState{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return c.State, nil
}

// exit ends c's run. Preconditions: f.mu held.
func (c *fakeCtr) exit(code int) {
	if c.State.Phase != sandbox.PhaseRunning {
		return
	}
	c.State.Phase, c.State.ExitCode, c.State.Pid, c.State.FinishedAt = sandbox.PhaseExited, code, 0, time.Now()
	close(c.done)
}

func (f *fakeSuspender) Exec(_ context.Context, name string, spec sandbox.ExecSpec, _ sandbox.Stdio) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.ctrs[name]
	if f.suspended || c == nil || c.State.Phase != sandbox.PhaseRunning {
		return -1, fmt.Errorf("fake: exec in %s: not running (suspended %v)", name, f.suspended)
	}
	switch spec.Args[0] {
	case "tick":
		c.Counter++
		if c.stdout != nil {
			fmt.Fprintf(c.stdout, "tick %d\n", c.Counter)
		}
	case "exit":
		code, _ := strconv.Atoi(spec.Args[1])
		c.exit(code)
	}
	return 0, nil
}

func (f *fakeSuspender) Stop(_ context.Context, name string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("stop %s", name)
	if f.suspended {
		return errors.New("fake: Stop on a suspended sandbox")
	}
	f.ctrs[name].exit(143)
	return nil
}

func (f *fakeSuspender) State(context.Context) ([]sandbox.ContainerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []sandbox.ContainerState
	for _, c := range f.spec.Containers {
		out = append(out, f.ctrs[c.Name].State)
	}
	return out, nil
}

func (f *fakeSuspender) Destroy(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("destroy")
	for _, c := range f.ctrs {
		c.exit(137)
	}
	return os.RemoveAll(f.spec.StateDir)
}

func (f *fakeSuspender) Suspend(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.suspended {
		return nil
	}
	f.record("suspend")
	if _, err := os.Stat(filepath.Join(f.spec.StateDir, "fail-suspend")); err == nil {
		return errors.New("fake: disk full")
	}
	b, _ := json.Marshal(f.ctrs)
	if err := os.WriteFile(f.savedPath(), b, 0o600); err != nil {
		return err
	}
	f.suspended = true
	return nil
}

func (f *fakeSuspender) Resume(_ context.Context, stdio func(string) sandbox.Stdio) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.suspended {
		return nil
	}
	f.record("resume stdio=%v", stdio != nil)
	if stdio != nil {
		for name, c := range f.ctrs {
			if c.State.Phase == sandbox.PhaseRunning {
				c.stdout = stdio(name).Stdout
			}
		}
	}
	f.suspended = false
	return os.Remove(f.savedPath())
}

func (f *fakeSuspender) Suspended() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.suspended
}

// fakeSuspendConfig is a shim config on the fake backend, with one
// container "c"; it needs neither root nor runc.
func fakeSuspendConfig(t *testing.T, policy string) Config {
	dir := t.TempDir()
	return Config{
		Sandbox: sandbox.Spec{ID: "fake", StateDir: filepath.Join(dir, "state"),
			Containers: []sandbox.ContainerSpec{{Name: "c", Args: []string{"count"}}}},
		RestartPolicy: policy, Backend: fakeSuspendBackend,
		LogDir: filepath.Join(dir, "logs"), Socket: filepath.Join(dir, "shim", "shim.sock"),
		AwaitStart: true, StopGrace: time.Second,
	}
}

func exec1(t *testing.T, c *Client, args ...string) error {
	t.Helper()
	_, err := c.Exec(testCtx(t), "c", ExecRequest{Args: args}, nil, io.Discard, io.Discard, nil)
	return err
}

// calls are the fake's recorded calls, each "PID what".
func calls(t *testing.T, cfg Config) string {
	b, _ := os.ReadFile(filepath.Clean(cfg.Sandbox.StateDir) + ".calls")
	return string(b)
}

func count(s, sub string) int { return strings.Count(s, sub) }

// TestSuspendKeepsContainersRunning: a suspended sandbox's container is
// still running, not exited and not restarted; exec is refused while
// suspended; suspending twice saves once; after the resume the same run
// goes on writing to the same log.
func TestSuspendKeepsContainersRunning(t *testing.T) {
	cfg := fakeSuspendConfig(t, RestartAlways)
	c := launch(t, cfg)
	if err := c.Start(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, "Running", phaseIs(PhaseRunning))
	if err := exec1(t, c, "tick"); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := c.Suspend(testCtx(t)); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	st, _ := c.State(testCtx(t), 0)
	ctr := st.Containers[0]
	if st.Phase != PhaseSuspended || ctr.Phase != sandbox.PhaseRunning || ctr.RestartCount != 0 || ctr.Reason != "" || st.SuspendedAt.Before(before) {
		t.Fatalf("state after Suspend = %+v; want Suspended (since the call), its container running, not restarted", st)
	}
	if err := c.Suspend(testCtx(t)); err != nil {
		t.Errorf("second Suspend: %v; want a no-op", err)
	}
	if err := exec1(t, c, "tick"); !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "suspended: resume it first") {
		t.Errorf("exec while suspended: %v; want a conflict saying to resume", err)
	}
	if err := c.Resume(testCtx(t)); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	st, _ = c.State(testCtx(t), 0)
	if st.Phase != PhaseRunning || st.Containers[0].RestartCount != 0 || !st.SuspendedAt.IsZero() || st.ResumedAt.IsZero() {
		t.Fatalf("state after Resume = %+v; want Running, no restart, resumedAt set", st)
	}
	if err := exec1(t, c, "tick"); err != nil {
		t.Fatal(err)
	}
	if got := readLogUntil(t, cfg, "tick 2\n"); got != "tick 1\ntick 2\n" {
		t.Errorf("log = %q; want the run's output before and after the suspend", got)
	}
	got := calls(t, cfg)
	if count(got, " start c") != 1 || count(got, " suspend") != 1 || count(got, " resume stdio=false") != 1 || count(got, " stop") != 0 {
		t.Errorf("backend calls:\n%s\nwant one start, one suspend, one resume keeping the writers, no stop", got)
	}
}

// readLogUntil reads the container log once it holds want (the log
// writer copies asynchronously).
func readLogUntil(t *testing.T, cfg Config, want string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got string
	sandboxtest.WaitFor(t, ctx, fmt.Sprintf("the log to hold %q", want), func() bool {
		got = readLog(t, cfg, "c")
		return strings.Contains(got, want)
	})
	return got
}

// TestNewShimOnSuspendedSandbox: after the shim that suspended it is
// killed, a new shim on the same config finds the sandbox suspended: it
// starts nothing (a start the node asks for included) and reports
// Suspended with the container running; its resume hands the backend the
// container's log and adopts the run by Wait, so the run's own exit ends
// the instance, and no Start ever happens in the new shim.
func TestNewShimOnSuspendedSandbox(t *testing.T) {
	cfg := fakeSuspendConfig(t, RestartNever)
	c := launch(t, cfg)
	if err := c.Start(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, "Running", phaseIs(PhaseRunning))
	for range 2 {
		if err := exec1(t, c, "tick"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Suspend(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	old := readPidFile(t, cfg)
	if err := unix.Kill(old, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	gone, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
	defer cancel()
	sandboxtest.WaitFor(t, gone, "the killed shim to stop answering", func() bool { return c.Ping(gone) != nil })

	c2 := launch(t, cfg)
	st := waitState(t, c2, "Suspended", phaseIs(PhaseSuspended))
	if ctr := st.Containers[0]; ctr.Phase != sandbox.PhaseRunning || ctr.RestartCount != 0 || ctr.Reason != "" {
		t.Fatalf("new shim's state %+v; want the container running as saved", st)
	}
	if err := c2.Start(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	if st, _ := c2.State(testCtx(t), 0); st.Phase != PhaseSuspended {
		t.Fatalf("after a start the new shim is %s; want still Suspended", st.Phase)
	}
	if err := c2.Resume(testCtx(t)); err != nil {
		t.Fatalf("Resume in the new shim: %v", err)
	}
	if st := waitState(t, c2, "Running", phaseIs(PhaseRunning)); st.Containers[0].RestartCount != 0 {
		t.Errorf("after the resume: %+v; want the same run, not a restart", st)
	}
	if err := exec1(t, c2, "tick"); err != nil {
		t.Fatal(err)
	}
	if got := readLogUntil(t, cfg, "tick 3\n"); got != "tick 1\ntick 2\ntick 3\n" {
		t.Errorf("log = %q; want the counter going on from 2, written to the log by the new shim", got)
	}
	if err := exec1(t, c2, "exit", "3"); err != nil {
		t.Fatal(err)
	}
	st = waitState(t, c2, "Failed", func(s State) bool { return s.Phase == PhaseFailed || s.Phase == PhaseSucceeded })
	if ctr := st.Containers[0]; ctr.ExitCode != 3 || ctr.Reason != ReasonError {
		t.Errorf("after the adopted run exited 3: %+v; want Failed with exit 3", st)
	}
	got := calls(t, cfg)
	newPid := strconv.Itoa(readPidFile(t, cfg))
	for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
		if strings.HasPrefix(line, newPid+" start") || strings.HasPrefix(line, newPid+" stop") {
			t.Errorf("the new shim called %q; a resumed container is adopted, never started", line)
		}
	}
	if !strings.Contains(got, newPid+" create loaded") || !strings.Contains(got, newPid+" resume stdio=true") {
		t.Errorf("backend calls:\n%s\nwant the new shim (%s) to load the saved sandbox and resume it with stdio", got, newPid)
	}
}

// TestSuspendRefusals: a backend that cannot suspend is 400; a stopped
// instance cannot be suspended or resumed (409), and shutdown of a
// suspended sandbox destroys it without stopping anything.
func TestSuspendRefusals(t *testing.T) {
	cfg := testConfig(t, RestartNever, shell("c", "sleep 100"))
	c := launch(t, cfg)
	waitState(t, c, "Running", phaseIs(PhaseRunning))
	if err := c.Suspend(testCtx(t)); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "backend runc cannot be suspended") {
		t.Errorf("Suspend of runc: %v; want invalid, naming runc", err)
	}
	if st, _ := c.State(testCtx(t), 0); st.Phase != PhaseRunning {
		t.Errorf("runc instance after a refused suspend is %s", st.Phase)
	}

	fcfg := fakeSuspendConfig(t, RestartAlways)
	f := launch(t, fcfg)
	if err := f.Start(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	waitState(t, f, "Running", phaseIs(PhaseRunning))
	if err := f.Suspend(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if err := f.Stop(testCtx(t), time.Second); err != nil {
		t.Fatalf("Stop of a suspended sandbox: %v", err)
	}
	if err := f.Resume(testCtx(t)); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Resume after Stop: %v; want a conflict", err)
	}
	if err := f.Shutdown(testCtx(t)); err != nil {
		t.Fatalf("Shutdown of a suspended sandbox: %v", err)
	}
	if got := calls(t, fcfg); count(got, " stop") != 0 || count(got, " destroy") != 1 {
		t.Errorf("backend calls:\n%s\nwant no stop of the suspended sandbox and one destroy", got)
	}
	if _, err := os.Stat(fcfg.Sandbox.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the saved sandbox remains after Shutdown: %v", err)
	}
}

// TestSuspendFailure: a failed suspend leaves the instance running and
// says so in the state, each attempt its own message (so the node reports
// every one); the next success clears it.
func TestSuspendFailure(t *testing.T) {
	cfg := fakeSuspendConfig(t, RestartAlways)
	c := launch(t, cfg)
	if err := c.Start(testCtx(t), nil); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, "Running", phaseIs(PhaseRunning))
	fail := filepath.Join(cfg.Sandbox.StateDir, "fail-suspend")
	if err := os.WriteFile(fail, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt <= 2; attempt++ {
		if err := c.Suspend(testCtx(t)); err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("Suspend %d: %v; want the backend's error", attempt, err)
		}
		st, _ := c.State(testCtx(t), 0)
		want := fmt.Sprintf("suspend failed (attempt %d): fake: disk full", attempt)
		if st.Phase != PhaseRunning || st.Reason != ReasonSuspendFailed || st.Message != want || st.Containers[0].Phase != sandbox.PhaseRunning {
			t.Fatalf("state after failed suspend %d = %+v; want Running, %s, %q", attempt, st, ReasonSuspendFailed, want)
		}
	}
	os.Remove(fail)
	if err := c.Suspend(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.State(testCtx(t), 0); st.Phase != PhaseSuspended || st.Reason != "" || st.Message != "" {
		t.Errorf("state after a successful suspend = %+v; want Suspended with the failure gone", st)
	}
}
