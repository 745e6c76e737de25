package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// ProbeOptions configure Probe.
type ProbeOptions struct {
	// Binary is qemu-system-x86_64; "" looks it up in PATH.
	Binary string
	// Kernel is the guest vmlinux the node will boot.
	Kernel string
	// CacheFile keeps the answer for the rest of this host boot (keyed by
	// /proc/sys/kernel/random/boot_id and the kernel file); "" caches
	// nothing.
	CacheFile string
	// Timeout bounds the KVM trial boot; 0 means 10 s. A real KVM host
	// boots the kernel to its panic in well under a second.
	Timeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

type probeCache struct {
	BootID string    `json:"bootID"`
	Kernel string    `json:"kernel"`
	Accel  vmm.Accel `json:"accel"`
}

// Probe reports the accelerator guests really run on here. It never
// trusts /dev/kvm's existence (a nested kvm_pvm passes that and cannot run
// a Linux guest): it boots the guest kernel itself under KVM, with no init
// and no root, and wants the kernel's own "Kernel panic" (its end of boot)
// on the console and QEMU's exit within the timeout. Anything else, and
// every error, means TCG.
func Probe(ctx context.Context, opts ProbeOptions) vmm.Accel {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key := cacheKey(opts.Kernel)
	if opts.CacheFile != "" && key.BootID != "" {
		var c probeCache
		if b, err := os.ReadFile(opts.CacheFile); err == nil && json.Unmarshal(b, &c) == nil &&
			c.BootID == key.BootID && c.Kernel == key.Kernel && (c.Accel == vmm.AccelKVM || c.Accel == vmm.AccelTCG) {
			return c.Accel
		}
	}
	accel, why := probeKVM(ctx, opts)
	log.Info("accelerator probed", "accel", accel, "why", why)
	if opts.CacheFile != "" && key.BootID != "" && ctx.Err() == nil {
		key.Accel = accel
		b, _ := json.Marshal(key)
		tmp := opts.CacheFile + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err == nil {
			os.Rename(tmp, opts.CacheFile)
		}
	}
	return accel
}

func cacheKey(kernel string) probeCache {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	k := kernel
	if st, err := os.Stat(kernel); err == nil {
		k = fmt.Sprintf("%s:%d:%d", kernel, st.Size(), st.ModTime().UnixNano())
	}
	return probeCache{BootID: strings.TrimSpace(string(b)), Kernel: k}
}

// kvmDevice is opened first; a test points it elsewhere.
var kvmDevice = "/dev/kvm"

func probeKVM(ctx context.Context, opts ProbeOptions) (vmm.Accel, string) {
	f, err := os.OpenFile(kvmDevice, os.O_RDWR, 0)
	if err != nil {
		return vmm.AccelTCG, "cannot open /dev/kvm: " + err.Error()
	}
	f.Close()
	if opts.Kernel == "" {
		return vmm.AccelTCG, "no guest kernel to try KVM with"
	}
	bin := opts.Binary
	if bin == "" {
		if bin, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			return vmm.AccelTCG, "no qemu-system-x86_64"
		}
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	abs, _ := filepath.Abs(opts.Kernel)
	cmd := exec.CommandContext(ctx, bin,
		"-M", MachineOptions, "-accel", "kvm", "-cpu", "host",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-sandbox", SandboxOptions,
		"-m", "64M", "-smp", "1",
		"-kernel", abs,
		// No initrd and no root: a kernel that boots fully panics at
		// mounting root, and panic=-1 ends QEMU right there.
		"-append", BaseCmdline+" quiet root=/dev/cube-probe-none",
		"-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
	)
	cmd.Env = []string{}
	// A trial guest on a nested kvm_pvm hangs until the timeout: one whose
	// prober is killed meanwhile (cube up, kill -9) must not hang on.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out, stderr limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start).Round(time.Millisecond)
	switch {
	case ctx.Err() != nil:
		return vmm.AccelTCG, fmt.Sprintf("a kvm guest did not boot within %s", timeout)
	case err != nil:
		return vmm.AccelTCG, fmt.Sprintf("qemu under kvm failed: %v: %s", err, lastLine(stderr.Bytes()))
	case !bytes.Contains(out.Bytes(), []byte(panicMarker)):
		return vmm.AccelTCG, fmt.Sprintf("a kvm guest ended without booting: %s", lastLine(out.Bytes()))
	}
	return vmm.AccelKVM, fmt.Sprintf("a kvm guest booted in %s", took)
}

// limitedBuffer keeps the first 64 KiB written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := tailBytes - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 200 {
		l = l[:200]
	}
	return l
}
