package runc

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/sandbox"
)

// pidsFile reads a pids-controller file of the sandbox's parent cgroup.
func pidsFile(t *testing.T, spec sandbox.Spec, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids", spec.CgroupParent, name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return strings.TrimSpace(string(b))
}

// TestForkBombStopsAtPidsLimit sets off a real fork bomb in one container
// while another container of the instance idles: the whole instance stays
// at its pids bound (forks beyond it are refused, pids.events counts
// them), an exec shares the bound, and another instance still starts and
// runs meanwhile.
func TestForkBombStopsAtPidsLimit(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/pids"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids but CI=true")
		}
		t.Skip("no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids; this test reads it (cgroup v2 only hosts are not covered yet)")
	}
	const limit = 64
	sb, spec := newTestSandboxWith(t, func(s *sandbox.Spec) { s.PidsLimit = limit },
		shell("bomb", "b() { b | b & }; b; exec sleep 1000"),
		shell("idle", "exec sleep 1000"))
	ctx := testCtx(t)
	if got := pidsFile(t, spec, "pids.max"); got != strconv.Itoa(limit) {
		t.Fatalf("pids.max of %s = %q; want %d", spec.CgroupParent, got, limit)
	}
	if err := sb.Start(ctx, "idle", sandbox.Stdio{}); err != nil {
		t.Fatal(err)
	}
	if err := sb.Start(ctx, "bomb", sandbox.Stdio{}); err != nil {
		t.Fatal(err)
	}
	// Wait for the kernel to refuse forks: the bomb reached the bound.
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Cgroup v1 counts a refused fork where it happened: in the
		// container's cgroup below the parent that holds the limit.
		ev := pidsFile(t, spec, "bomb/pids.events")
		if n, _ := strconv.Atoi(strings.TrimPrefix(ev, "max ")); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fork was refused within 30s (pids.events %q, pids.current %s)", ev, pidsFile(t, spec, "pids.current"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n, _ := strconv.Atoi(pidsFile(t, spec, "pids.current")); n > limit {
		t.Errorf("pids.current = %d; want at most %d", n, limit)
	}
	// An exec lands in the same bound: it may fail to fork, and if it
	// runs, it counts.
	code, err := sb.Exec(ctx, "idle", sandbox.ExecSpec{Args: []string{"sh", "-c", "cat /sys/fs/cgroup/pids/pids.max"}}, sandbox.Stdio{})
	t.Logf("exec during the bomb: %d, %v", code, err)
	if n, _ := strconv.Atoi(pidsFile(t, spec, "pids.current")); n > limit {
		t.Errorf("pids.current after an exec = %d; want at most %d", n, limit)
	}

	other, _ := newTestSandbox(t, shell("c", "echo alive"))
	st, out, _ := runToExit(t, other, "c")
	if st.ExitCode != 0 || out != "alive\n" {
		t.Errorf("another instance during the bomb: exit %d output %q; want 0, alive", st.ExitCode, out)
	}
	dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sb.Destroy(dctx); err != nil {
		t.Errorf("Destroy during the bomb: %v", err)
	}
}

// TestDefaultPidsLimit: a spec without a limit gets DefaultPidsLimit.
func TestDefaultPidsLimit(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/pids"); err != nil {
		t.Skip("no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids; this test reads it")
	}
	_, spec := newTestSandbox(t, shell("c", "true"))
	if got := pidsFile(t, spec, "pids.max"); got != strconv.Itoa(DefaultPidsLimit) {
		t.Errorf("pids.max = %q; want the default %d", got, DefaultPidsLimit)
	}
}

