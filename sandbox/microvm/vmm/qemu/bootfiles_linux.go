package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cube-platform/cube/sandbox/microvm/vmm/qmp"
)

// QEMU keeps its copy of the guest kernel and initrd mapped for the VM's
// life: the kernel's ELF segments as ROM blobs that a machine reset copies
// into guest RAM again, the initrd as the fw_cfg file the firmware reads
// once at boot. Every page of them stays in QEMU's RSS (10.6 + 2.8 MiB
// measured, ~13 MiB of the 66 MiB VMM overhead), yet after boot only a
// reset would read them, and -no-reboot turns every reset (the guest's or
// QMP's system_reset) into QEMU's exit. So once the guest kernel runs
// the driver pages both mappings out of QEMU (process_madvise
// MADV_PAGEOUT). That is always safe: the mappings stay, and a page
// touched again faults back in from the file.
//
// The kernel skips a page another process also maps (it does not unmap
// other processes' pages): a VM that boots while another is booting keeps
// the pages both mapped at that moment. Pages nobody maps any more leave
// the page cache, so the next boot reads them from disk again (~12 ms for
// the 17 MB vmlinux measured here, cold).

// maxMapsBytes bounds how much of /proc/<pid>/maps is read (QEMU's is
// ~30 KiB: ~400 mappings).
const maxMapsBytes = 1 << 20

// bootFilePoll is the first interval at which the driver looks whether
// the guest kernel runs yet; it doubles up to bootFilePollMax, so a guest
// stuck in its firmware costs a QMP call every 250 ms, not every 10.
const (
	bootFilePoll    = 10 * time.Millisecond
	bootFilePollMax = 250 * time.Millisecond
)

// mapping is one range of another process's address space.
type mapping struct {
	start, end uint64
}

// fileMappings returns the ranges of /proc/<pid>/maps that map path.
func fileMappings(r io.Reader, path string) ([]mapping, error) {
	var out []mapping
	sc := bufio.NewScanner(io.LimitReader(r, maxMapsBytes))
	sc.Buffer(make([]byte, 0, 4096), 4096+len(path))
	for sc.Scan() {
		// start-end perms offset dev inode path
		fs := bytes.Fields(sc.Bytes())
		if len(fs) != 6 || string(fs[5]) != path {
			continue
		}
		lo, hi, ok := bytes.Cut(fs[0], []byte("-"))
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(string(lo), 16, 64)
		e, err2 := strconv.ParseUint(string(hi), 16, 64)
		if err1 != nil || err2 != nil || e <= s {
			return nil, fmt.Errorf("maps: bad range %q", fs[0])
		}
		out = append(out, mapping{s, e})
	}
	return out, sc.Err()
}

// releaseBootFiles waits until the guest kernel runs (the firmware hands
// over only after it has read the initrd from fw_cfg), then pages the
// kernel and initrd mappings out of QEMU. It returns early when ctx ends
// or exited is closed; pidfd is QEMU's, so the madvise never reaches
// another process even if the pid is reused.
func releaseBootFiles(ctx context.Context, c *qmp.Client, pidfd, pid int, exited <-chan struct{}) (int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return 0, err
	}
	maps, err := io.ReadAll(io.LimitReader(f, maxMapsBytes))
	f.Close()
	if err != nil {
		return 0, err
	}
	var ms []mapping
	for _, p := range []string{jailKernel, jailInitrd} {
		m, err := fileMappings(bytes.NewReader(maps), p)
		if err != nil {
			return 0, err
		}
		ms = append(ms, m...)
	}
	if err := waitGuestKernel(ctx, c, exited); err != nil {
		return 0, err
	}
	return pageOut(pidfd, ms)
}

// waitGuestKernel polls CPU 0's instruction pointer (HMP "info
// registers" over QMP) until it is in the upper half, where only the
// guest kernel runs: the firmware and the kernel's 32-bit PVH entry run
// at low physical addresses. Measured under TCG: ~40 ms after cont.
func waitGuestKernel(ctx context.Context, c *qmp.Client, exited <-chan struct{}) error {
	wait := bootFilePoll
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		r, err := c.Execute(ctx, "human-monitor-command", map[string]string{"command-line": "info registers"})
		if err != nil {
			return err
		}
		var out string
		if err := json.Unmarshal(r, &out); err != nil {
			return fmt.Errorf("info registers: %w", err)
		}
		if rip, ok := firstRIP(out); ok && rip >= 1<<63 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("qemu exited")
		case <-t.C:
		}
		wait = min(2*wait, bootFilePollMax)
		t.Reset(wait)
	}
}

// firstRIP finds the first "RIP=<16 hex digits>" of an "info registers"
// dump (only 64-bit mode prints RIP; 32-bit mode prints EIP).
func firstRIP(s string) (uint64, bool) {
	i := strings.Index(s, "RIP=")
	if i < 0 || len(s) < i+4+16 {
		return 0, false
	}
	v, err := strconv.ParseUint(s[i+4:i+4+16], 16, 64)
	return v, err == nil
}
