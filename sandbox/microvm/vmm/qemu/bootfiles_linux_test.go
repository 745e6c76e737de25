package qemu

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

func TestFileMappings(t *testing.T) {
	maps := `55d0c0000000-55d0c0100000 r--p 00000000 00:1f 12 /usr/bin/qemu-system-x86_64
7f0000000000-7f0000a00000 r--p 00000000 00:20 7 /vm/vmlinux
7f0000a00000-7f0000a01000 r--p 00a00000 00:20 7 /vm/vmlinux
7f1000000000-7f1000300000 r--p 00000000 00:20 8 /vm/initrd
7f2000000000-7f2000001000 rw-p 00000000 00:00 0
7f3000000000-7f3000001000 r--p 00000000 00:20 9 /vm/vmlinux.old
`
	for _, tc := range []struct {
		path string
		want []mapping
	}{
		{jailKernel, []mapping{{0x7f0000000000, 0x7f0000a00000}, {0x7f0000a00000, 0x7f0000a01000}}},
		{jailInitrd, []mapping{{0x7f1000000000, 0x7f1000300000}}},
		{"/vm/none", nil},
	} {
		got, err := fileMappings(strings.NewReader(maps), tc.path)
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("fileMappings(%s) = %v, %v; want %v", tc.path, got, err, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("fileMappings(%s)[%d] = %x; want %x", tc.path, i, got[i], tc.want[i])
			}
		}
	}
	if _, err := fileMappings(strings.NewReader("7f00-7e00 r--p 0 00:20 7 /vm/vmlinux\n"), jailKernel); err == nil {
		t.Errorf("fileMappings(end < start) succeeded; want an error")
	}
	// Hostile sizes: a line longer than any real one is an error, and
	// no more than maxMapsBytes is read.
	long := strings.Repeat("x", 8192) + " /vm/vmlinux\n"
	if _, err := fileMappings(strings.NewReader(long), jailKernel); err == nil {
		t.Errorf("fileMappings(8 KiB line) succeeded; want an error")
	}
	endless := io.MultiReader(strings.NewReader(strings.Repeat("0-1 r--p 0 0:0 0 /x\n", maxMapsBytes/20+10)), strings.NewReader("7f00-7f01 r--p 0 0:0 0 /vm/vmlinux\n"))
	if got, err := fileMappings(endless, jailKernel); err != nil || len(got) != 0 {
		t.Errorf("fileMappings read past maxMapsBytes: %v, %v", got, err)
	}
}

func TestFirstRIP(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"CPU#0\nRAX=0000000000000000 RBX=0\nRIP=ffffffff81b62618 RFL=00000046\nRIP=0000000000000001", 0xffffffff81b62618, true},
		{"CPU#0\nEAX=00000010 EBX=0\nEIP=000f1234 EFL=00000002", 0, false},
		{"RIP=ffff", 0, false},
		{"RIP=zzzzzzzzzzzzzzzz", 0, false},
		{"", 0, false},
	} {
		if got, ok := firstRIP(tc.in); got != tc.want || ok != tc.ok {
			t.Errorf("firstRIP(%q) = %x, %v; want %x, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestBootFilesPagedOut boots a guest from private copies of the kernel
// and initrd (another QEMU mapping the same file would keep its pages in;
// so would a file still under writeback, hence the fsync) and checks
// that once it is up QEMU holds none of the kernel or initrd, and that
// with KeepBootFiles it holds both (so the check can fail).
func TestBootFilesPagedOut(t *testing.T) {
	kernel := requireVM(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	kernelCopy, initrdCopy := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd")
	for src, dst := range map[string]string{kernel: kernelCopy, testInitrd: initrdCopy} {
		if err := copyFile(src, dst); err != nil {
			t.Fatal(err)
		}
	}
	for _, keep := range []bool{false, true} {
		cfg := testConfig(t, kernelCopy, "hang")
		cfg.Initrd = initrdCopy
		d, err := New(Options{Logger: testLogger(t), KeepBootFiles: keep})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
		v, err := d.StartVM(ctx, cfg)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if err := v.WaitConsole(ctx, marker); err != nil {
			t.Fatalf("WaitConsole: %v; console:\n%s", err, v.Console())
		}
		var k, i int64
		for {
			k, i = mappingRss(t, v.Pid(), jailKernel), mappingRss(t, v.Pid(), jailInitrd)
			if keep || k+i == 0 || ctx.Err() != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if keep && (k < 1<<20 || i < 1<<20) {
			t.Errorf("KeepBootFiles: vmlinux %d KiB, initrd %d KiB resident; want both > 1 MiB", k>>10, i>>10)
		}
		if !keep && k+i != 0 {
			t.Errorf("vmlinux %d KiB, initrd %d KiB resident after boot; want 0", k>>10, i>>10)
		}
		if err := v.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if e := v.Exit(); e.Reason != vmm.ExitStopped {
			t.Errorf("exit = %v; want Stopped", e)
		}
	}
}

// mappingRss sums the Rss of pid's mappings of path (from smaps).
func mappingRss(t *testing.T, pid int, path string) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sum int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 5 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":") {
			in = len(fs) == 6 && fs[5] == path
		} else if in && len(fs) == 3 && fs[0] == "Rss:" {
			kb, _ := strconv.ParseInt(fs[1], 10, 64)
			sum += kb << 10
		}
	}
	return sum
}

// copyFile copies src to dst and fsyncs it.
func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
