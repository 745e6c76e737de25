package kernel

import (
	"bufio"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// CmdlineTCG returns what to append to Cmdline for a single-vCPU guest
// under TCG (software emulation), where the guest's clocks are calibrated
// against an emulated PIT on a host that may be busy:
//   - nolapic_timer: without a TSC-deadline timer the kernel calibrates
//     the local APIC timer against the PIT, which took about 250 ms of an
//     emulated boot; the PIT is the clock event device instead (uptime at
//     /init: median 0.90 s -> 0.68 s, 6 runs each on a loaded 2-core host);
//   - tsc_early_khz=N, when the host knows its TSC frequency (TCG's guest
//     TSC is the host's): no TSC calibration, which on a loaded host
//     failed in 1 boot of 4 ("Unable to calibrate against PIT"), leaving
//     the guest on the 4 ms jiffies clock.
//
// Not for KVM, whose guests have kvm-clock and the TSC-deadline timer,
// nor for several vCPUs, which would then need broadcast ticks.
func CmdlineTCG() string {
	s := "nolapic_timer"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		if khz, ok := tscKHz(f); ok {
			s += " tsc_early_khz=" + strconv.Itoa(khz)
		}
	}
	return s
}

// tscKHz reads the host's TSC frequency from /proc/cpuinfo: the first
// CPU's "cpu MHz" is that frequency only when the kernel knows it
// (tsc_known_freq), it is constant (constant_tsc, nonstop_tsc), and
// "cpu MHz" is not the current clock speed instead (aperfmperf).
func tscKHz(r io.Reader) (int, bool) {
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	mhz, flags := "", ""
	for sc.Scan() && (mhz == "" || flags == "") {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "cpu MHz":
			if mhz == "" {
				mhz = strings.TrimSpace(v)
			}
		case "flags":
			if flags == "" {
				flags = " " + strings.TrimSpace(v) + " "
			}
		}
	}
	for _, f := range []string{"constant_tsc", "nonstop_tsc", "tsc_known_freq"} {
		if !strings.Contains(flags, " "+f+" ") {
			return 0, false
		}
	}
	if strings.Contains(flags, " aperfmperf ") {
		return 0, false
	}
	m, err := strconv.ParseFloat(mhz, 64)
	if err != nil || m < 100 || m > 20000 || math.IsNaN(m) {
		return 0, false
	}
	return int(math.Round(m * 1000)), true
}