// smallFS mounts a tmpfs of size bytes for the test: the "node's disk",
// whose free space only the test uses.
func smallFS(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("cube-test", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// loopsBacking lists the loop devices whose backing file is file.
func loopsBacking(t *testing.T, file string) []string {
	t.Helper()
	paths, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == file {
			out = append(out, p)
		}
	}
	return out
}

// TestDiskBoundsWritableLayer fills a container's writable layer with dd
// on a node disk of its own: dd fails with ENOSPC at the sandbox's disk
// size, the node's disk lost no more than that, two containers share the
// bound, and what was written survives a restart of the container and a
// new sandbox object (a shim killed and replaced) adopting the layer.
// Destroy releases the loop device and the file.
func TestDiskBoundsWritableLayer(t *testing.T) {
	const bound = 32 << 20
	node := smallFS(t, 256<<20)
	before := freeBytes(t, node)
	sb, spec := newTestSandboxWith(t, func(s *sandbox.Spec) {
		s.StateDir = filepath.Join(node, "state")
		s.DiskBytes = bound
	},
		shell("fill", "cat /kept 2>/dev/null || { echo kept > /kept; sync; }; dd if=/dev/zero of=/big bs=1M count=64; echo rc=$?"),
		shell("other", "dd if=/dev/zero of=/more bs=1M count=8; echo rc=$?"))
	st, out, errOut := runToExit(t, sb, "fill")
	if st.ExitCode != 0 || !strings.Contains(errOut, "No space left on device") || strings.Contains(out, "rc=0") {
		t.Errorf("dd past the bound: exit %d stdout %q stderr %q; want ENOSPC and a failing dd", st.ExitCode, out, errOut)
	}
	if lost := before - freeBytes(t, node); lost > bound+(4<<20) {
		t.Errorf("the node's disk lost %d bytes; want at most the bound %d (+ the bundle files)", lost, bound)
	}
	// The second container shares the full layer.
	if _, out, _ := runToExit(t, sb, "other"); strings.Contains(out, "rc=0") {
		t.Errorf("another container wrote 8 MiB into a full layer: %q; want ENOSPC", out)
	}
	// A restart by policy keeps the layer.
	if _, out, _ := runToExit(t, sb, "fill"); !strings.HasPrefix(out, "kept\n") {
		t.Errorf("after a restart the container printed %q; want its file kept", out)
	}
	file := filepath.Join(spec.StateDir, "disk.img")
	if loops := loopsBacking(t, file); len(loops) != 1 {
		t.Fatalf("loop devices backing %s: %v; want one", file, loops)
	}

	// A replaced shim: a new sandbox object over the same state adopts the
	// mounted layer, neither remaking nor remounting it.
	second, err := New(spec, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if err := second.Create(ctx); err != nil {
		t.Fatalf("Create over the first sandbox's state: %v", err)
	}
	if _, out, _ := runToExit(t, second, "fill"); !strings.HasPrefix(out, "kept\n") {
		t.Errorf("after a new sandbox adopted the state the container printed %q; want its file kept", out)
	}
	if loops := loopsBacking(t, file); len(loops) != 1 {
		t.Errorf("loop devices backing %s after adoption: %v; want still one", file, loops)
	}
	if err := second.Destroy(ctx); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(loopsBacking(t, file)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("loop devices still back %s after Destroy: %v", file, loopsBacking(t, file))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(spec.StateDir); !os.IsNotExist(err) {
		t.Errorf("state dir after Destroy: %v; want it gone", err)
	}
	if lost := before - freeBytes(t, node); lost > 1<<20 {
		t.Errorf("the node's disk lost %d bytes after Destroy; want them back", lost)
	}
}

// BenchmarkWritableLayer measures what the disk adds to a sandbox's
// Create (a 1 GiB sparse file made by mkfs.ext4, or copied from the
// node's cache; loop attach; mount) and to its Destroy (unmount, loop
// detach).
func BenchmarkWritableLayer(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (loop devices, mounts)")
	}
	ctx := context.Background()
	for name, cache := range map[string]string{"mkfs": "", "cached": b.TempDir()} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				dir := b.TempDir()
				d := disk{file: filepath.Join(dir, "disk.img"), mount: filepath.Join(dir, "disk"), size: DefaultDiskBytes, cache: cache}
				if err := d.ensure(ctx); err != nil {
					b.Fatal(err)
				}
				if err := unmountAll(d.mount); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDiskFromCache makes two sandboxes' disks from the node's cache: the
// empty filesystem is made once, each disk is a sparse copy that mounts
// on its own loop device, what one writes the other does not see, and the
// cached file is never changed.
func TestDiskFromCache(t *testing.T) {
	requireRunc(t)
	cache := t.TempDir()
	ctx := testCtx(t)
	var disks []disk
	for i := range 2 {
		dir := t.TempDir()
		d := disk{file: filepath.Join(dir, "disk.img"), mount: filepath.Join(dir, "disk"), size: 64 << 20, cache: cache}
		if err := d.ensure(ctx); err != nil {
			t.Fatalf("disk %d: %v", i, err)
		}
		t.Cleanup(func() { unmountAll(d.mount) })
		disks = append(disks, d)
	}
	tpl := filepath.Join(cache, "ext4-67108864-v1.img")
	before, err := os.ReadFile(tpl)
	if err != nil {
		t.Fatalf("the cached filesystem: %v", err)
	}
	if err := os.WriteFile(filepath.Join(disks[0].mount, "mine"), []byte("0"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(disks[1].mount, "mine")); !os.IsNotExist(err) {
		t.Errorf("a file written to disk 0 shows on disk 1: %v", err)
	}
	for i, d := range disks {
		if loops := loopsBacking(t, d.file); len(loops) != 1 {
			t.Errorf("disk %d: loop devices %v; want one", i, loops)
		}
		var st unix.Stat_t
		if err := unix.Stat(d.file, &st); err != nil || st.Blocks*512 > 8<<20 {
			t.Errorf("disk %d allocates %d bytes (%v); want a sparse copy", i, st.Blocks*512, err)
		}
	}
	unix.Sync()
	if after, err := os.ReadFile(tpl); err != nil || string(after) != string(before) {
		t.Errorf("the cached filesystem changed (%v)", err)
	}
	if left, _ := filepath.Glob(filepath.Join(cache, ".disk-*")); len(left) > 0 {
		t.Errorf("temp files left in the cache: %v", left)
	}
}

// TestSharedEtcFilesAreBounded writes without end to /etc/hosts,
// /etc/hostname and /etc/resolv.conf, which every container gets
// bind-mounted writable: they live on the sandbox's disk, so the writes
// stop with ENOSPC at its size and the node's disk loses no more. A short
// write to /etc/hosts works: the files are still writable.
func TestSharedEtcFilesAreBounded(t *testing.T) {
	const bound = 32 << 20
	node := smallFS(t, 256<<20)
	before := freeBytes(t, node)
	script := `echo "10.0.0.9 extra" >> /etc/hosts && grep -q extra /etc/hosts && echo appended; ` +
		`for f in /etc/hosts /etc/hostname /etc/resolv.conf; do dd if=/dev/zero of=$f bs=1M count=48 2>&1 | grep -q "No space left" && echo bounded $f; done`
	sb, _ := newTestSandboxWith(t, func(s *sandbox.Spec) {
		s.StateDir = filepath.Join(node, "state")
		s.DiskBytes = bound
	}, shell("c", script))
	_, out, errOut := runToExit(t, sb, "c")
	want := "appended\nbounded /etc/hosts\nbounded /etc/hostname\nbounded /etc/resolv.conf\n"
	if out != want {
		t.Errorf("output %q (stderr %q); want %q", out, errOut, want)
	}
	if lost := before - freeBytes(t, node); lost > bound+(4<<20) {
		t.Errorf("the node's disk lost %d bytes; want at most the bound %d", lost, bound)
	}
}
