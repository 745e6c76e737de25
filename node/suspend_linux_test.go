package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/image/imagetest"
	"github.com/cube-platform/cube/network"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/shim"
)

// The test binary doubles as the shim of TestSuspendedSurvivesLostShim:
// with envNodeTestShim set it runs shim.Main, its microvm backend replaced
// by fakeSuspender.
const envNodeTestShim = "CUBE_NODE_TEST_SHIM"

// envNodeTestCalls names the file where fakeSuspender appends each call
// with its shim's pid (outside the instance dir, which a removal deletes).
const envNodeTestCalls = "CUBE_NODE_TEST_CALLS"

func TestMain(m *testing.M) {
	if os.Getenv(envNodeTestShim) == "1" {
		shim.Backends[sandbox.BackendMicroVM] = func(spec sandbox.Spec, _ sandbox.Options) (sandbox.Sandbox, error) {
			return &fakeSuspender{spec: spec, running: map[string]chan struct{}{}}, nil
		}
		if err := shim.Main(context.Background(), os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, "shim:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Setenv(envNodeTestShim, "1") // for the shims the tests launch
	os.Exit(m.Run())
}

// fakeSuspender stands in for the microvm backend inside the node's
// shims: the node's side of suspend and resume is under test, and the
// VM-level suspend (QEMU migrate) is covered with real QEMU by the e2e
// suite. Its containers run nothing until they are stopped or destroyed;
// Suspend writes <StateDir>/suspended.json, and Create of a state dir
// holding it loads the sandbox suspended. Each call is appended, with the
// shim's pid, to the file $CUBE_NODE_TEST_CALLS.
type fakeSuspender struct {
	spec      sandbox.Spec
	mu        sync.Mutex
	suspended bool                     // protected by mu
	states    []sandbox.ContainerState // protected by mu
	running   map[string]chan struct{} // closed when the run ends; protected by mu
}

func (f *fakeSuspender) record(what string) {
	fh, err := os.OpenFile(os.Getenv(envNodeTestCalls), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err == nil {
		fmt.Fprintf(fh, "%d %s\n", os.Getpid(), what)
		fh.Close()
	}
}

func (f *fakeSuspender) saved() string { return filepath.Join(f.spec.StateDir, "suspended.json") }

func (f *fakeSuspender) Create(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.MkdirAll(f.spec.StateDir, 0o700); err != nil {
		return err
	}
	f.states = nil
	for _, c := range f.spec.Containers {
		f.states = append(f.states, sandbox.ContainerState{Name: c.Name, Phase: sandbox.PhaseCreated})
		f.running[c.Name] = make(chan struct{})
	}
	if b, err := os.ReadFile(f.saved()); err == nil {
		if err := json.Unmarshal(b, &f.states); err != nil {
			return err
		}
		f.suspended = true
		f.record("create loaded")
		return nil
	}
	f.record("create fresh")
	return nil
}

func (f *fakeSuspender) Connect(context.Context, sandbox.Interface) error { return nil }

func (f *fakeSuspender) Start(_ context.Context, name string, _ sandbox.Stdio) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("start " + name)
	for i := range f.states {
		if f.states[i].Name == name {
			f.states[i] = sandbox.ContainerState{Name: name, Phase: sandbox.PhaseRunning, Pid: os.Getpid(), StartedAt: time.Now()}
		}
	}
	return nil
}

func (f *fakeSuspender) Wait(ctx context.Context, name string) (sandbox.ContainerState, error) {
	f.mu.Lock()
	done := f.running[name]
	f.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return sandbox.ContainerState{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, st := range f.states {
		if st.Name == name {
			return st, nil
		}
	}
	return sandbox.ContainerState{}, errors.New("fake: no such container")
}

func (f *fakeSuspender) Exec(context.Context, string, sandbox.ExecSpec, sandbox.Stdio) (int, error) {
	return -1, errors.New("fake: no exec")
}

// end ends every run with code. Preconditions: f.mu held.
func (f *fakeSuspender) end(code int) {
	for i := range f.states {
		if f.states[i].Phase == sandbox.PhaseRunning {
			f.states[i].Phase, f.states[i].ExitCode, f.states[i].FinishedAt = sandbox.PhaseExited, code, time.Now()
			close(f.running[f.states[i].Name])
		}
	}
}

func (f *fakeSuspender) Stop(context.Context, string, time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("stop")
	f.end(143)
	return nil
}

func (f *fakeSuspender) State(context.Context) ([]sandbox.ContainerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sandbox.ContainerState(nil), f.states...), nil
}

func (f *fakeSuspender) Destroy(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("destroy")
	f.end(137)
	return os.RemoveAll(f.spec.StateDir)
}

func (f *fakeSuspender) Suspend(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.suspended {
		return nil
	}
	f.record("suspend")
	b, _ := json.Marshal(f.states)
	f.suspended = true
	return os.WriteFile(f.saved(), b, 0o600)
}

func (f *fakeSuspender) Resume(_ context.Context, stdio func(string) sandbox.Stdio) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.suspended {
		return nil
	}
	f.record(fmt.Sprintf("resume stdio=%v", stdio != nil))
	f.suspended = false
	return os.Remove(f.saved())
}

func (f *fakeSuspender) Suspended() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.suspended
}

