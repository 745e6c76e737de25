package microvm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cube-platform/cube/guest/initramfs"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

// TestVMMDeath: a VMM killed with SIGKILL ends the running container with
// ReasonVMMExited; the next Start boots a new VM over the same writable
// layer, and exec works in it. (What the guest had not synced dies with
// it, as on a power cut: the container syncs.)
func TestVMMDeath(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sb, spec := createShellVM(t, ctx, "echo run >> /runs; sync; wc -l < /runs; exec sleep 600")
	var out1 sandboxtest.Buffer
	if err := sb.Start(ctx, "app", sandbox.Stdio{Stdout: &out1}); err != nil {
		t.Fatal(err)
	}
	sandboxtest.WaitFor(t, ctx, "the first run", func() bool { return strings.TrimSpace(out1.String()) == "1" })
	pids := VMMPids(spec.CgroupParent)
	if len(pids) != 1 {
		t.Fatalf("vmm pids %v; want one", pids)
	}
	syscall.Kill(pids[0], syscall.SIGKILL)
	st, err := sb.Wait(ctx, "app")
	if err != nil || st.Phase != sandbox.PhaseExited || st.Reason != sandbox.ReasonVMMExited || st.ExitCode != 137 {
		t.Fatalf("Wait after the VMM's death = %+v, %v; want exited 137 with reason VMMExited", st, err)
	}
	var out2 sandboxtest.Buffer
	if err := sb.Start(ctx, "app", sandbox.Stdio{Stdout: &out2}); err != nil {
		t.Fatalf("Start after the VMM's death: %v", err)
	}
	sandboxtest.WaitFor(t, ctx, "the second run", func() bool { return strings.TrimSpace(out2.String()) != "" })
	if got := strings.TrimSpace(out2.String()); got != "2" {
		t.Errorf("second run counted %q runs; want 2 (the writable layer kept)", got)
	}
	if now := VMMPids(spec.CgroupParent); len(now) != 1 || now[0] == pids[0] {
		t.Errorf("vmm pids after the restart %v; want one new one", now)
	}
	var out3 sandboxtest.Buffer
	if code, err := sb.Exec(ctx, "app", sandbox.ExecSpec{Args: []string{"cat", "/runs"}}, sandbox.Stdio{Stdout: &out3}); err != nil || code != 0 || strings.Count(out3.String(), "run") != 2 {
		t.Errorf("exec cat /runs in the new VM = %q, %d, %v; want two runs", out3.String(), code, err)
	}
}

// createShellVM creates (boots) a VM sandbox whose one container, app,
// runs script in the busybox test image; the test's end destroys it.
func createShellVM(t *testing.T, ctx context.Context, script string) (sandbox.Sandbox, sandbox.Spec) {
	t.Helper()
	return createShellVMWith(t, ctx, vmtest.Options(t), script)
}

// createShellVMWith is createShellVM booting with opts (a template's).
func createShellVMWith(t *testing.T, ctx context.Context, opts sandbox.VMOptions, script string) (sandbox.Sandbox, sandbox.Spec) {
	t.Helper()
	id := sandboxtest.RandomID()
	spec := sandbox.Spec{ID: id, Hostname: "h-" + id, StateDir: filepath.Join(t.TempDir(), "state"), CgroupParent: "/cube-test/" + id,
		Containers: []sandbox.ContainerSpec{sandboxtest.Shell("app", script)}}
	spec.Containers[0].RootFS = vmtest.Image(t)
	return createVM(t, ctx, opts, spec), spec
}

// createVM creates (boots) a VM sandbox of spec; the test's end destroys it.
func createVM(t *testing.T, ctx context.Context, opts sandbox.VMOptions, spec sandbox.Spec) sandbox.Sandbox {
	t.Helper()
	sb, err := New(spec, sandbox.Options{Logger: sandboxtest.Logger(t), VM: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sb.Destroy(context.Background()); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	if err := sb.Create(ctx); err != nil {
		t.Fatal(err)
	}
	return sb
}

// TestBadGuests: a kernel that is not one, and a guest whose init never
// answers, fail Create with a clear reason within the boot timeout, and
// leave no process; Destroy then leaves nothing at all.
func TestBadGuests(t *testing.T) {
	opts := vmtest.Options(t)
	dir := t.TempDir()
	notKernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(notKernel, []byte("not a kernel\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("no busybox for a silent init: %v", err)
	}
	silent := filepath.Join(dir, "silent.cpio")
	f, err := os.Create(silent)
	if err != nil {
		t.Fatal(err)
	}
	// busybox as /init runs its init: a shell on the console, and never a
	// word on the agent's port.
	if err := initramfs.Write(f, initramfs.Entries(busybox, nil)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, tc := range []struct {
		name, want string
		edit       func(*sandbox.VMOptions)
	}{
		{"not a kernel", "start the vm", func(o *sandbox.VMOptions) { o.Kernel = notKernel }},
		{"silent init", "did not boot within 5s", func(o *sandbox.VMOptions) { o.Initrd, o.BootTimeout = silent, 5*time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts
			tc.edit(&o)
			id := sandboxtest.RandomID()
			spec := sandbox.Spec{ID: id, Hostname: "h-" + id, StateDir: filepath.Join(t.TempDir(), "state"), CgroupParent: "/cube-test/" + id,
				Containers: []sandbox.ContainerSpec{sandboxtest.Shell("app", "true")}}
			spec.Containers[0].RootFS = vmtest.Image(t)
			sb, err := New(spec, sandbox.Options{Logger: sandboxtest.Logger(t), VM: o})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			err = sb.Create(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Create = %v; want an error saying %q", err, tc.want)
			}
			if took := time.Since(start); took > 30*time.Second {
				t.Errorf("Create took %s to fail; want it within the boot timeout", took)
			}
			if pids := VMMPids(spec.CgroupParent); len(pids) > 0 {
				t.Errorf("vmm processes after a failed Create: %v", pids)
			}
			if err := sb.Destroy(ctx); err != nil {
				t.Fatalf("Destroy: %v", err)
			}
			if tr := traces(t, spec); len(tr) > 0 {
				t.Errorf("traces after Destroy: %v", tr)
			}
			if _, err := os.Stat(spec.StateDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state dir after Destroy: %v", err)
			}
		})
	}
}
