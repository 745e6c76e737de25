package microvm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// vmmCgroup is the VMM's cgroup below the sandbox's (see vmm.JailConfig).
func vmmCgroup(parent string) string { return filepath.Join(parent, "vmm") }

// cgroupPids lists the processes in cgroup path, in every hierarchy.
func cgroupPids(path string) []int {
	var pids []int
	files, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", path, "cgroup.procs"))
	if v2 := filepath.Join("/sys/fs/cgroup", path, "cgroup.procs"); fileExists(v2) {
		files = append(files, v2)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(s); err == nil && !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	slices.Sort(pids)
	return pids
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// VMMPids lists the host processes of the VMM of the sandbox whose cgroup
// parent is parent: a live one means its owner is alive, or died without
// taking it along.
func VMMPids(parent string) []int {
	if parent == "" {
		return nil
	}
	return cgroupPids(vmmCgroup(parent))
}

// killVMM kills a VMM a dead owner left running, and waits until its
// cgroup is empty (ctx bounds the wait).
func killVMM(ctx context.Context, parent string) error {
	pids := VMMPids(parent)
	if len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	tick := time.NewTicker(5 * time.Millisecond) // cgroup v1 has no "empty" event
	defer tick.Stop()
	for len(VMMPids(parent)) > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("the vmm a previous owner left (pids %v) is still there: %w", pids, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}
