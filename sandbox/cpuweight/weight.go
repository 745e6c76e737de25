// Package cpuweight gives a sandbox's cgroup its CPU weight: when the
// node's CPU is contended, each instance gets a share in proportion to the
// CPU it asked for, whatever runs inside (a VM's guest kernel and
// emulation as much as its containers). The weight goes on the sandbox's
// own cgroup (e.g. /cube/<id>), the level where instances are siblings:
// weights set below it (runc's per-container shares, the VMM's cgroup)
// only divide the instance's share among its parts.
package cpuweight

// Shares is the cgroup v1 cpu.shares for milli thousandths of a core,
// converted as runc and Kubernetes do: 1024 a core, within [2, 262144].
func Shares(milli int64) uint64 {
	return uint64(min(max(2, milli*1024/1000), 262144))
}

// Weight is the cgroup v2 cpu.weight for the same shares, in [1, 10000]
// (Kubernetes' conversion).
func Weight(milli int64) uint64 {
	return 1 + (Shares(milli)-2)*9999/262142
}
