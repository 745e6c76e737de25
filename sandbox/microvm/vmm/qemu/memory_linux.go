package qemu

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MemoryUsage is a VMM process's memory, split the way the benchmarks
// report it.
type MemoryUsage struct {
	// RSS is the process's whole resident set.
	RSS int64
	// Anon is its anonymous part (RSS without file pages such as the
	// binary and libraries, which every QEMU on the node shares).
	Anon int64
	// Guest is the resident part of the guest RAM mapping: what the
	// guest touched.
	Guest int64
	// PSS is the proportional set size: each page divided by the number
	// of processes mapping it, so pages every QEMU on the node shares
	// (binary, libraries, the kernel) count once per node in total.
	PSS int64
}

// Overhead is what the VMM costs beyond the guest memory it touched
// (vmm_overhead_mib): RSS - Guest.
func (m MemoryUsage) Overhead() int64 { return m.RSS - m.Guest }

// PSSOverhead is the VMM's share of the node's memory beyond the guest
// memory it touched: PSS - Guest (the guest's pages are its own, so they
// count fully in both).
func (m MemoryUsage) PSSOverhead() int64 { return m.PSS - m.Guest }

// ReadMemoryUsage reads /proc/<pid>/smaps of a QEMU whose guest has
// guestMiB of RAM; the guest RAM is the anonymous mapping of exactly that
// size.
func ReadMemoryUsage(pid, guestMiB int) (MemoryUsage, error) {
	var u MemoryUsage
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		return u, err
	}
	defer f.Close()
	guestBytes := uint64(guestMiB) << 20
	sc := bufio.NewScanner(f)
	var size uint64
	var anon bool
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 5 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") {
			var lo, hi uint64
			if _, err := fmt.Sscanf(fs[0], "%x-%x", &lo, &hi); err == nil {
				size = hi - lo
			}
			anon = fs[4] == "0"
			continue
		}
		if len(fs) == 3 && fs[0] == "Pss:" {
			kb, _ := strconv.ParseInt(fs[1], 10, 64)
			u.PSS += kb << 10
		}
		if len(fs) == 3 && fs[0] == "Rss:" {
			kb, _ := strconv.ParseInt(fs[1], 10, 64)
			u.RSS += kb << 10
			if anon {
				u.Anon += kb << 10
				if size == guestBytes {
					u.Guest += kb << 10
				}
			}
		}
	}
	return u, sc.Err()
}
