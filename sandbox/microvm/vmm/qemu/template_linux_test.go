package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

var tickRE = regexp.MustCompile(`CUBE-TICK (\d+)\r?\n`)

// lastTick is the highest counter the console shows, -1 if none.
func lastTick(console []byte) int {
	n := -1
	for _, m := range tickRE.FindAllSubmatch(console, -1) {
		if v, _ := strconv.Atoi(string(m[1])); v > n {
			n = v
		}
	}
	return n
}

// waitTick waits for the counter to pass above (it counts up by one).
func waitTick(t *testing.T, v *VM, above int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
	defer cancel()
	if err := v.WaitConsole(ctx, fmt.Sprintf("CUBE-TICK %d\r\n", above+1)); err != nil {
		t.Fatalf("no tick above %d: %v; console:\n%s", above, err, v.Console())
	}
	return lastTick(v.Console())
}

func memfdSum(t *testing.T, f *os.File) [32]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<40)); err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// TestTemplateClones boots a template whose RAM is a memfd, saves only its
// devices, seals the memfd, and restores two clones that map it privately:
// each goes on counting from where the template stopped, and neither
// changes a byte of the template.
func TestTemplateClones(t *testing.T) {
	kernel := requireVM(t)
	fd, err := unix.MemfdCreate("cube-test-template", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	mem := os.NewFile(uintptr(fd), "template-mem")
	defer mem.Close()

	tcfg := testConfig(t, kernel, "tick")
	tcfg.Memory = &vmm.Memory{File: mem, Shared: true}
	tv := startVM(t, tcfg)
	waitTick(t, tv, 3)
	state := filepath.Join(t.TempDir(), "state")
	sf, err := os.OpenFile(state, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tv.Save(ctx, sf, true); err != nil {
		t.Fatalf("Save: %v", err)
	}
	sf.Close()
	saved := lastTick(tv.Console())
	tv.Stop(ctx)
	st, _ := os.Stat(state)
	if st.Size() == 0 || st.Size() > 1<<20 {
		t.Fatalf("device state is %d bytes; want some, and no RAM (x-ignore-shared)", st.Size())
	}
	if _, err := unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		t.Fatalf("seal: %v", err)
	}
	before := memfdSum(t, mem)

	for i := range 2 {
		in, err := os.Open(state)
		if err != nil {
			t.Fatal(err)
		}
		ccfg := testConfig(t, kernel, "tick")
		ccfg.Memory = &vmm.Memory{File: mem}
		ccfg.Incoming = in
		t0 := time.Now()
		cv := startVM(t, ccfg)
		in.Close()
		if i == 0 {
			assertJailProc(t, cv.Pid())
		}
		n := waitTick(t, cv, saved)
		t.Logf("clone %d: tick %d (template stopped at %d) %v after StartVM began", i, n, saved, time.Since(t0))
		if bytes.Contains(cv.Console(), []byte("CUBE-TEST-INIT-OK")) {
			t.Errorf("clone %d booted again instead of restoring: %q", i, cv.Console())
		}
	}
	if after := memfdSum(t, mem); after != before {
		t.Error("the clones changed the template's memory")
	}
}

// assertJailProc: a VMM with a memory file has a /proc of its own in its
// jail, which shows it only itself (hidepid=invisible: its uid is its
// own) and none of the kernel's knobs or tables (subset=pid).
func assertJailProc(t *testing.T, pid int) {
	t.Helper()
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	var procLine string
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == "/proc" {
			procLine = l
		}
	}
	if !strings.Contains(procLine, "hidepid=invisible") || !strings.Contains(procLine, "subset=pid") || !strings.Contains(procLine, " ro,") {
		t.Errorf("the vmm's /proc mount is %q; want read-only, hidepid=invisible, subset=pid", procLine)
	}
	root := fmt.Sprintf("/proc/%d/root/proc", pid)
	for _, hidden := range []string{"sys", "kallsyms", "meminfo"} {
		if _, err := os.Stat(filepath.Join(root, hidden)); err == nil {
			t.Errorf("the vmm's /proc shows %s", hidden)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "self", "fd")); err != nil {
		t.Errorf("the vmm's /proc has no self/fd (%v): the memory file is unreachable, the check above proves nothing", err)
	}
}
