package kernel

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-platform/cube/guest/initramfs"
)

// testKernel returns the guest kernel for boot tests: $CUBE_TEST_KERNEL,
// else the cached one under DefaultCacheDir. Under CI=true a missing
// kernel is built (minutes); elsewhere the test skips.
func testKernel(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CUBE_TEST_KERNEL"); p != "" {
		return p
	}
	if p, ok := Find(DefaultCacheDir); ok {
		return p
	}
	if os.Getenv("CI") != "true" {
		t.Skipf("no guest kernel at %s: run make kernel (or set CUBE_TEST_KERNEL)", Dir(DefaultCacheDir))
	}
	cfg := DefaultBuilderConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	b := NewBuilder(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	b.Start(ctx)
	<-b.Done()
	st := b.Status()
	if st.Err != nil {
		t.Fatalf("building the guest kernel: %v", st.Err)
	}
	return st.Path
}

// markerInitrd builds testdata/markerinit statically and wraps it in an
// initramfs made by package initramfs (so the kernel's unpacker checks
// that package's archives too).
func markerInitrd(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "init")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/markerinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build markerinit: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "initramfs.cpio")
	if err := initramfs.Build(bin, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func requireQEMU(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-system-x86_64 not found but CI=true: apt-get install qemu-system-x86")
		}
		t.Skip("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
	}
	return p
}

// qemuArgs boots vmlinux through PVH on a TCG microvm, the recipe in
// docs' ENVIRONMENT notes.
func qemuArgs(vmlinux, initrd string) []string {
	return []string{
		"-M", "microvm,x-option-roms=off,isa-serial=on,pit=on,pic=on,rtc=on",
		"-accel", "tcg", "-cpu", "max", "-m", "256M", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "stdio",
		"-kernel", vmlinux, "-initrd", initrd,
		"-append", Cmdline,
	}
}

type bootResult struct {
	toMarker time.Duration // QEMU start to the marker on the console
	marker   string
	output   []string
}

const marker = "CUBE-BOOT-MARKER "

// boot runs one VM to its end and returns when QEMU has exited by itself.
func boot(t testing.TB, qemu, vmlinux, initrd string) bootResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, qemuArgs(vmlinux, initrd)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var res bootResult
	var mu sync.Mutex
	seen := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			mu.Lock()
			if len(res.output) < 2000 {
				res.output = append(res.output, line)
			}
			if i := strings.Index(line, marker); i >= 0 && res.marker == "" {
				res.toMarker = time.Since(start)
				res.marker = line[i+len(marker):]
				close(seen)
			}
			mu.Unlock()
		}
	}()
	err = cmd.Wait()
	mu.Lock()
	defer mu.Unlock()
	if ctx.Err() != nil {
		t.Fatalf("QEMU did not exit by itself within the deadline; console:\n%s\nstderr: %s", strings.Join(res.output, "\n"), stderr.String())
	}
	if err != nil {
		t.Fatalf("QEMU: %v; console:\n%s\nstderr: %s", err, strings.Join(res.output, "\n"), stderr.String())
	}
	select {
	case <-seen:
	default:
		t.Fatalf("no %q on the console; console:\n%s\nstderr: %s", marker, strings.Join(res.output, "\n"), stderr.String())
	}
	return res
}

// TestBootMarker boots the cached kernel with an initramfs whose init
// prints a marker and reboots: the marker must reach the serial console,
// carry the release stored beside vmlinux, and QEMU must end by itself.
func TestBootMarker(t *testing.T) {
	qemu := requireQEMU(t)
	vmlinux := testKernel(t)
	initrd := markerInitrd(t)
	res := boot(t, qemu, vmlinux, initrd)
	want, err := Release(vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(res.marker)
	if !slices.Contains(fields, "release="+want) {
		t.Errorf("marker %q; want release=%s", res.marker, want)
	}
	// quiet: the guest prints next to nothing before init.
	if n := len(res.output); n > 20 {
		t.Errorf("console printed %d lines; want a quiet boot:\n%s", n, strings.Join(res.output, "\n"))
	}
	t.Logf("QEMU start to marker: %v (%s)", res.toMarker.Round(time.Millisecond), res.marker)
}

// BenchmarkBoot measures QEMU start to the init's marker on the console
// (TCG here); run with -benchtime=5x for the median of five boots.
func BenchmarkBoot(b *testing.B) {
	qemu := requireQEMU(b)
	vmlinux := testKernel(b)
	initrd := markerInitrd(b)
	var ds []time.Duration
	for b.Loop() {
		ds = append(ds, boot(b, qemu, vmlinux, initrd).toMarker)
	}
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(ds[0].Microseconds())/1000, "min-ms")
	b.ReportMetric(float64(ds[len(ds)-1].Microseconds())/1000, "max-ms")
	b.Log(fmt.Sprint(ds))
}
