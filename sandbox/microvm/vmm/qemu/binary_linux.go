package qemu

import (
	"context"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// MicrovmBinaryName is Debian's QEMU built for -M microvm alone: 7.6 MB
// and 10 libraries against the full binary's 18 MB and ~50 (measured with
// QEMU 7.2: 12.9 MiB of the full binary resident in an idle VM). It has no
// TCG (its -accel help lists only kvm), so it can only serve KVM guests.
const MicrovmBinaryName = "qemu-system-x86_64-microvm"

// binaryFor is the QEMU binary a guest on accel runs with: the microvm
// build under KVM when there is one that can enforce -sandbox (Debian's
// 7.2 build has no seccomp support: "-sandbox support is not enabled in
// this QEMU binary", so it is never chosen there and the jail's seccomp
// stays), else the full binary.
func binaryFor(accel vmm.Accel, full, microvm string, microvmSeccomp bool) string {
	if accel == vmm.AccelKVM && microvm != "" && microvmSeccomp {
		return microvm
	}
	return full
}

// findMicrovmBinary returns the microvm build next to full (or in PATH)
// and whether its -sandbox works; "" if there is none.
func findMicrovmBinary(ctx context.Context, full string) (string, bool) {
	p := filepath.Join(filepath.Dir(full), MicrovmBinaryName)
	if _, err := exec.LookPath(p); err != nil {
		if p, err = exec.LookPath(MicrovmBinaryName); err != nil {
			return "", false
		}
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", false
	}
	return abs, sandboxSupported(ctx, abs)
}

// sandboxSupported runs "bin -sandbox SandboxOptions -version": QEMU
// parses -sandbox first and exits 1 when it was built without seccomp,
// else prints its version and exits 0.
func sandboxSupported(ctx context.Context, bin string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-sandbox", SandboxOptions, "-version")
	cmd.Env = []string{}
	return cmd.Run() == nil
}
