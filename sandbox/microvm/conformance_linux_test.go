package microvm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	vmtest.Cleanup()
	os.Exit(code)
}

// TestConformance runs the sandbox contract against microVMs: real QEMU
// (TCG here), the guest kernel and the agent built from this tree.
func TestConformance(t *testing.T) {
	sandboxtest.Run(t, harness(t, vmtest.Options(t)))
}

// harness runs the suite against VMs booted with opts.
func harness(t *testing.T, opts sandbox.VMOptions) sandboxtest.Harness {
	return sandboxtest.Harness{
		New: func(t *testing.T, spec sandbox.Spec) (sandbox.Sandbox, error) {
			return New(spec, sandbox.Options{Logger: sandboxtest.Logger(t), VM: opts})
		},
		Image:    vmtest.Image(t),
		HostPids: vmmPids,
		Traces:   traces,
		// A shim's death takes its VMM with it (PR_SET_PDEATHSIG); the
		// test process lives on, so the crash kills the VMM itself.
		Crash: func(t *testing.T, sb sandbox.Sandbox, spec sandbox.Spec) {
			if len(vmmPids(t, spec)) == 0 {
				t.Fatal("no vmm found to kill; the crash would prove nothing")
			}
			for _, pid := range vmmPids(t, spec) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			sandboxtest.WaitFor(t, context.Background(), "the vmm gone", func() bool { return len(vmmPids(t, spec)) == 0 })
		},
		Timeout: 90 * time.Second,
	}
}

// vmmPids lists the processes in spec's VMM cgroup.
func vmmPids(t *testing.T, spec sandbox.Spec) []int { return VMMPids(spec.CgroupParent) }

// traces lists spec's mounts, cgroups, VMM uid and files on the host.
func traces(t *testing.T, spec sandbox.Spec) []string {
	t.Helper()
	var out []string
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for line := range strings.Lines(string(mi)) {
			if strings.Contains(line, spec.StateDir) {
				out = append(out, "mount "+strings.TrimSpace(line))
			}
		}
	}
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + spec.CgroupParent)
	more, _ := filepath.Glob("/sys/fs/cgroup" + spec.CgroupParent)
	for _, d := range append(dirs, more...) {
		out = append(out, "cgroup "+d)
	}
	ids, _ := os.ReadDir(IDDir)
	for _, e := range ids {
		if b, err := os.ReadFile(filepath.Join(IDDir, e.Name())); err == nil && string(b) == spec.ID {
			out = append(out, fmt.Sprintf("vmm uid %s held", e.Name()))
		}
	}
	return out
}
