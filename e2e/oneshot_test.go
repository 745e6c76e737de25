package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// importBusybox makes the README's busybox image (hack/mkbusybox) and
// imports it, so `busybox` runs by its short name; it returns the tar.
func importBusybox(t testing.TB, c *cluster) string {
	t.Helper()
	tarPath := filepath.Join(c.dataDir, "busybox.tar")
	mk := exec.Command("go", "run", "../hack/mkbusybox", "-o", tarPath)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkbusybox: %v\n%s", err, out)
	}
	if out := c.mustCube("image", "import", tarPath); !strings.Contains(out, "docker.io/library/busybox:latest") {
		t.Fatalf("import printed %q; want the image name", out)
	}
	return tarPath
}

// wantLines checks that out is exactly line1..lineN, in order.
func wantLines(out string, n int) error {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != n {
		return fmt.Errorf("%d lines; want %d (last %q)", len(lines), n, lines[len(lines)-1])
	}
	for i, l := range lines {
		if l != fmt.Sprintf("line%d", i+1) {
			return fmt.Errorf("line %d is %q; want line%d", i+1, l, i+1)
		}
	}
	return nil
}

// TestAttachPrintsEveryLine: `cube run --rm --attach` returns when the
// log stream ends after the exit, with every line the container wrote,
// every time, also with several running at once, and exits with the
// container's code. Its instances run under cube-shim (TestMain builds it beside cube, as make install does);
// they also check that the cluster used it.
func TestAttachPrintsEveryLine(t *testing.T) {
	c := startCluster(t)
	importBusybox(t, c)
	const script = `for i in $(seq 1 2000); do echo line$i; done`
	c.mustCube("run", "--name", "probe", "--restart", "never", "busybox", "--", "sleep", "600")
	c.mustCube("wait", "probe", "--for", "running", "--timeout", "60s")
	if pids := shimPids(t, c.dataDir); len(pids) != 1 {
		t.Fatalf("found %d shims; want 1", len(pids))
	} else if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pids[0])); err != nil || filepath.Base(exe) != "cube-shim" {
		t.Fatalf("the shim runs %q (%v); want cube-shim", exe, err)
	}
	c.mustCube("rm", "--force", "probe")
	for i := range 5 {
		out, errOut, code := c.cube("", "run", "--rm", "--attach", "--restart", "never", "busybox", "--", "sh", "-c", script)
		if code != 0 {
			t.Fatalf("run %d: exit %d; want 0 (stderr %q)", i, code, errOut)
		}
		if err := wantLines(out, 2000); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	// Under load: three at once.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(cubeBin, "run", "--rm", "--attach", "--restart", "never", "busybox", "--", "sh", "-c", script)
			cmd.Env = append(os.Environ(), "CUBE_CONFIG="+c.config)
			out, err := cmd.Output()
			if err != nil {
				errs[i] = fmt.Errorf("concurrent run %d: %v", i, err)
				return
			}
			errs[i] = wantLines(string(out), 2000)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	out, _, code := c.cube("", "run", "--rm", "--attach", "--restart", "never", "busybox", "--", "sh", "-c", script+"; exit 3")
	if code != 3 {
		t.Errorf("run ending in exit 3: cube exited %d; want 3", code)
	}
	if err := wantLines(out, 2000); err != nil {
		t.Errorf("run ending in exit 3: %v", err)
	}
	// --rm removed them all.
	c.eventually(30*time.Second, "every --rm instance is gone", func() error {
		list, err := c.client.ListInstances(t.Context(), clientListAll())
		if err != nil {
			return err
		}
		if len(list.Items) != 0 {
			return fmt.Errorf("%d instances left", len(list.Items))
		}
		return nil
	})
}

// containerd is a private containerd for side-by-side measurements.
type containerd struct {
	sock string
	cmd  *exec.Cmd
}

