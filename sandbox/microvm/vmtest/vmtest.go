// Package vmtest gives VM tests what they boot: the node's guest kernel,
// an initramfs of the guest agent and container init built from this tree, and the busybox
// test image as a block image. A missing prerequisite skips the test,
// except under CI=true, where it fails (the Makefile provides them all).
package vmtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/cube-platform/cube/guest/initramfs"
	"github.com/cube-platform/cube/guest/kernel"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

// missing skips t, or fails it under CI=true.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: the Makefile should have provided it)", msg)
	}
	t.Skip(msg)
}

// Require skips (or under CI fails) t unless VMs can run here: root,
// QEMU and the guest kernel.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (jail, taps, cgroups): run as root")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		missing(t, "qemu-system-x86_64 not found: apt-get install qemu-system-x86")
	}
	Kernel(t)
}

// Kernel is the guest kernel: $CUBE_TEST_KERNEL, else the cached build.
func Kernel(t testing.TB) string {
	t.Helper()
	if k := os.Getenv("CUBE_TEST_KERNEL"); k != "" {
		return k
	}
	k, ok := kernel.Find(kernel.DefaultCacheDir)
	if !ok {
		missing(t, "no guest kernel in %s: run make kernel", kernel.Dir(kernel.DefaultCacheDir))
	}
	return k
}

var (
	buildOnce sync.Once
	buildDir  string
	agentBin  string
	initBin   string
	initrd    string
	imageDir  string
	imageFile string
	buildErr  error
)

// build makes, once per test binary, the agent, the container init, their
// initramfs and the busybox block image, in one temp dir that Cleanup
// removes. The binaries are built as the Makefile builds them.
func build() {
	buildDir, buildErr = os.MkdirTemp("", "cube-vmtest-")
	if buildErr != nil {
		return
	}
	agentBin = filepath.Join(buildDir, "cube-agent")
	initBin = filepath.Join(buildDir, "cube-init")
	for bin, pkg := range map[string]string{agentBin: "cube-agent", initBin: "cube-init"} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "github.com/cube-platform/cube/cmd/"+pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build %s: %v\n%s", pkg, err, out)
			return
		}
	}
	if initrd, buildErr = initramfs.Cached(buildDir, agentBin, initBin); buildErr != nil {
		return
	}
	imageDir = filepath.Join(buildDir, "busybox")
	if buildErr = sandboxtest.Busybox(imageDir); buildErr != nil {
		return
	}
	imageFile = filepath.Join(buildDir, "busybox.erofs")
	buildErr = image.BuildBlockImage(context.Background(), imageDir, imageFile)
}

// Cleanup removes what build made; call it from TestMain after m.Run.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

func built(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("VMs need Linux")
	}
	buildOnce.Do(build)
	if buildErr != nil {
		missing(t, "vm test files: %v", buildErr)
	}
}

// Options are what a microvm sandbox of the tests boots with.
func Options(t testing.TB) sandbox.VMOptions {
	t.Helper()
	Require(t)
	built(t)
	return sandbox.VMOptions{Kernel: Kernel(t), Initrd: initrd, Accel: "tcg"}
}

// Image is the busybox test image as a block image (with its unpacked
// directory, which the host reads /etc/passwd from).
func Image(t testing.TB) sandbox.RootFS {
	t.Helper()
	built(t)
	return sandbox.RootFS{Dir: imageDir, Image: imageFile, FSType: "erofs"}
}

// AgentBinary is the cube-agent built from this tree.
func AgentBinary(t testing.TB) string {
	t.Helper()
	built(t)
	return agentBin
}

// InitBinary is the cube-init built from this tree.
func InitBinary(t testing.TB) string {
	t.Helper()
	built(t)
	return initBin
}
