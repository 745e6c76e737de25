package qemu

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

func TestBinaryFor(t *testing.T) {
	const full, micro = "/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-system-x86_64-microvm"
	for _, tc := range []struct {
		accel   vmm.Accel
		microvm string
		seccomp bool
		want    string
	}{
		{vmm.AccelKVM, micro, true, micro},
		{vmm.AccelKVM, micro, false, full}, // Debian 7.2's: no -sandbox
		{vmm.AccelKVM, "", false, full},
		{vmm.AccelTCG, micro, true, full}, // the microvm build has no TCG
		{"", micro, true, full},
	} {
		if got := binaryFor(tc.accel, full, tc.microvm, tc.seccomp); got != tc.want {
			t.Errorf("binaryFor(%q, microvm %q, seccomp %v) = %s; want %s", tc.accel, tc.microvm, tc.seccomp, got, tc.want)
		}
	}
}

// TestSandboxSupported runs the installed binaries: the full QEMU must
// enforce -sandbox (the jail relies on it); Debian 7.2's microvm build
// does not, so KVM guests keep the full binary there. Neither boots a
// guest here: the microvm build has no TCG, and KVM on these hosts does
// not run a Linux guest (ENVIRONMENT.md).
func TestSandboxSupported(t *testing.T) {
	full, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-system-x86_64 not installed but CI=true")
		}
		t.Skip("qemu-system-x86_64 not installed: apt-get install qemu-system-x86")
	}
	if !sandboxSupported(context.Background(), full) {
		t.Errorf("%s -sandbox %s -version failed; want it to work (the jail's seccomp)", full, SandboxOptions)
	}
	micro, seccomp := findMicrovmBinary(context.Background(), full)
	t.Logf("microvm build %q: -sandbox works: %v", micro, seccomp)
}
