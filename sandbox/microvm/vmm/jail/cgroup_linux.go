package jail

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/sandbox/cgroupfs"
)

// Cgroup is the VMM's own cgroup, e.g. "/cube/<id>/vmm", made in every
// hierarchy that has one of the controllers it limits (cgroup v1 memory
// and pids; the v2 unified hierarchy when it has them) and in the v1 cpu
// and cpuacct ones (placement only), so the VMM's memory and CPU count
// against its sandbox and its memory and tasks are capped.
type Cgroup struct {
	// Path relative to the hierarchy roots.
	Path string
	// MemoryBytes caps the VMM's memory (guest RAM + its own overhead).
	MemoryBytes int64
	// PidsMax caps its tasks (threads).
	PidsMax int64

	dirs []string // made by Create
}

// Create makes the cgroup and sets its limits. It fails when no hierarchy
// has a memory controller: an unbounded VMM could take the node.
func (c *Cgroup) Create() error {
	if !filepath.IsAbs(c.Path) || strings.Contains(c.Path, "..") {
		return fmt.Errorf("vmm cgroup %q must be an absolute path", c.Path)
	}
	ms, err := cgroupfs.Mounts()
	if err != nil {
		return err
	}
	memSet := false
	for _, m := range ms {
		var files [][2]string
		if m.V2 {
			b, err := os.ReadFile(filepath.Join(m.Point, "cgroup.controllers"))
			if err != nil {
				continue
			}
			ctl := strings.Fields(string(b))
			if slices.Contains(ctl, "memory") {
				files = append(files, [2]string{"memory.max", strconv.FormatInt(c.MemoryBytes, 10)}, [2]string{"memory.swap.max", "0"})
			}
			if slices.Contains(ctl, "pids") {
				files = append(files, [2]string{"pids.max", strconv.FormatInt(c.PidsMax, 10)})
			}
		} else {
			if slices.Contains(m.Controllers, "memory") {
				files = append(files, [2]string{"memory.limit_in_bytes", strconv.FormatInt(c.MemoryBytes, 10)})
			}
			if slices.Contains(m.Controllers, "pids") {
				files = append(files, [2]string{"pids.max", strconv.FormatInt(c.PidsMax, 10)})
			}
		}
		// In the cpu hierarchies the VMM only needs to sit below the
		// sandbox, so the sandbox's cpu limit and accounting cover it.
		placeOnly := !m.V2 && len(files) == 0 && (slices.Contains(m.Controllers, "cpu") || slices.Contains(m.Controllers, "cpuacct"))
		if len(files) == 0 && !placeOnly {
			continue
		}
		dir := filepath.Join(m.Point, c.Path)
		if m.V2 {
			// Enable the controllers down to our parent, as runc does.
			if err := enableV2(m.Point, filepath.Dir(c.Path)); err != nil {
				c.Remove(context.Background())
				return err
			}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			c.Remove(context.Background())
			return fmt.Errorf("create vmm cgroup: %w", err)
		}
		c.dirs = append(c.dirs, dir)
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(dir, f[0]), []byte(f[1]), 0); err != nil {
				if f[0] == "memory.swap.max" && errors.Is(err, os.ErrNotExist) {
					continue
				}
				c.Remove(context.Background())
				return fmt.Errorf("set vmm cgroup %s=%s: %w", f[0], f[1], err)
			}
			if strings.HasPrefix(f[0], "memory.") {
				memSet = true
			}
		}
	}
	if !memSet {
		c.Remove(context.Background())
		return fmt.Errorf("no cgroup hierarchy has a memory controller for the vmm: mount cgroup v1 memory or cgroup v2 with memory enabled")
	}
	return nil
}

func enableV2(root, rel string) error {
	dir := root
	for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
		if part == "" {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		for _, ctl := range []string{"memory", "pids"} {
			if slices.Contains(strings.Fields(string(b)), ctl) {
				os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+ctl), 0)
			}
		}
		dir = filepath.Join(dir, part)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
	}
	return nil
}

// MoveCharges asks cgroup v1's memory controller to move the memory a
// process has charged elsewhere along with it when Add moves it here
// (memory.move_charge_at_immigrate: anonymous and file pages). Best
// effort: newer kernels deprecate it, and v2 never moves charges.
func (c *Cgroup) MoveCharges() {
	for _, d := range c.dirs {
		os.WriteFile(filepath.Join(d, "memory.move_charge_at_immigrate"), []byte("3"), 0)
	}
}

// Add moves pid into the cgroup in every hierarchy it was made in.
func (c *Cgroup) Add(pid int) error {
	for _, d := range c.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("move vmm %d into cgroup %s: %w", pid, d, err)
		}
	}
	return nil
}

// Remove deletes the cgroup once its tasks are gone (the kernel may need a
// moment after the last one is reaped); it gives up when ctx is done.
// Missing dirs are fine, so Remove is idempotent.
func (c *Cgroup) Remove(ctx context.Context) error {
	dirs := c.dirs
	if dirs == nil {
		// Not made by this process (a shim's leftover): find every copy.
		ms, err := cgroupfs.Mounts()
		if err != nil {
			return err
		}
		for _, m := range ms {
			dirs = append(dirs, filepath.Join(m.Point, c.Path))
		}
	}
	var errs []error
	for _, d := range dirs {
		for {
			err := unix.Rmdir(d)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || ctx.Err() != nil {
				errs = append(errs, fmt.Errorf("remove vmm cgroup %s: %w", d, err))
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond): // poll: no event says "empty" on v1
			}
		}
	}
	c.dirs = nil
	return errors.Join(errs...)
}
