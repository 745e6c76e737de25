// Package cgroupfs finds this host's cgroup hierarchies, for the code that
// makes and limits cgroups of its own (a VMM's jail, a sandbox's weight).
package cgroupfs

import (
	"bufio"
	"os"
	"strings"
)

// Mount is one mounted cgroup hierarchy.
type Mount struct {
	// Point is where it is mounted, e.g. /sys/fs/cgroup/memory.
	Point string
	// V2 is the unified hierarchy; its controllers are in the root's
	// cgroup.controllers, not in the mount.
	V2 bool
	// Controllers are a v1 hierarchy's, from its super options (they
	// also hold options such as "rw").
	Controllers []string
}

// Mounts lists the cgroup hierarchies in /proc/self/mountinfo, v1 and v2.
func Mounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []Mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root point opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 {
			continue
		}
		switch b[0] {
		case "cgroup2":
			ms = append(ms, Mount{Point: a[4], V2: true})
		case "cgroup":
			ms = append(ms, Mount{Point: a[4], Controllers: strings.Split(b[2], ",")})
		}
	}
	return ms, sc.Err()
}