// startContainerd runs containerd with its own root, state and socket
// and imports tar into it.
func startContainerd(b *testing.B, tar string) *containerd {
	b.Helper()
	for _, bin := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				b.Fatalf("%s not found but CI=true: apt-get install containerd", bin)
			}
			b.Skipf("%s not found: apt-get install containerd", bin)
		}
	}
	dir, err := os.MkdirTemp("/tmp", "ctrd-")
	if err != nil {
		b.Fatal(err)
	}
	cd := &containerd{sock: filepath.Join(dir, "sock")}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		b.Fatal(err)
	}
	cd.cmd = exec.Command("containerd", "--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"), "--address", cd.sock)
	cd.cmd.Stdout, cd.cmd.Stderr = logf, logf
	if err := cd.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cd.cmd.Process.Kill()
		_ = cd.cmd.Wait()
		logf.Close()
		_ = exec.Command("umount", "-R", filepath.Join(dir, "state")).Run()
		_ = os.RemoveAll(dir)
	})
	deadline := time.Now().Add(30 * time.Second)
	for exec.Command("ctr", "-a", cd.sock, "version").Run() != nil {
		if time.Now().After(deadline) {
			b.Fatal("containerd did not answer in 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := exec.Command("ctr", "-a", cd.sock, "images", "import", tar).CombinedOutput(); err != nil {
		b.Fatalf("ctr images import: %v\n%s", err, out)
	}
	return cd
}

// OneShotResult is the final JSON line of BenchmarkOneShotVsCtr.
type OneShotResult struct {
	Bench        string  `json:"bench"`
	N            int     `json:"n"`
	CubeP50Ms    float64 `json:"cube_p50_ms"`
	CtrP50Ms     float64 `json:"ctr_p50_ms"`
	Ratio        float64 `json:"ratio"`          // cube_p50 / ctr_p50
	PairRatioP50 float64 `json:"pair_ratio_p50"` // median of the ratios of each pair
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkOneShotVsCtr times `cube run --rm --attach --restart never
// busybox -- true` against containerd's `ctr run --rm` of the same image
// on the same machine, whole processes, the two in turn (A B A B ...),
// after two warm-up runs of each, and prints both medians and their
// ratio as a final JSON line. Run it without the race detector (the cube
// binary is built the way the test binary is):
//
//	go test -run '^$' -bench OneShotVsCtr -benchtime 20x ./e2e
//
// (-benchtime Nx sets the pairs; at least 10 are run.)
func BenchmarkOneShotVsCtr(b *testing.B) {
	c := startCluster(b)
	tar := importBusybox(b, c)
	cd := startContainerd(b, tar)
	runCube := func() error {
		cmd := exec.Command(cubeBin, "run", "--rm", "--attach", "--restart", "never", "busybox", "--", "true")
		cmd.Env = append(os.Environ(), "CUBE_CONFIG="+c.config)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("cube run: %v: %s", err, out)
		}
		return nil
	}
	id := 0
	runCtr := func() error {
		id++
		out, err := exec.Command("ctr", "-a", cd.sock, "run", "--rm", "docker.io/library/busybox:latest", fmt.Sprintf("oneshot-%d", id), "true").CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr run: %v: %s", err, out)
		}
		return nil
	}
	timed := func(run func() error) float64 {
		t0 := time.Now()
		if err := run(); err != nil {
			b.Fatal(err)
		}
		return float64(time.Since(t0).Microseconds()) / 1000
	}
	for range 2 {
		timed(runCube)
		timed(runCtr)
	}
	n := max(b.N, 10)
	var cube, ctr, pairs []float64
	b.ResetTimer()
	for range n {
		a, o := timed(runCube), timed(runCtr)
		cube, ctr, pairs = append(cube, a), append(ctr, o), append(pairs, a/o)
	}
	b.StopTimer()
	res := OneShotResult{Bench: "oneshot-vs-ctr", N: n, CubeP50Ms: median(cube), CtrP50Ms: median(ctr), PairRatioP50: median(pairs)}
	res.Ratio = res.CubeP50Ms / res.CtrP50Ms
	b.ReportMetric(res.CubeP50Ms, "cube-p50-ms")
	b.ReportMetric(res.CtrP50Ms, "ctr-p50-ms")
	b.ReportMetric(res.Ratio, "ratio")
	line, _ := json.Marshal(res)
	b.Logf("load average: %s", loadAvg())
	fmt.Println(string(line))
}
