package shim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
)

// shimBuild is how the Makefile builds bin/cube-shim (with CGO_ENABLED=0);
// keep them the same, or the benchmark measures a binary nobody runs.
var shimBuild = []string{"build", "-o"}

var (
	shimBinOnce sync.Once
	shimBinDir  string // removed by TestMain
	shimBin     string
	shimBinErr  error
)

// realShim is the cube-shim binary to measure: $CUBE_TEST_SHIM (for A/B
// runs of two builds), else one built from this tree the Makefile's way.
func realShim(b *testing.B) string {
	b.Helper()
	if p := os.Getenv("CUBE_TEST_SHIM"); p != "" {
		return p
	}
	shimBinOnce.Do(func() {
		shimBinDir, shimBinErr = os.MkdirTemp("", "cube-shim-bin-")
		if shimBinErr != nil {
			return
		}
		shimBin = filepath.Join(shimBinDir, "cube-shim")
		cmd := exec.Command("go", slices.Concat(shimBuild, []string{shimBin, "github.com/cube-platform/cube/cmd/cube-shim"})...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			shimBinErr = fmt.Errorf("build cube-shim: %v\n%s", err, out)
		}
	})
	if shimBinErr != nil {
		b.Fatal(shimBinErr)
	}
	return shimBin
}

// memUsage is what /proc says of one process's memory, in bytes.
type memUsage struct{ rss, file, anon int64 }

func readMemUsage(pid int) (memUsage, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memUsage{}, err
	}
	defer f.Close()
	var u memUsage
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "Rss":
			u.rss = kb << 10
		case "Anonymous":
			u.anon = kb << 10
		}
	}
	u.file = u.rss - u.anon
	return u, sc.Err()
}

// BenchmarkShimRSS starts b.N real cube-shim processes, one at a time, each
// with one container running `sleep`, and reports the median memory of the
// shim once its instance is Running: what `cube bench boot` reads (VmRSS),
// split into file-backed pages (the binary's, shared by every shim) and
// anonymous ones (each shim's own).
//
//	go test -run '^$' -bench ShimRSS -benchtime 5x ./shim/
func BenchmarkShimRSS(b *testing.B) {
	b.Run("microvm", func(b *testing.B) {
		opts := vmtest.Options(b)
		img := vmtest.Image(b)
		benchShimRSS(b, func(cfg *Config) {
			cfg.Backend = sandbox.BackendMicroVM
			cfg.VM = opts
			for i := range cfg.Sandbox.Containers {
				cfg.Sandbox.Containers[i].RootFS = img
			}
		})
	})
	b.Run("runc", func(b *testing.B) {
		benchShimRSS(b, func(cfg *Config) {})
	})
}

func benchShimRSS(b *testing.B, edit func(*Config)) {
	bin := realShim(b)
	var rss, file, anon []float64
	for i := 0; i < b.N; i++ {
		u := runShimForRSS(b, bin, edit)
		rss = append(rss, float64(u.rss)/(1<<20))
		file = append(file, float64(u.file)/(1<<20))
		anon = append(anon, float64(u.anon)/(1<<20))
	}
	b.ReportMetric(median(rss), "MiB/shim-rss")
	b.ReportMetric(median(file), "MiB/shim-file")
	b.ReportMetric(median(anon), "MiB/shim-anon")
	b.ReportMetric(0, "ns/op") // the time of a start is not what this measures
}

// runShimForRSS launches one shim, waits until its container runs, reads
// its memory and shuts it down.
func runShimForRSS(b *testing.B, bin string, edit func(*Config)) memUsage {
	b.Helper()
	cfg := benchConfig(b)
	edit(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Launch(ctx, []string{bin, "--config"}, cfg)
	if err != nil {
		b.Fatalf("Launch: %v", err)
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
		defer scancel()
		if err := c.Shutdown(sctx); err != nil {
			b.Errorf("Shutdown: %v", err)
		}
	}()
	var after uint64
	for {
		st, err := c.State(ctx, after)
		if err != nil {
			log, _ := os.ReadFile(FilesFor(cfg.Socket).Log)
			b.Fatalf("waiting for Running: %v; shim log:\n%s", err, log)
		}
		if st.Phase == PhaseRunning && len(st.Containers) > 0 && st.Containers[0].Phase == sandbox.PhaseRunning {
			break
		}
		if st.Phase == PhaseFailed || st.Phase == PhaseSucceeded {
			log, _ := os.ReadFile(FilesFor(cfg.Socket).Log)
			b.Fatalf("instance ended (%s: %s); shim log:\n%s", st.Phase, st.Message, log)
		}
		after = st.Version
	}
	pidb, err := os.ReadFile(FilesFor(cfg.Socket).Pid)
	if err != nil {
		b.Fatal(err)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(pidb)))
	if err != nil {
		b.Fatal(err)
	}
	u, err := readMemUsage(pid)
	if err != nil {
		b.Fatal(err)
	}
	if os.Getenv("CUBE_TEST_SMAPS") != "" {
		if s, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid)); err == nil {
			os.WriteFile(os.Getenv("CUBE_TEST_SMAPS"), s, 0o644)
		}
	}
	return u
}

// benchConfig is testConfig for a benchmark: a busybox `sleep`.
func benchConfig(b *testing.B) Config {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root (runc, mounts, cgroups, VMs): run as root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		b.Skip("runc not found in PATH: apt-get install runc")
	}
	if testRootFS == "" {
		b.Skip("no busybox test image: apt-get install busybox-static")
	}
	id := "r" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	dir := b.TempDir()
	ctr := sandbox.ContainerSpec{Name: "sleep", Args: []string{"sleep", "3600"}, RootFS: sandbox.RootFS{Dir: testRootFS}}
	return Config{
		Sandbox: sandbox.Spec{
			ID: id, Hostname: id, StateDir: filepath.Join(dir, "state"),
			CgroupParent: "/cube-shim-test/" + id, Containers: []sandbox.ContainerSpec{ctr},
		},
		RestartPolicy: RestartNever,
		LogDir:        filepath.Join(dir, "logs"),
		Socket:        filepath.Join(dir, "shim", "shim.sock"),
		StopGrace:     2 * time.Second,
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
