package runc

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// setCPUQuota caps the cgroup at path (relative to the hierarchy roots,
// as runc's cgroupsPath) to quota µs of CPU per period µs: cpu.cfs_* in
// a cgroup v1 cpu hierarchy, else cpu.max where cgroup v2 has the cpu
// controller. It fails if no hierarchy has a cpu controller for path.
func setCPUQuota(path string, quota, period int64) error {
	ms, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.fstype != "cgroup" || !hasOpt(m.superOpts, "cpu") {
			continue
		}
		dir := filepath.Join(m.point, path)
		// The period first: the kernel checks quota/period against the
		// parent's, and our period is the default one anyway.
		if err := writeCgroupFile(dir, "cpu.cfs_period_us", strconv.FormatInt(period, 10)); err != nil {
			return err
		}
		return writeCgroupFile(dir, "cpu.cfs_quota_us", strconv.FormatInt(quota, 10))
	}
	for _, m := range ms {
		if m.fstype != "cgroup2" {
			continue
		}
		dir := filepath.Join(m.point, path)
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		if err != nil || !slices.Contains(strings.Fields(string(b)), "cpu") {
			continue
		}
		return writeCgroupFile(dir, "cpu.max", fmt.Sprintf("%d %d", quota, period))
	}
	return fmt.Errorf("set cpu limit of cgroup %s: no cgroup hierarchy has a cpu controller for it", path)
}

func writeCgroupFile(dir, name, value string) error {
	if err := os.WriteFile(filepath.Join(dir, name), []byte(value), 0); err != nil {
		return fmt.Errorf("set cgroup %s to %s: %w", name, value, err)
	}
	return nil
}

// setPidsLimit creates the sandbox's parent cgroup (path, relative to the
// hierarchy roots) in the pids hierarchy and caps it at limit tasks. The
// limit covers every container cgroup runc makes below it, and so every
// exec. On cgroup v1 that is the pids hierarchy; on v2 the unified one,
// where the pids controller is enabled down from the root as runc does.
// It fails if no hierarchy has the pids controller: an unbounded sandbox
// would let a fork bomb take the node.
func setPidsLimit(path string, limit int64) error {
	ms, err := cgroupMounts()
	if err != nil {
		return err
	}
	value := strconv.FormatInt(limit, 10)
	for _, m := range ms {
		if m.fstype == "cgroup" && hasOpt(m.superOpts, "pids") {
			dir := filepath.Join(m.point, path)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create pids cgroup %s: %w", path, err)
			}
			return writeCgroupFile(dir, "pids.max", value)
		}
	}
	for _, m := range ms {
		if m.fstype != "cgroup2" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.point, "cgroup.controllers"))
		if err != nil || !slices.Contains(strings.Fields(string(b)), "pids") {
			continue
		}
		dir := m.point
		for part := range strings.SplitSeq(strings.Trim(path, "/"), "/") {
			if err := writeCgroupFile(dir, "cgroup.subtree_control", "+pids"); err != nil {
				return err
			}
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
				return fmt.Errorf("create cgroup %s: %w", dir, err)
			}
		}
		return writeCgroupFile(dir, "pids.max", value)
	}
	return fmt.Errorf("limit the processes of cgroup %s: no cgroup hierarchy has the pids controller (mount it, e.g. /sys/fs/cgroup/pids)", path)
}

// setMemoryLimit caps the sandbox's parent cgroup (path) at limit bytes,
// swap included when memsw. Each container has its own limit, but memory
// it leaves behind in the instance's shared namespaces (a System V
// segment, a POSIX queue, /dev/shm) stays charged once its cgroup is gone,
// and its restart starts from a fresh limit: only a bound on the parent
// keeps an instance that restarts from taking the node's memory. On
// cgroup v1 that is the memory hierarchy; on v2 the unified one, where the
// memory controller is enabled down from the root as runc does.
func setMemoryLimit(path string, limit int64, memsw bool) error {
	ms, err := cgroupMounts()
	if err != nil {
		return err
	}
	value := strconv.FormatInt(limit, 10)
	for _, m := range ms {
		if m.fstype == "cgroup" && hasOpt(m.superOpts, "memory") {
			dir := filepath.Join(m.point, path)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create memory cgroup %s: %w", path, err)
			}
			// memory before memory+swap: the kernel keeps memory <= memsw.
			if err := writeCgroupFile(dir, "memory.limit_in_bytes", value); err != nil {
				return err
			}
			if memsw {
				return writeCgroupFile(dir, "memory.memsw.limit_in_bytes", value)
			}
			return nil
		}
	}
	for _, m := range ms {
		if m.fstype != "cgroup2" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.point, "cgroup.controllers"))
		if err != nil || !slices.Contains(strings.Fields(string(b)), "memory") {
			continue
		}
		dir := m.point
		for part := range strings.SplitSeq(strings.Trim(path, "/"), "/") {
			if err := writeCgroupFile(dir, "cgroup.subtree_control", "+memory"); err != nil {
				return err
			}
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
				return fmt.Errorf("create cgroup %s: %w", dir, err)
			}
		}
		if err := writeCgroupFile(dir, "memory.max", value); err != nil {
			return err
		}
		if memsw {
			return writeCgroupFile(dir, "memory.swap.max", "0")
		}
		return nil
	}
	return fmt.Errorf("limit the memory of cgroup %s: no cgroup hierarchy has the memory controller (mount it, e.g. /sys/fs/cgroup/memory)", path)
}
