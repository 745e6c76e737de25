package vmhost

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/guest/kernel"
	"github.com/cube-platform/cube/node"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	vmtest.Cleanup()
	os.Exit(code)
}

// waitProbed waits until h has decided whether it can run VMs.
func waitProbed(t *testing.T, h *Host) node.RuntimeStatus {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if st := h.Status(); st.GuestKernel != "" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatal("the host never decided whether it runs VMs")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNoKernel: without a cached kernel (and no build) the node offers no
// microvm and says why; it offers no VM options.
func TestNoKernel(t *testing.T) {
	h := New(Config{CacheDir: t.TempDir(), Agent: "/nonexistent/cube-agent"})
	if st := h.Status(); slices.Contains(st.Runtimes, v1.RuntimeMicroVM) {
		t.Fatalf("status before Start = %+v; want no microvm", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.Start(ctx)
	st := waitProbed(t, h)
	if slices.Contains(st.Runtimes, v1.RuntimeMicroVM) || st.Accelerator != "" || !strings.Contains(st.GuestKernel, "no guest kernel") || !strings.Contains(st.GuestKernel, "make kernel") {
		t.Errorf("status = %+v; want no microvm, no accelerator, and the reason naming make kernel", st)
	}
	if _, ok := h.VM(); ok {
		t.Error("VM() offers options without a kernel")
	}
}

// TestReady: with the node's cached kernel, the agent built from this tree
// and QEMU, the node offers microvm with a probed accelerator and the
// options a VM boots with.
func TestReady(t *testing.T) {
	vmtest.Require(t)
	h := New(Config{CacheDir: kernel.DefaultCacheDir, Agent: vmtest.AgentBinary(t), Init: vmtest.InitBinary(t)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.Start(ctx)
	st := waitProbed(t, h)
	if !slices.Contains(st.Runtimes, v1.RuntimeMicroVM) || st.GuestKernel != "ready" || (st.Accelerator != "tcg" && st.Accelerator != "kvm") {
		t.Fatalf("status = %+v; want microvm offered, kernel ready, accelerator kvm or tcg", st)
	}
	vm, ok := h.VM()
	want, _ := kernel.Find(kernel.DefaultCacheDir)
	if !ok || vm.Kernel != want || vm.Initrd == "" || vm.VMM == "" || vm.Accel != st.Accelerator {
		t.Errorf("VM() = %+v, %v; want the cached kernel %s, an initrd, QEMU and the accelerator", vm, ok, want)
	}
	if fi, err := os.Stat(vm.Initrd); err != nil || fi.Size() == 0 {
		t.Errorf("initrd %s: %v", vm.Initrd, err)
	}
	// An archive the cache pruned meanwhile is rebuilt for the next VM.
	if err := os.Remove(vm.Initrd); err != nil {
		t.Fatal(err)
	}
	again, ok := h.VM()
	if fi, err := os.Stat(again.Initrd); !ok || err != nil || fi.Size() == 0 {
		t.Errorf("VM() after the initrd was removed = %+v, %v (stat: %v); want it rebuilt", again, ok, err)
	}
}
