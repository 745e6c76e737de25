package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// cgroups places containers in cgroups below the agent's sandbox cgroup.
// In the guest that is cgroup v2 (the agent mounts it); on a host with
// the hybrid layout (the tests' machines) the v1 memory and pids
// hierarchies do the same job.
type cgroups interface {
	// init creates the sandbox cgroup with pids.max = pids (0: none).
	init(pids int64) error
	// create makes (afresh) the cgroup of container name, with its
	// memory bound; the cpu bound comes with limitCPU.
	create(name string, memory int64) (cgroup, error)
	// remove removes the sandbox cgroup and every cgroup below it; they
	// must hold no process.
	remove() error
}

type cgroup interface {
	add(pid int) error
	// limitCPU sets the cpu bound (0: none). It is set once the
	// container's own process runs: the init that prepares it would
	// otherwise crawl under a bound of a few milli-cores.
	limitCPU(cpuMillis int64) error
	// oomKills is how many processes the OOM killer killed in it.
	oomKills() (int64, error)
	remove() error
}

// newCgroups picks v2 when root is a cgroup2 mount with controllers,
// else the v1 hierarchies under /sys/fs/cgroup. parent is the sandbox
// cgroup's path below the root(s).
func newCgroups(root, parent string) (cgroups, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		if b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers")); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return &cgroupsV2{root: root, dir: filepath.Join(root, parent)}, nil
		}
	}
	mem, pids := filepath.Join(root, "memory"), filepath.Join(root, "pids")
	if _, err := os.Stat(filepath.Join(mem, "memory.limit_in_bytes")); err == nil {
		return &cgroupsV1{mem: filepath.Join(mem, parent), pids: filepath.Join(pids, parent)}, nil
	}
	return nil, fmt.Errorf("no usable cgroup hierarchy at %s (mount cgroup2 with the memory controller)", root)
}

func write(dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("set %s/%s to %s: %w", dir, file, value, err)
	}
	return nil
}

// rmdirTree removes a cgroup and the cgroups below it.
func rmdirTree(dir string) error {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			rmdirTree(filepath.Join(dir, e.Name()))
		}
	}
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}

// counter reads "key N" from a flat-keyed cgroup file.
func counter(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), " ")
		if ok && k == key {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, s.Err()
}

type cgroupsV2 struct{ root, dir string }

func (c *cgroupsV2) init(pids int64) error {
	// Controllers are enabled from the root down to the sandbox (and in
	// the sandbox for its containers).
	ctrl := "+memory +pids +cpu"
	if err := write(c.root, "cgroup.subtree_control", ctrl); err != nil {
		return err
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	if err := write(c.dir, "cgroup.subtree_control", ctrl); err != nil {
		return err
	}
	if pids > 0 {
		return write(c.dir, "pids.max", strconv.FormatInt(pids, 10))
	}
	return nil
}

func (c *cgroupsV2) remove() error { return rmdirTree(c.dir) }

func (c *cgroupsV2) create(name string, memory int64) (cgroup, error) {
	dir := filepath.Join(c.dir, name)
	if err := rmdirTree(dir); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	if memory > 0 {
		if err := write(dir, "memory.max", strconv.FormatInt(memory, 10)); err != nil {
			return nil, err
		}
		// No swap in the guest, but say so: a limit that swaps is none.
		write(dir, "memory.swap.max", "0")
	}
	return cgroupV2(dir), nil
}

func (c cgroupV2) limitCPU(cpuMillis int64) error {
	if cpuMillis <= 0 {
		return nil
	}
	const period = 100000
	return write(string(c), "cpu.max", fmt.Sprintf("%d %d", max(cpuMillis*period/1000, 1000), period))
}

type cgroupV2 string

func (c cgroupV2) add(pid int) error { return write(string(c), "cgroup.procs", strconv.Itoa(pid)) }
func (c cgroupV2) oomKills() (int64, error) {
	return counter(filepath.Join(string(c), "memory.events"), "oom_kill")
}
func (c cgroupV2) remove() error { return rmdirTree(string(c)) }

type cgroupsV1 struct{ mem, pids string }

func (c *cgroupsV1) init(pids int64) error {
	for _, d := range []string{c.mem, c.pids} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", d, err)
		}
	}
	// Children inherit hierarchical accounting only when asked (v1).
	write(c.mem, "memory.use_hierarchy", "1")
	if pids > 0 {
		return write(c.pids, "pids.max", strconv.FormatInt(pids, 10))
	}
	return nil
}

func (c *cgroupsV1) remove() error {
	if err := rmdirTree(c.mem); err != nil {
		return err
	}
	return rmdirTree(c.pids)
}

func (c *cgroupsV1) create(name string, memory int64) (cgroup, error) {
	g := cgroupV1{mem: filepath.Join(c.mem, name), pids: filepath.Join(c.pids, name)}
	if err := g.remove(); err != nil {
		return nil, err
	}
	for _, d := range []string{g.mem, g.pids} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, fmt.Errorf("create cgroup %s: %w", d, err)
		}
	}
	if memory > 0 {
		if err := write(g.mem, "memory.limit_in_bytes", strconv.FormatInt(memory, 10)); err != nil {
			return nil, err
		}
		// memsw exists only with swap accounting; without it there is
		// no swap to escape to either.
		write(g.mem, "memory.memsw.limit_in_bytes", strconv.FormatInt(memory, 10))
	}
	return g, nil
}

type cgroupV1 struct{ mem, pids string }

func (c cgroupV1) add(pid int) error {
	for _, d := range []string{c.mem, c.pids} {
		if err := write(d, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// limitCPU: the v1 layout (the tests' hosts) bounds memory and pids only.
func (c cgroupV1) limitCPU(int64) error { return nil }

func (c cgroupV1) oomKills() (int64, error) {
	return counter(filepath.Join(c.mem, "memory.oom_control"), "oom_kill")
}
func (c cgroupV1) remove() error {
	if err := rmdirTree(c.mem); err != nil {
		return err
	}
	return rmdirTree(c.pids)
}
