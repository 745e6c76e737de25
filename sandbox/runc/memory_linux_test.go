package runc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cube-platform/cube/sandbox"
)

// shmLeak makes a System V shared memory segment of 24 MiB, touches every
// page (charged to the container's memory cgroup) and exits without
// removing it: the segment outlives the process in the instance's IPC
// namespace.
const shmLeak = `package main

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

func main() {
	const size = 24 << 20
	id, _, e := syscall.Syscall(syscall.SYS_SHMGET, 0, size, 01000|0600)
	if e != 0 {
		fmt.Println("shmget:", e)
		os.Exit(2)
	}
	addr, _, e := syscall.Syscall(syscall.SYS_SHMAT, id, 0, 0)
	if e != 0 {
		fmt.Println("shmat:", e)
		os.Exit(2)
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(addr)), size)
	for i := 0; i < size; i += 4096 {
		b[i] = 1
	}
	fmt.Println("leaked segment", id)
	os.Exit(1)
}
`

// TestMemoryBoundSurvivesRestarts: memory a container leaves behind in the
// instance's shared IPC namespace (a System V segment nobody removed)
// stays charged after the container's cgroup is gone, and a restarted
// container gets a fresh limit. Without a bound on the instance's parent
// cgroup, every restart adds its whole limit to what the instance holds
// and the node runs out of memory. The instance must stay within the sum
// of its containers' limits plus its /dev/shm.
func TestMemoryBoundSurvivesRestarts(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no cgroup v1 memory hierarchy at /sys/fs/cgroup/memory but CI=true")
		}
		t.Skip("no cgroup v1 memory hierarchy at /sys/fs/cgroup/memory; this test reads it")
	}
	requireRunc(t)
	root := filepath.Join(t.TempDir(), "rootfs")
	if out, err := exec.Command("cp", "-a", testRootFS, root).CombinedOutput(); err != nil {
		t.Fatalf("copy the test image: %v: %s", err, out)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "main.go"), []byte(shmLeak), 0o644)
	os.WriteFile(filepath.Join(src, "go.mod"), []byte("module shmleak\n\ngo 1.24\n"), 0o644)
	build := exec.Command("go", "build", "-o", filepath.Join(root, "shmleak"), ".")
	build.Dir, build.Env = src, append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build shmleak: %v: %s", err, out)
	}

	const limit = 32 << 20
	sb, spec := newTestSandboxWith(t, func(s *sandbox.Spec) {
		s.Containers[0].RootFS = sandbox.RootFS{Dir: root}
		s.Containers[0].MemoryBytes = limit
	}, sandbox.ContainerSpec{Name: "leak", Args: []string{"/shmleak"}})

	// Once the instance is at its bound, a run is OOM-killed, or its
	// runc init is and Start fails: either is the instance's own problem.
	leaked := 0
	ctx := testCtx(t)
	for range 8 {
		var out syncBuffer
		if err := sb.Start(ctx, "leak", sandbox.Stdio{Stdout: &out}); err != nil {
			t.Logf("start at the bound: %v", err)
			continue
		}
		st, err := sb.Wait(ctx, "leak")
		if err != nil {
			t.Fatal(err)
		}
		if st.ExitCode == 1 && strings.Contains(out.String(), "leaked segment") {
			leaked++
		}
	}
	// Positive control: the attack ran, at least once.
	if leaked == 0 {
		t.Fatal("no run of shmleak left a segment behind")
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", spec.CgroupParent, "memory.usage_in_bytes"))
	if err != nil {
		t.Fatal(err)
	}
	usage, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if bound := int64(limit + shmSize); usage > bound {
		t.Errorf("after %d runs that each left 24 MiB behind, the instance holds %d MiB; want at most %d MiB (its container's limit plus /dev/shm)",
			leaked, usage>>20, bound>>20)
	}
}
