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
		containers[i].RootFS = sandbox.RootFS{Dir: testRootFS}
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

func TestResourcesReachCgroups(t *testing.T) {
	sb, spec := newTestSandbox(t, sandbox.ContainerSpec{Name: "c", Args: []string{"sleep", "1000"}, MilliCPU: 250, MemoryBytes: 64 << 20})
	ctx := testCtx(t)
	if err := sb.Start(ctx, "c", sandbox.Stdio{}); err != nil {
		t.Fatal(err)
	}
	path := cgroupsPath(spec, "c")
	for file, want := range map[string]string{
		"/sys/fs/cgroup/cpu" + path + "/cpu.cfs_quota_us":  "25000",
		"/sys/fs/cgroup/cpu" + path + "/cpu.cfs_period_us": "100000",
		// The instance's weight against the others is its parent's.
		"/sys/fs/cgroup/cpu" + spec.CgroupParent + "/cpu.shares":        "256",
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
			Containers: []sandbox.ContainerSpec{{Name: "c", RootFS: sandbox.RootFS{Dir: testRootFS}, Args: []string{"readlink", "/proc/self/ns/net"}}}}
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
