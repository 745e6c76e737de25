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
	"github.com/cube-platform/cube/image"
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

// testInitrd builds testdata/NAME statically and wraps it in an
// initramfs made by package initramfs (so the kernel's unpacker checks
// that package's archives too).
func testInitrd(t testing.TB, name string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "init")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/"+name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build markerinit: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "initramfs.cpio")
	if err := initramfs.Build(bin, "", out); err != nil {
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

// qemuArgs boots vmlinux through PVH on a TCG microvm. acpi=off: the
// kernel has no ACPI, and only without it does QEMU put the virtio-mmio
// devices on the kernel command line (virtio_mmio.device=...), as
// Firecracker does; with ACPI on, the guest would find no devices.
func qemuArgs(vmlinux, initrd string, extra ...string) []string {
	return append([]string{
		"-M", "microvm,x-option-roms=off,isa-serial=on,pit=on,pic=on,rtc=on,acpi=off",
		"-accel", "tcg", "-cpu", "max", "-m", "256M", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "stdio",
		"-kernel", vmlinux, "-initrd", initrd,
		"-append", Cmdline + " " + CmdlineTCG(),
	}, extra...)
}

type bootResult struct {
	toMarker time.Duration // QEMU start to the marker on the console
	marker   string
	output   []string
}

const marker = "CUBE-BOOT-MARKER "

// featureinit's last line counts as the marker too.
func isMarker(line string) (string, bool) {
	if i := strings.Index(line, marker); i >= 0 {
		return line[i+len(marker):], true
	}
	if line == "CUBE-FEATURES-DONE" {
		return line, true
	}
	return "", false
}

// boot runs one VM to its end and returns when QEMU has exited by itself.
func boot(t testing.TB, qemu, vmlinux, initrd string, extra ...string) bootResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, qemuArgs(vmlinux, initrd, extra...)...)
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
			if m, ok := isMarker(line); ok && res.marker == "" {
				res.toMarker = time.Since(start)
				res.marker = m
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
	initrd := testInitrd(t, "markerinit")
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
	// With the TSC frequency given, the guest never falls back to the
	// coarse jiffies clock.
	if strings.Contains(CmdlineTCG(), "tsc_early_khz=") && !slices.ContainsFunc(fields, func(f string) bool { return strings.HasPrefix(f, "clocksource=tsc") }) {
		t.Errorf("marker %q; want the guest on the TSC clocksource", res.marker)
	}
	t.Logf("QEMU start to marker: %v (%s)", res.toMarker.Round(time.Millisecond), res.marker)
}

// BenchmarkBoot measures QEMU start to the init's marker on the console
// (TCG here); run with -benchtime=5x for the median of five boots.
func BenchmarkBoot(b *testing.B) {
	qemu := requireQEMU(b)
	vmlinux := testKernel(b)
	initrd := testInitrd(b, "markerinit")
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

// TestGuestFeatures boots testdata/featureinit, which checks inside the
// guest what the agent and realistic images need from the kernel: an
// erofs image (made by image.BuildBlockImage) on a virtio-blk drive found
// by its serial, overlayfs over it with a tmpfs upper, cgroup v2 with the
// cpu, memory and pids controllers, namespaces, SysV shm, POSIX mqueues,
// seccomp filters, inotify, IPv6, vsock/packet/unix sockets, a
// virtio-serial port by name, and devpts. Every check must pass.
func TestGuestFeatures(t *testing.T) {
	qemu := requireQEMU(t)
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		requireOrSkip(t, "mkfs.erofs not found (apt-get install erofs-utils)")
	}
	vmlinux := testKernel(t)
	initrd := testInitrd(t, "featureinit")
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "hello"), []byte("hello from erofs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "dir", "file"), []byte("f\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "root.erofs")
	if err := image.BuildBlockImage(t.Context(), tree, img); err != nil {
		t.Fatal(err)
	}
	res := boot(t, qemu, vmlinux, initrd,
		"-drive", "id=root,file="+img+",format=raw,if=none,readonly=on",
		"-device", "virtio-blk-device,drive=root,serial=cube-root",
		"-chardev", "null,id=agent",
		"-device", "virtio-serial-device",
		"-device", "virtserialport,chardev=agent,name=cube.agent",
	)
	want := []string{"mount-basics", "proc-sys", "virtio-drivers", "erofs-drive", "overlayfs", "cgroup2",
		"namespaces", "sysv-shm", "posix-mqueue", "seccomp-filter", "inotify", "ipv6-listen",
		"af-vsock", "af-packet", "af-unix", "virtio-port", "devpts"}
	got := map[string]string{}
	done := false
	for _, line := range res.output {
		if rest, ok := strings.CutPrefix(line, "CUBE-FEATURE "); ok {
			name, verdict, _ := strings.Cut(rest, " ")
			got[name] = verdict
		}
		done = done || line == "CUBE-FEATURES-DONE"
	}
	if !done {
		t.Fatalf("featureinit did not finish; console:\n%s", strings.Join(res.output, "\n"))
	}
	for _, name := range want {
		if got[name] != "ok" {
			t.Errorf("guest feature %s: %q; want ok", name, got[name])
		}
	}
}

// TestGuestPanicEndsVM: when init dies the kernel panics, and panic=-1
// with reboot=t and -no-reboot must end QEMU at once (the shim reports
// GuestPanic from that), with the panic on the console.
func TestGuestPanicEndsVM(t *testing.T) {
	qemu := requireQEMU(t)
	vmlinux := testKernel(t)
	res := boot(t, qemu, vmlinux, testInitrd(t, "panicinit"))
	out := strings.Join(res.output, "\n")
	if !strings.Contains(out, "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300") {
		t.Errorf("no panic for init's exit on the console:\n%s", out)
	}
}