// fakeVMRuntimes offers microvm: the fake backend boots nothing.
type fakeVMRuntimes struct{}

func (fakeVMRuntimes) Status() RuntimeStatus {
	return RuntimeStatus{Runtimes: []string{v1.RuntimeMicroVM}, Accelerator: "tcg", GuestKernel: "ready"}
}
func (fakeVMRuntimes) VM() (sandbox.VMOptions, bool) { return sandbox.VMOptions{Accel: "tcg"}, true }

func (fakeVMRuntimes) Template(sandbox.Spec, sandbox.VMOptions) (Template, bool) {
	return Template{}, false
}

// fixedNetwork attaches every instance with one address and counts
// teardowns: CNI needs plugins and a bridge, which the e2e suite covers.
type fixedNetwork struct {
	fakeNetwork
}

func (f *fixedNetwork) Attach(context.Context, string) (network.Attachment, error) {
	return network.Attachment{Interface: "eth0", IP: "10.82.0.5", PrefixLen: 24, MAC: "02:00:0a:52:00:05"}, nil
}

// TestSuspendedSurvivesLostShim: the node suspends an instance when
// spec.suspend asks; when its shim is killed (kill -9), the node launches
// a new one on the same config whose sandbox loads the saved state: the
// instance stays Suspended all along (never Creating, Running or Failed),
// is not restarted, keeps its network; a new agent (cube up restarted)
// adopts that shim; the resume is done by the new shim, which adopts the
// container (no Start), and the suspension is on the status for metering.
func TestSuspendedSurvivesLostShim(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to unpack the image and build its block image: run as root")
	}
	env := newReportEnv(t)
	ctx := context.Background()
	callsPath := filepath.Join(t.TempDir(), "calls")
	t.Setenv(envNodeTestCalls, callsPath) // inherited by the shims
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	imgs, err := image.NewLocalStore(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(imagetest.BuildBusybox(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := imgs.Import(ctx, image.Owner{Tenant: "a"}, f)
	f.Close()
	if err != nil || len(stored) != 1 {
		t.Fatalf("import busybox: %v", err)
	}
	insts := env.st.Instances()
	mutate := func(fn func(*v1.Instance)) {
		t.Helper()
		if _, err := insts.Mutate(ctx, env.key, func(in *v1.Instance) error { fn(in); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	mutate(func(in *v1.Instance) {
		in.Spec.Runtime = v1.RuntimeMicroVM
		in.Spec.Containers[0].ImageDigest = stored[0].Digest
		in.Spec.Containers[0].Command = []string{"sleep", "1000"}
		in.Status.Phase = v1.PhaseScheduled
	})
	nw := &fixedNetwork{fakeNetwork{torndown: map[string]bool{}}}
	state := t.TempDir()
	newAgent := func() *Agent {
		a, err := New(Config{Name: "n1", StateDir: state, Client: env.node, Images: imgs, Network: nw,
			ShimCommand: []string{os.Args[0], "shim", "--config"}, Runtimes: fakeVMRuntimes{},
			Capacity: v1.Resources{CPU: "1", Memory: "1Gi"}, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := newAgent()
	paths := PathsOf(state, "u1")
	t.Cleanup(func() {
		a.Close()
		if err := a.teardown(context.Background(), "u1"); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	get := func() *v1.Instance {
		in, err := insts.Get(ctx, env.key)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	waitFor(t, "the instance runs", func() bool { return get().Status.Phase == v1.PhaseRunning })
	if ip := get().Status.IP; ip != "10.82.0.5" {
		t.Fatalf("IP %q; want the attachment's", ip)
	}
	mutate(func(in *v1.Instance) { in.Spec.Suspend = true })
	waitFor(t, "the node suspends it", func() bool { return get().Status.Phase == v1.PhaseSuspended })
	suspended := get()
	if suspended.Status.SuspendedAt == nil || suspended.Status.IP != "10.82.0.5" || suspended.Status.Containers[0].State != v1.ContainerRunning {
		t.Fatalf("suspended status %+v; want suspendedAt, the IP kept, the container still running", suspended.Status)
	}

	// From here on every stored version must stay Suspended.
	wctx, stopWatch := context.WithCancel(ctx)
	seen := make(chan []string, 1)
	go func() {
		var phases []string
		for ev := range insts.Watch(wctx, env.key, 0) {
			if ev.Object != nil && ev.Type != v1.EventDeleted {
				phases = append(phases, string(ev.Object.Status.Phase)+"/"+ev.Object.Status.Reason)
			}
		}
		seen <- phases
	}()

	old := readPid(t, paths.ShimPid)
	if err := unix.Kill(old, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Until it serves, the agent that launched it may still kill it (an
	// agent closed mid-launch does; the next one launches another).
	waitFor(t, "a new shim loads the saved sandbox and serves", func() bool {
		if !strings.Contains(callsOf(callsPath), "create loaded") || readPid(t, paths.ShimPid) == old {
			return false
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return shim.Dial(shimSocket(paths.Dir)).Ping(pctx) == nil
	})
	newPid := readPid(t, paths.ShimPid)
	// A new agent (cube up killed and started again) adopts that shim.
	a.Close()
	a = newAgent()
	mutate(func(in *v1.Instance) { in.Spec.Suspend = false })
	waitFor(t, "the node resumes it", func() bool { return get().Status.Phase == v1.PhaseRunning })
	stopWatch()
	for _, p := range <-seen {
		if !strings.HasPrefix(p, "Suspended/") && !strings.HasPrefix(p, "Running/") {
			t.Errorf("the instance went %s while suspended without its shim; want Suspended until the resume", p)
		}
	}
	in := get()
	if in.Status.IP != "10.82.0.5" || in.Status.Containers[0].RestartCount != 0 || in.Status.SuspendedAt != nil ||
		in.Status.ResumedAt == nil || in.Status.SuspendedTotal == "" || nw.wasTornDown("u1") {
		t.Errorf("resumed status %+v (network torn down: %v); want the IP kept, no restart, the suspension recorded", in.Status, nw.wasTornDown("u1"))
	}
	calls := callsOf(callsPath)
	for _, line := range strings.Split(strings.TrimSpace(calls), "\n") {
		if strings.HasPrefix(line, strconv.Itoa(newPid)+" start") {
			t.Errorf("the new shim started a container (%q); a suspended instance is resumed and adopted, never restarted", line)
		}
	}
	if !strings.Contains(calls, strconv.Itoa(newPid)+" resume stdio=true") || readPid(t, paths.ShimPid) != newPid {
		t.Errorf("backend calls:\n%s\nwant the adopted shim %d to resume with the logs", calls, newPid)
	}

	// Removing a suspended instance removes its saved state with the rest,
	// and nothing is stopped (nothing runs).
	mutate(func(in *v1.Instance) { in.Spec.Suspend = true })
	waitFor(t, "the node suspends it again", func() bool { return get().Status.Phase == v1.PhaseSuspended })
	if _, err := os.Stat(filepath.Join(paths.Sandbox, "suspended.json")); err != nil {
		t.Fatalf("saved state: %v", err)
	}
	before := strings.Count(callsOf(callsPath), " stop")
	now := time.Now().UTC()
	mutate(func(in *v1.Instance) { in.Metadata.DeletionTimestamp = &now })
	waitFor(t, "the node removes the suspended instance", func() bool {
		_, err := insts.Get(ctx, env.key)
		_, serr := os.Stat(paths.Dir)
		return errors.Is(err, errdefs.ErrNotFound) && errors.Is(serr, os.ErrNotExist) && nw.wasTornDown("u1")
	})
	if after := callsOf(callsPath); strings.Count(after, " stop") != before || !strings.HasSuffix(strings.TrimSpace(after), " destroy") {
		t.Errorf("backend calls at removal:\n%s\nwant a destroy and no stop of the suspended sandbox", after)
	}
}

func callsOf(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func readPid(t *testing.T, path string) int {
	b, _ := os.ReadFile(path)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
