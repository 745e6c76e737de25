package kernel

import (
	"strings"
	"testing"
)

func TestTSCKHz(t *testing.T) {
	vm := "processor\t: 0\ncpu MHz\t\t: 2596.142\nflags\t\t: fpu tsc constant_tsc nonstop_tsc tsc_known_freq pni\n\nprocessor\t: 1\ncpu MHz\t\t: 1.0\n"
	for _, tc := range []struct {
		name, in string
		want     int
		ok       bool
	}{
		{"vm", vm, 2596142, true},
		{"current speed", strings.Replace(vm, "pni", "pni aperfmperf", 1), 0, false},
		{"unknown frequency", strings.Replace(vm, " tsc_known_freq", "", 1), 0, false},
		{"varying tsc", strings.Replace(vm, " constant_tsc", "", 1), 0, false},
		{"garbage MHz", strings.Replace(vm, "2596.142", "fast", 1), 0, false},
		{"absurd MHz", strings.Replace(vm, "2596.142", "1e9", 1), 0, false},
		{"no MHz", "flags : constant_tsc nonstop_tsc tsc_known_freq\n", 0, false},
		{"empty", "", 0, false},
		{"one long line", strings.Repeat("x", 200<<10), 0, false},
	} {
		got, ok := tscKHz(strings.NewReader(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("tscKHz(%s) = %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
	if c := CmdlineTCG(); !strings.HasPrefix(c, "nolapic_timer") {
		t.Errorf("CmdlineTCG() = %q; want nolapic_timer first", c)
	}
}
