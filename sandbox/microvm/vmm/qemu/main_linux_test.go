package qemu

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testInitrd is a throwaway initramfs whose /init is testdata/testinit,
// built once by TestMain ("" when it could not be built; initErr says why).
var (
	testInitrd string
	initErr    error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cube-qemu-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	testInitrd, initErr = buildInitrd(dir)
	code := m.Run()
	os.RemoveAll(dir)
	// Every test VM's cgroup parent sits below /cube-test (shared with
	// other packages' tests, so only removed when empty).
	for _, h := range []string{"memory", "pids", "unified", "cpu", "cpuacct"} {
		unix.Rmdir(filepath.Join("/sys/fs/cgroup", h, "cube-test"))
	}
	if code == 0 {
		if err := checkGoroutineLeaks(5 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// buildInitrd builds testinit statically and packs it as /init of a newc
// cpio with /dev/console, /proc and /sys.
func buildInitrd(dir string) (string, error) {
	stage := filepath.Join(dir, "stage")
	for _, d := range []string{"dev", "proc", "sys"} {
		if err := os.MkdirAll(filepath.Join(stage, d), 0o755); err != nil {
			return "", err
		}
	}
	if os.Geteuid() == 0 {
		if err := unix.Mknod(filepath.Join(stage, "dev/console"), unix.S_IFCHR|0o600, int(unix.Mkdev(5, 1))); err != nil {
			return "", err
		}
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(stage, "init"), "./testdata/testinit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build testinit: %v: %s", err, out)
	}
	out := filepath.Join(dir, "initrd.cpio")
	pack := exec.Command("sh", "-c", "find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > "+out)
	pack.Dir = stage
	if b, err := pack.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cpio (apt-get install cpio): %v: %s", err, b)
	}
	return out, os.Chmod(out, 0o644)
}

// testKernel finds the guest kernel: $CUBE_TEST_KERNEL, else the newest
// complete build in /var/cache/cube/kernel (guest/kernel's cache).
func testKernel() string {
	if k := os.Getenv("CUBE_TEST_KERNEL"); k != "" {
		return k
	}
	ms, _ := filepath.Glob("/var/cache/cube/kernel/*/vmlinux")
	var ok []string
	for _, m := range ms {
		if !strings.HasPrefix(filepath.Base(filepath.Dir(m)), ".") {
			ok = append(ok, m)
		}
	}
	sort.Slice(ok, func(i, j int) bool {
		a, _ := os.Stat(ok[i])
		b, _ := os.Stat(ok[j])
		return a.ModTime().After(b.ModTime())
	})
	if len(ok) == 0 {
		return ""
	}
	return ok[0]
}

// requireVM skips unless a real QEMU VM can be booted: root, QEMU, the
// guest kernel and the test initramfs. With CI=true a missing piece fails.
func requireVM(t *testing.T) (kernel string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (jail: namespaces, mounts, setuid, cgroups): run as root")
	}
	missing := func(why string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatal(why + " but CI=true")
		}
		t.Skip(why)
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		missing("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
	}
	if initErr != nil {
		missing("no test initramfs: " + initErr.Error())
	}
	kernel = testKernel()
	if kernel == "" {
		missing("no guest kernel: build it (make kernel) or set CUBE_TEST_KERNEL")
	}
	return kernel
}

func checkGoroutineLeaks(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			// jail.forkLoop lives as long as the process, by design.
			if strings.Contains(g, "cube-platform/cube") && !strings.Contains(g, "checkGoroutineLeaks") && !strings.Contains(g, "jail.forkLoop") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaked goroutines:\n%s", strings.Join(leaked, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
