package v1

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// MaxMilliCPU and MaxMemory bound one quantity: a million cores and a
// pebibyte. Sums of quantities (an instance's containers, a tenant's
// instances, a node's allocation) are plain int64 additions, so a single
// quantity near MaxInt64 would overflow them: two containers of
// 9223372036854775807m sum to -2, and the instance would be admitted and
// placed as if it asked for nothing while its cgroups had no limit.
const (
	MaxMilliCPU = 1_000_000_000
	MaxMemory   = 1 << 50
)

// ParseCPU parses a cpu quantity ("0.5", "2", "250m") into millicores.
func ParseCPU(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty cpu quantity")
	}
	if m, ok := strings.CutSuffix(s, "m"); ok {
		n, err := strconv.ParseInt(m, 10, 64)
		if err != nil || n < 0 || n > MaxMilliCPU {
			return 0, fmt.Errorf("cpu %q: want cores (\"0.5\") or millicores (\"500m\"), at most a million cores", s)
		}
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f > MaxMilliCPU/1000 {
		return 0, fmt.Errorf("cpu %q: want cores (\"0.5\") or millicores (\"500m\"), at most a million cores", s)
	}
	return int64(math.Round(f * 1000)), nil
}

// FormatCPU renders millicores the way users write them.
func FormatCPU(milli int64) string {
	if milli%1000 == 0 {
		return strconv.FormatInt(milli/1000, 10)
	}
	return strconv.FormatInt(milli, 10) + "m"
}

var memUnits = []struct {
	suffix string
	mult   int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1000}, {"K", 1000}, {"M", 1000 * 1000}, {"G", 1000 * 1000 * 1000}, {"T", 1000 * 1000 * 1000 * 1000},
}

// ParseMemory parses a byte quantity ("256Mi", "1G", "1048576") into bytes.
func ParseMemory(s string) (int64, error) {
	s = strings.TrimSpace(s)
	bad := fmt.Errorf("memory %q: want a non-negative size such as \"256Mi\", \"1Gi\" or \"512M\", at most 1024Ti", s)
	if s == "" || strings.HasPrefix(s, "-") {
		return 0, bad
	}
	mult := int64(1)
	num := s
	for _, u := range memUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	// Docker spells mebibytes "256m"/"1g": accept the lowercase forms too.
	if mult == 1 && len(num) > 1 {
		switch num[len(num)-1] {
		case 'b':
			num = num[:len(num)-1]
		case 'm':
			num, mult = num[:len(num)-1], 1<<20
		case 'g':
			num, mult = num[:len(num)-1], 1<<30
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsNaN(f) || f*float64(mult) > MaxMemory {
		return 0, bad
	}
	return int64(f * float64(mult)), nil
}

// FormatMemory renders bytes in the largest binary unit that divides them.
func FormatMemory(b int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if b >= u.m && b%u.m == 0 {
			return strconv.FormatInt(b/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(b, 10)
}
