package cpuweight

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cube-platform/cube/sandbox/cgroupfs"
)

// Set creates path (relative to the hierarchy roots, clean and absolute,
// e.g. /cube/<id>) in the cgroup v1 cpu hierarchy and writes its
// cpu.shares, or, with no v1 cpu hierarchy, in the v2 one with the cpu
// controller enabled down to it and writes its cpu.weight. It fails when
// neither has a cpu controller: an instance without a weight would weigh
// as much as any other.
func Set(path string, milli int64) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/" {
		return fmt.Errorf("cpu weight: cgroup %q must be a clean absolute path below the root", path)
	}
	v1, v2, err := cpuMounts()
	if err != nil {
		return err
	}
	if v1 != "" {
		dir := filepath.Join(v1, path)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cpu weight: create cgroup %s: %w", dir, err)
		}
		return write(dir, "cpu.shares", Shares(milli))
	}
	if v2 == "" {
		return fmt.Errorf("cpu weight of cgroup %s: no cgroup hierarchy has the cpu controller (mount it, e.g. /sys/fs/cgroup/cpu)", path)
	}
	dir := v2
	for part := range strings.SplitSeq(strings.Trim(path, "/"), "/") {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+cpu"), 0); err != nil {
			return fmt.Errorf("cpu weight: enable cpu below %s: %w", dir, err)
		}
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("cpu weight: create cgroup %s: %w", dir, err)
		}
	}
	return write(dir, "cpu.weight", Weight(milli))
}

func write(dir, name string, v uint64) error {
	if err := os.WriteFile(filepath.Join(dir, name), []byte(strconv.FormatUint(v, 10)), 0); err != nil {
		return fmt.Errorf("cpu weight: set %s of %s to %d: %w", name, dir, v, err)
	}
	return nil
}

// cpuMounts finds the v1 hierarchy with the cpu controller and a v2 one
// whose root offers it.
func cpuMounts() (v1, v2 string, err error) {
	ms, err := cgroupfs.Mounts()
	if err != nil {
		return "", "", err
	}
	for _, m := range ms {
		switch {
		case !m.V2 && v1 == "" && slices.Contains(m.Controllers, "cpu"):
			v1 = m.Point
		case m.V2 && v2 == "":
			if c, err := os.ReadFile(filepath.Join(m.Point, "cgroup.controllers")); err == nil && slices.Contains(strings.Fields(string(c)), "cpu") {
				v2 = m.Point
			}
		}
	}
	return v1, v2, nil
}
