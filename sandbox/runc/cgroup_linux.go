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
