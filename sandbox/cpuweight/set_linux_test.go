package cpuweight

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSetRefusesBadPaths(t *testing.T) {
	for _, p := range []string{"", "/", "cube/x", "/cube/../etc", "/cube/x/"} {
		if err := Set(p, 1000); err == nil {
			t.Errorf("Set(%q) = nil; want an error", p)
		}
	}
}

// TestWeightDividesContendedCPU: two sandboxes' cgroups, siblings, one
// weighted for 100m and one for 900m, each with a busy process one level
// below (where a VMM or a runc container sits), both pinned to one CPU.
// The 900m one gets most of it; with no weights (both the default) they
// would split it evenly.
func TestWeightDividesContendedCPU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make cgroups: run as root")
	}
	v1, v2, err := cpuMounts()
	if err != nil {
		t.Fatal(err)
	}
	root := v1
	if root == "" {
		root = v2
	}
	if root == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no cgroup hierarchy has the cpu controller, but CI=true")
		}
		t.Skip("no cgroup hierarchy has the cpu controller")
	}
	var b [4]byte
	rand.Read(b[:])
	parent := "/cube-test/cpuweight-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		for _, d := range []string{parent + "/small/c", parent + "/big/c", parent + "/small", parent + "/big", parent} {
			unix.Rmdir(filepath.Join(root, d))
		}
		unix.Rmdir(filepath.Join(root, "/cube-test"))
	})
	busy := map[string]*exec.Cmd{}
	for name, milli := range map[string]int64{"small": 100, "big": 900} {
		if err := Set(parent+"/"+name, milli); err != nil {
			t.Fatal(err)
		}
		child := filepath.Join(root, parent, name, "c")
		if err := os.Mkdir(child, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		busy[name] = cmd
		var one unix.CPUSet
		one.Set(0)
		if err := unix.SchedSetaffinity(cmd.Process.Pid, &one); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(child, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	ticks := func(c *exec.Cmd) int64 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(c.Process.Pid) + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64) // utime, field 14
		s, _ := strconv.ParseInt(f[12], 10, 64) // stime, field 15
		return u + s
	}
	s0, b0 := ticks(busy["small"]), ticks(busy["big"])
	// Until the two have had 3 s of the CPU between them (USER_HZ 100).
	deadline := time.Now().Add(60 * time.Second)
	var small, big int64
	for {
		small, big = ticks(busy["small"])-s0, ticks(busy["big"])-b0
		if small+big >= 300 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the busy processes had %d ticks in 60s; want 300", small+big)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// 9:1 by weight; an even split without it.
	if big < 3*small {
		t.Errorf("contended CPU: the 900m sandbox had %d ticks, the 100m one %d; want the bigger at least 3x the smaller", big, small)
	}
	t.Logf("ticks: 900m %d, 100m %d", big, small)
}
