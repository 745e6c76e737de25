package cpuweight

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
// whose root offers it, from /proc/self/mountinfo.
func cpuMounts() (v1, v2 string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "id parent maj:min root mountpoint opts [optional...] - fstype source superopts"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 5 || len(b) < 3 {
			continue
		}
		switch b[0] {
		case "cgroup":
			if v1 == "" && slices.Contains(strings.Split(b[2], ","), "cpu") {
				v1 = a[4]
			}
		case "cgroup2":
			if c, err := os.ReadFile(filepath.Join(a[4], "cgroup.controllers")); err == nil && v2 == "" &&
				slices.Contains(strings.Fields(string(c)), "cpu") {
				v2 = a[4]
			}
		}
	}
	return v1, v2, sc.Err()
}
