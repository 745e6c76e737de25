package runc

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

// TestConformance runs the sandbox contract against runc.
func TestConformance(t *testing.T) {
	requireRunc(t)
	sandboxtest.Run(t, sandboxtest.Harness{
		New: func(t *testing.T, spec sandbox.Spec) (sandbox.Sandbox, error) {
			return New(spec, Options{Logger: testLogger(t)})
		},
		Image:    sandbox.RootFS{Dir: testRootFS},
		HostPids: sandboxPids,
		Traces:   sandboxTraces,
		// runc's containers outlive the shim that made them: a dead
		// shim leaves them running, with their mounts and cgroups.
		Crash: func(*testing.T, sandbox.Sandbox, sandbox.Spec) {},
	})
}

// sandboxPids lists the processes in the cgroups below spec's parent
// (the pids hierarchy: every container and exec is in it).
func sandboxPids(t *testing.T, spec sandbox.Spec) []int {
	t.Helper()
	var pids []int
	root := filepath.Join("/sys/fs/cgroup/pids", spec.CgroupParent)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() != "cgroup.procs" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read the sandbox's cgroups: %v", err)
	}
	slices.Sort(pids)
	return pids
}

// sandboxTraces lists spec's mounts, cgroups and loop devices.
func sandboxTraces(t *testing.T, spec sandbox.Spec) []string {
	t.Helper()
	var out []string
	mounts, err := mountsUnder(spec.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		out = append(out, "mount "+m)
	}
	ms, _ := cgroupMounts()
	for _, m := range ms {
		dir := filepath.Join(m.point, spec.CgroupParent)
		if _, err := os.Stat(dir); err == nil {
			out = append(out, "cgroup "+dir)
		}
	}
	for _, l := range loopsBacking(t, filepath.Join(spec.StateDir, "disk.img")) {
		out = append(out, "loop "+l)
	}
	return out
}
