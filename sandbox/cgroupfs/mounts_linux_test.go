package cgroupfs

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMounts: every hierarchy found is a mounted cgroup filesystem of the
// version it says, and a v1 one names its controllers.
func TestMounts(t *testing.T) {
	ms, err := Mounts()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no cgroup hierarchy found; this host runs processes in cgroups")
	}
	for _, m := range ms {
		var st unix.Statfs_t
		if err := unix.Statfs(m.Point, &st); err != nil {
			t.Errorf("%s: %v", m.Point, err)
			continue
		}
		want := int64(unix.CGROUP_SUPER_MAGIC)
		if m.V2 {
			want = unix.CGROUP2_SUPER_MAGIC
		}
		if int64(st.Type) != want {
			t.Errorf("%s (v2 %v): filesystem type %#x; want %#x", m.Point, m.V2, st.Type, want)
		}
		if !m.V2 && !slices.ContainsFunc(m.Controllers, func(c string) bool {
			return slices.Contains([]string{"cpu", "cpuacct", "memory", "pids", "devices", "freezer", "blkio", "cpuset", "net_cls", "perf_event", "hugetlb", "rdma", "misc"}, c) || len(c) > 5 && c[:5] == "name="
		}) {
			t.Errorf("%s: v1 options %v name no controller", m.Point, m.Controllers)
		}
	}
}
