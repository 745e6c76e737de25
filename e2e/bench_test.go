package e2e

import (
	"os"
	"strings"
	"testing"
)

// BenchmarkStart runs `cube bench start --n 50` against a fresh `cube up`
// with a warm image and reports its p50 and p99 (create call's return to
// Running). Run: go test -bench Start -benchtime 1x ./e2e
//
// The numbers move with whatever else the machine runs, so the load
// average before and after is logged with them: compare runs made on a
// quiet machine.
func BenchmarkStart(b *testing.B) {
	c := startCluster(b)
	ref := pushBusybox(b)
	c.mustCube("image", "pull", ref, "--insecure")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		before := loadAvg()
		out := c.mustCube("bench", "start", "--n", "50", "--image", ref, "--", "sleep", "3600")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		b.Log("\n" + out)
		b.Logf("load average (1, 5, 15 min): before %s, after %s", before, loadAvg())
		b.Logf("json: %s", lines[len(lines)-1])
	}
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}
