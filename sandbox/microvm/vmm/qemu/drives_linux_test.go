package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// TestReplaceDrive swaps both drives of a running guest for other files
// and checks that the guest's reads and writes reach the new files only,
// that QEMU lets go of the old ones, that a writable drive larger than
// QEMU's file size limit can be written to its end, and that a swap which
// does not fit the drive is refused.
func TestReplaceDrive(t *testing.T) {
	kernel := requireVM(t)
	dir := t.TempDir()
	file := func(name, content string, size int64) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
		return p
	}
	imageA, imageB := file("image-a", "image-A", 1<<20), file("image-b", "image-B", 1<<20)
	rwA := file("rw-a", "", 1<<20)
	// Far above rwA, at the limit the VM is started with; rwC over it.
	rwB := file("rw-b", "", 4<<30)
	rwC := file("rw-c", "", 4<<30+1)

	cfg := testConfig(t, kernel, "drives")
	cfg.Drives = []vmm.Drive{{ID: "image", Path: imageA, ReadOnly: true}, {ID: "rw", Path: rwA}}
	cfg.MaxWritableBytes = 4 << 30
	v := startVM(t, cfg)
	// Connected before the guest opens its port: a guest reading a port
	// no host holds reads end-of-file.
	port, err := net.DialTimeout("unix", cfg.AgentSocket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	if err := v.WaitConsole(ctx, "CUBE-DRIVES-READY"); err != nil {
		t.Fatalf("%v; console:\n%s", err, v.Console())
	}
	round := func(word string) string {
		t.Helper()
		if _, err := fmt.Fprintln(port, word); err != nil {
			t.Fatal(err)
		}
		if err := v.WaitConsole(ctx, "CUBE-DRIVES-DONE "+word); err != nil {
			t.Fatalf("%v; console:\n%s", err, v.Console())
		}
		return string(v.Console())
	}
	expect := func(console string, lines ...string) {
		t.Helper()
		for _, l := range lines {
			if !strings.Contains(console, l) {
				t.Errorf("guest console lacks %q:\n%s", l, console)
			}
		}
	}
	expect(round("first"), `DRIVE first image "image-A"`, `DRIVE first rw ""`)

	if err := v.ReplaceDrive(ctx, vmm.Drive{ID: "image", Path: imageB, ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	if err := v.ReplaceDrive(ctx, vmm.Drive{ID: "rw", Path: rwB}); err != nil {
		t.Fatal(err)
	}
	expect(round("second"), `DRIVE second image "image-B"`, `DRIVE second rw ""`)
	for path, want := range map[string]string{rwA: "first", rwB: "second"} {
		b := make([]byte, 16)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		f.ReadAt(b, 0)
		f.Close()
		if got := strings.TrimRight(string(b), "\x00"); !strings.HasPrefix(got, want) {
			t.Errorf("%s starts %q; want the guest's %q", filepath.Base(path), got, want)
		}
	}
	if b, _ := os.ReadFile(imageB); !strings.HasPrefix(string(b), "image-B\x00") {
		t.Errorf("the read-only image changed")
	}
	// QEMU holds the new files and none of the old ones.
	held := openFiles(t, v.Pid())
	for _, p := range []string{imageA, rwA} {
		if held[p] {
			t.Errorf("qemu still holds %s", filepath.Base(p))
		}
	}
	for _, p := range []string{imageB, rwB} {
		if !held[p] {
			t.Errorf("qemu does not hold %s (it holds %v)", filepath.Base(p), held)
		}
	}
	if lim := fileSizeLimit(t, v.Pid()); lim != 4<<30 {
		t.Errorf("qemu's RLIMIT_FSIZE is %d; want MaxWritableBytes, 4 GiB", lim)
	}

	// Swaps that do not fit the drive.
	for _, tc := range []struct {
		d    vmm.Drive
		want error
	}{
		{vmm.Drive{ID: "nosuch", Path: imageA, ReadOnly: true}, errdefs.ErrNotFound},
		{vmm.Drive{ID: "image", Path: imageA}, errdefs.ErrInvalid},
		{vmm.Drive{ID: "rw", Path: imageA, ReadOnly: true}, errdefs.ErrInvalid},
		{vmm.Drive{ID: "rw", Path: "/dev/null"}, errdefs.ErrInvalid},
		{vmm.Drive{ID: "rw", Path: rwC}, errdefs.ErrInvalid},
		{vmm.Drive{ID: "rw", Path: filepath.Join(dir, "missing")}, os.ErrNotExist},
	} {
		if err := v.ReplaceDrive(ctx, tc.d); !errors.Is(err, tc.want) {
			t.Errorf("ReplaceDrive(%+v) = %v; want %v", tc.d, err, tc.want)
		}
	}
	// The refused swaps left the drives as they were.
	expect(round("third"), `DRIVE third image "image-B"`, `DRIVE third rw "second"`)
}

// fileSizeLimit is a process's soft RLIMIT_FSIZE, from /proc (prlimit
// on another uid's process needs CAP_SYS_RESOURCE).
func fileSizeLimit(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(strings.TrimPrefix(l, "Max file size")); len(f) > 0 && strings.HasPrefix(l, "Max file size") {
			n, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				t.Fatalf("limits: %q: %v", l, err)
			}
			return n
		}
	}
	t.Fatalf("no file size limit in /proc/%d/limits", pid)
	return 0
}

// openFiles are the paths a process holds open.
func openFiles(t *testing.T, pid int) map[string]bool {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for _, fd := range fds {
		if p, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil {
			held[p] = true
		}
	}
	return held
}
