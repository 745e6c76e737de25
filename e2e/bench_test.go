package e2e

import (
	"strings"
	"testing"
)

// BenchmarkStart runs `cube bench start --n 50` against a fresh `cube up`
// with a warm image and reports its p50 and p99 (create call's return to
// Running). Run: go test -bench Start -benchtime 1x ./e2e
func BenchmarkStart(b *testing.B) {
	c := startCluster(b)
	ref := pushBusybox(b)
	c.mustCube("image", "pull", ref, "--insecure")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := c.mustCube("bench", "start", "--n", "50", "--image", ref, "--", "sleep", "3600")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		b.Log("\n" + out)
		b.Logf("json: %s", lines[len(lines)-1])
	}
}
