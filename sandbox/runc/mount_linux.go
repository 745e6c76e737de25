package runc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	root, point, fstype, superOpts string
}

func readMountinfo() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root point opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 {
			continue
		}
		out = append(out, mountEntry{
			root: unescapeMount(a[3]), point: unescapeMount(a[4]),
			fstype: b[0], superOpts: b[2],
		})
	}
	return out, sc.Err()
}

// unescapeMount undoes the octal escapes (\040 for space...) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isMountPoint tells whether path is the mount point of some mount.
func isMountPoint(path string) (bool, error) {
	ms, err := readMountinfo()
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.point == path {
			return true, nil
		}
	}
	return false, nil
}

// mountsUnder lists mount points at or below dir.
func mountsUnder(dir string) ([]string, error) {
	ms, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			out = append(out, m.point)
		}
	}
	return out, nil
}

// unmountAll detaches every mount stacked on path (a path may carry several).
func unmountAll(path string) error {
	for range 16 {
		err := unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return nil // not (or no longer) a mount point
		default:
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 16 unmounts", path)
}

// mountOverlay mounts lower (read-only) + upper/work at merged, unless
// merged is already a mount point.
func mountOverlay(lower, upper, work, merged string) error {
	if mounted, err := isMountPoint(merged); err != nil || mounted {
		return err
	}
	for _, p := range []string{lower, upper, work} {
		if strings.ContainsAny(p, ",:") {
			return fmt.Errorf("overlay path %q contains ',' or ':', which overlayfs options cannot carry; use another directory", p)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay at %s (lower %s): %w", merged, lower, err)
	}
	return nil
}

// cgroupMounts returns the mount points of every cgroup hierarchy (each v1
// controller, named v1 hierarchies and the v2 unified one).
func cgroupMounts() ([]mountEntry, error) {
	ms, err := readMountinfo()
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, m := range ms {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m)
		}
	}
	return out, nil
}

// oomKills reads how many processes the OOM killer killed in the cgroup at
// path (relative to the hierarchy roots): memory.oom_control on v1,
// memory.events on v2. Both have an "oom_kill N" line.
func oomKills(path string) (uint64, error) {
	ms, err := cgroupMounts()
	if err != nil {
		return 0, err
	}
	var files []string
	for _, m := range ms {
		switch {
		case m.fstype == "cgroup" && hasOpt(m.superOpts, "memory"):
			files = append(files, filepath.Join(m.point, path, "memory.oom_control"))
		case m.fstype == "cgroup2":
			files = append(files, filepath.Join(m.point, path, "memory.events"))
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "oom_kill "); ok {
				return strconv.ParseUint(v, 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no memory.oom_control or memory.events for cgroup %s", path)
}

// swapAccounted tells whether cgroup v1 memory.memsw.* exists, i.e. whether
// the spec may cap memory+swap.
func swapAccounted() bool {
	ms, err := cgroupMounts()
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.fstype == "cgroup" && hasOpt(m.superOpts, "memory") {
			_, err := os.Stat(filepath.Join(m.point, "memory.memsw.limit_in_bytes"))
			return err == nil
		}
		if m.fstype == "cgroup2" && m.point == "/sys/fs/cgroup" {
			return true // pure v2: runc maps swap to memory.swap.max
		}
	}
	return false
}

func hasOpt(opts, want string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// removeCgroups removes the cgroup directories at each of paths (deepest
// first) in every hierarchy. A directory whose last processes are still
// exiting answers EBUSY for a moment, so it retries briefly.
func removeCgroups(paths ...string) error {
	ms, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ms {
		for _, p := range paths {
			dir := filepath.Join(m.point, p)
			if dir == m.point {
				continue
			}
			if err := rmdirRetry(dir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func rmdirRetry(dir string) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
