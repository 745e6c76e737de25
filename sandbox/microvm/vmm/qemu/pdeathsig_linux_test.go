package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// fakeShimEnv makes the test binary act as a shim (see runFakeShim): it
// starts the VM described by the variable's JSON, prints the VMM's pid,
// and blocks until killed.
const fakeShimEnv = "CUBE_QEMU_TEST_FAKE_SHIM"

func init() {
	if os.Getenv(fakeShimEnv) != "" {
		runFakeShim()
	}
}

func runFakeShim() {
	var cfg vmm.Config
	if err := json.Unmarshal([]byte(os.Getenv(fakeShimEnv)), &cfg); err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	d, err := New(Options{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	v, err := d.StartVM(context.Background(), cfg)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	fmt.Println("pid", v.Pid())
	<-v.Done()
	os.Exit(0)
}

// TestShimDeath: SIGKILL of the VMM's owner (the shim) takes the VMM with
// it (PR_SET_PDEATHSIG), and Cleanup then removes every leftover.
func TestShimDeath(t *testing.T) {
	kernel := requireVM(t)
	cfg := testConfig(t, kernel, "hang")
	b, _ := json.Marshal(cfg)
	exe, _ := os.Executable()
	shim := exec.Command(exe, "-test.run=^$")
	shim.Env = append(os.Environ(), fakeShimEnv+"="+string(b))
	out, _ := shim.StdoutPipe()
	shim.Stderr = os.Stderr
	if err := shim.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { shim.Process.Kill(); shim.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "pid ") {
		t.Fatalf("fake shim said %q, %v", line, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "pid ")))
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	defer unix.Close(pidfd)

	shim.Process.Signal(syscall.SIGKILL)
	shim.Wait()
	// A pidfd becomes readable when its process ends.
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, int((30 * time.Second).Milliseconds()))
	if err != nil || n != 1 {
		t.Fatalf("vmm %d still runs 30s after its shim was killed (poll %d, %v)", pid, n, err)
	}
	d, _ := New(Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Cleanup(ctx, cfg); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	removeCgroupParent(cfg.Jail.CgroupParent)
	assertNothingLeft(t, cfg, pid)
}

// fakeProberEnv makes the test binary a prober (see runFakeProber): it
// runs the KVM probe with the variable's value as the QEMU binary.
const fakeProberEnv = "CUBE_QEMU_TEST_FAKE_PROBER"

func init() {
	if os.Getenv(fakeProberEnv) != "" {
		runFakeProber()
	}
}

func runFakeProber() {
	kvmDevice = os.DevNull // any device that opens read-write
	bin := os.Getenv(fakeProberEnv)
	accel, why := probeKVM(context.Background(), ProbeOptions{Binary: bin, Kernel: bin, Timeout: 10 * time.Minute})
	fmt.Println("probe ended", accel, why)
	os.Exit(0)
}

// TestProberDeath: a trial guest that hangs (as one does on a nested
// kvm_pvm, until the probe's timeout) dies with its prober when that is
// killed mid-probe, instead of running on for good. The trial QEMU is
// fakeQEMU, a script that hangs: the real one would boot only where KVM
// works, and hang where it does not, which is what is faked.
func TestProberDeath(t *testing.T) {
	dir := t.TempDir()
	fakeQEMU := filepath.Join(dir, "fake-qemu")
	// It writes its pid into a FIFO beside itself (the prober gives it no
	// environment), which the test reads: the write is the event.
	if err := os.WriteFile(fakeQEMU, []byte("#!/bin/sh\necho $$ > \"$0.pid\"\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(fakeQEMU+".pid", 0o600); err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	prober := exec.Command(exe, "-test.run=^$")
	prober.Env = append(os.Environ(), fakeProberEnv+"="+fakeQEMU)
	prober.Stderr = os.Stderr
	if err := prober.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { prober.Process.Kill(); prober.Wait() }()
	said := make(chan string, 1)
	go func() {
		b, _ := os.ReadFile(fakeQEMU + ".pid") // blocks until the script writes
		said <- string(b)
	}()
	var pid int
	select {
	case line := <-said:
		if pid, _ = strconv.Atoi(strings.TrimSpace(line)); pid <= 0 {
			t.Fatalf("the trial guest wrote %q; want its pid", line)
		}
	case <-time.After(30 * time.Second):
		os.WriteFile(fakeQEMU+".pid", nil, 0) // unblock the reader
		t.Fatal("the prober did not start its trial guest within 30s")
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open(%d): %v", pid, err)
	}
	defer unix.Close(pidfd)
	// Positive control: it hangs while its prober lives.
	if n, _ := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 0); n != 0 {
		t.Fatal("the trial guest ended on its own; it should hang")
	}
	prober.Process.Signal(syscall.SIGKILL)
	prober.Wait()
	n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, int((30 * time.Second).Milliseconds()))
	if err != nil || n != 1 {
		unix.Kill(pid, unix.SIGKILL)
		t.Fatalf("trial guest %d still runs 30s after its prober was killed (poll %d, %v)", pid, n, err)
	}
}
