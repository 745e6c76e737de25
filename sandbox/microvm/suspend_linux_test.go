package microvm

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

// counted is the highest number a counting container printed.
func counted(a *arrivals) int {
	lines, _ := a.snapshot()
	n := -1
	for _, l := range lines {
		if v, err := strconv.Atoi(l); err == nil && v > n {
			n = v
		}
	}
	return n
}

// TestSuspendResume: a suspended VM runs nothing and holds no VMM; it
// resumes where it was, in the same process and in a new one (a shim
// that replaced one killed while the VM was suspended): the counter goes
// on, its files are there, and its exit is still the container's.
func TestSuspendResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	opts := templateOptions(t)
	const script = `i=0; while [ ! -e /stop ]; do echo $i; echo $i > /count; i=$((i+1)); sleep 0.05; done; exit 7`
	sb, spec := createShellVMWith(t, ctx, opts, script)
	out := &arrivals{}
	if err := sb.Start(ctx, "app", sandbox.Stdio{Stdout: out, Stderr: out}); err != nil {
		t.Fatal(err)
	}
	waited := make(chan sandbox.ContainerState, 1)
	go func() {
		st, _ := sb.Wait(context.Background(), "app")
		waited <- st
	}()
	sandboxtest.WaitFor(t, ctx, "the counter at 5", func() bool { return counted(out) >= 5 })
	sus := sb.(sandbox.Suspender)

	// In the same process.
	if err := sus.Suspend(ctx); err != nil {
		t.Fatalf("Suspend: %v", err)
	}
	if !sus.Suspended() || len(vmmPids(t, spec)) != 0 {
		t.Fatalf("after Suspend: suspended %v, vmm pids %v; want true and none", sus.Suspended(), vmmPids(t, spec))
	}
	if _, err := os.Stat(filepath.Join(spec.StateDir, suspendState)); err != nil {
		t.Fatalf("no saved state: %v", err)
	}
	before := counted(out)
	if st, _ := sb.State(ctx); st[0].Phase != sandbox.PhaseRunning {
		t.Fatalf("a suspended container is %s, want running", st[0].Phase)
	}
	if err := sus.Resume(ctx, nil); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	sandboxtest.WaitFor(t, ctx, "the counter going on", func() bool { return counted(out) > before+3 })
	rec, _ := ReadBootRecord(spec.StateDir)
	t.Logf("resumed in the same process in %.1f ms, the counter from %d on", rec.ResumeMs, before)

	// In a new process: the old one's sandbox is gone with it.
	if err := sus.Suspend(ctx); err != nil {
		t.Fatalf("second Suspend: %v", err)
	}
	before = counted(out)
	sb2, err := New(spec, sandbox.Options{Logger: sandboxtest.Logger(t), VM: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb2.Destroy(context.Background()) }) // before sb's
	if err := sb2.Create(ctx); err != nil {
		t.Fatalf("Create of a suspended sandbox: %v", err)
	}
	sus2 := sb2.(sandbox.Suspender)
	if !sus2.Suspended() || len(vmmPids(t, spec)) != 0 {
		t.Fatalf("a new sandbox on the saved state: suspended %v, vmm pids %v; want true and none", sus2.Suspended(), vmmPids(t, spec))
	}
	out2 := &arrivals{}
	if err := sus2.Resume(ctx, func(string) sandbox.Stdio { return sandbox.Stdio{Stdout: out2, Stderr: out2} }); err != nil {
		t.Fatalf("Resume in a new process: %v", err)
	}
	sandboxtest.WaitFor(t, ctx, "the counter going on in the new process", func() bool { return counted(out2) > before })
	rec, _ = ReadBootRecord(spec.StateDir)
	t.Logf("resumed by a new sandbox in %.1f ms, the counter from %d on (first line there %d)", rec.ResumeMs, before, firstCount(out2))
	if first := firstCount(out2); first > before+20 {
		t.Errorf("the counter jumped from %d to %d: it did not go on where it was", before, first)
	}
	if _, err := sb2.Exec(ctx, "app", sandbox.ExecSpec{Args: []string{"touch", "/stop"}}, sandbox.Stdio{}); err != nil {
		t.Fatal(err)
	}
	st, err := sb2.Wait(ctx, "app")
	if err != nil || st.ExitCode != 7 {
		t.Fatalf("the resumed container ended %+v, %v; want exit 7", st, err)
	}
	select {
	case st := <-waited:
		t.Errorf("the suspending process's Wait returned %+v; its VM was suspended, not ended", st)
	default:
	}
	if sus2.Suspended() {
		t.Error("still suspended after Resume")
	}
}

func firstCount(a *arrivals) int {
	lines, _ := a.snapshot()
	for _, l := range lines {
		if v, err := strconv.Atoi(l); err == nil {
			return v
		}
	}
	return -1
}
