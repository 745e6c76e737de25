package qemu

import (
	"fmt"
	"strings"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// BaseCmdline is put before the caller's kernel command line (a later
// setting of the same parameter wins): the console on the microvm's ISA
// serial, a triple-fault reboot (which -no-reboot turns into QEMU's exit,
// as microvm without ACPI cannot power off), and a panic that reboots at
// once, so a panicked guest ends its VMM instead of hanging.
const BaseCmdline = "console=ttyS0 reboot=t panic=-1"

// The VMM's file descriptors, as the jail renumbers Start's files.
const (
	fdQMP   = 3
	fdAgent = 4
	fdFirst = 5 // then the tap (if any), then one per drive
)

// MachineOptions are microvm's, as measured in ENVIRONMENT.md: without the
// PIT and RTC a TCG guest hangs calibrating its TSC. acpi=off because the
// guest kernel has no ACPI: only then does QEMU list the virtio-mmio
// devices on the kernel command line (virtio_mmio.device=...), and
// without that the guest finds no drive, card or agent port (measured:
// with ACPI tables on, the guest saw none of them).
const MachineOptions = "microvm,x-option-roms=off,isa-serial=on,pit=on,pic=on,rtc=on,acpi=off"

// TCGCacheMiB caps TCG's translation cache. QEMU's default is 1 GiB of
// address space that fills as the guest runs new code; what is filled
// stays resident. A clone's start alone (restore, Setup, the container's
// init and first program) translates more than 16 MiB of host code, so at
// 16 TCG flushed the cache and translated it all again, several times per
// start: a container restart in a warm VM took 600 ms (a Go init's start
// translated anew each time) against 70 ms at 128. Measured 2026-12-02,
// cube bench boot --runtime microvm --n 5, one run each:
//
//	tb MiB  start_template  start (cold)  resume  density template/cold
//	16      1865 ms         3011 ms       443 ms  40.4 / 89.0 MiB
//	32      1374            2536          409     57.4 / 106.3
//	64      1212            2385          332     57.9 / 128.5
//
// A clone's working set fits in 64 (its memory is the same as at 32);
// 256 made QEMU's own start slower (more regions to map). The cap is also
// what a VM running much new code can keep resident: within the VMM
// cgroup's allowance (vmm.DefaultMemoryOverheadMiB).
// Only TCG has it; under KVM the guest runs natively.
const TCGCacheMiB = 64

// SandboxOptions is QEMU's own seccomp filter.
const SandboxOptions = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// args builds QEMU's argv (without argv[0]) for cfg. The fd layout: 3 the
// QMP listener, 4 the agent listener, then the tap, then the drives (one
// O_RDONLY fd each, and an O_RDWR one after it for a writable drive; see
// driveFiles), then the memory file and the incoming snapshot, if any.
func args(cfg *vmm.Config) []string {
	// The RAM is always the backend "mem", so a snapshot of any VM
	// (cold-booted or a template's clone) names the same RAM block.
	a := []string{
		"-M", MachineOptions + ",memory-backend=mem",
	}
	switch accelOf(cfg) {
	case vmm.AccelKVM:
		a = append(a, "-accel", "kvm", "-cpu", "host")
	default:
		a = append(a, "-accel", fmt.Sprintf("tcg,tb-size=%d", TCGCacheMiB), "-cpu", "max")
	}
	a = append(a,
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		// Paused until the driver has its QMP connection, so no event
		// (a panic at boot) is missed.
		"-S",
		"-sandbox", SandboxOptions,
		"-m", fmt.Sprintf("%dM", cfg.MemoryMiB),
		"-smp", fmt.Sprint(cfg.VCPUs),
		"-kernel", jailKernel,
		"-append", strings.TrimSpace(BaseCmdline+" "+cfg.Cmdline),
	)
	if cfg.Initrd != "" {
		a = append(a, "-initrd", jailInitrd)
	}
	a = append(a,
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", fdQMP),
		"-mon", "chardev=qmp,mode=control",
		"-chardev", "stdio,id=con,signal=off",
		"-serial", "chardev:con",
		"-device", "virtio-serial-device,max_ports=2",
		"-chardev", fmt.Sprintf("socket,id=agent,fd=%d,server=on,wait=off", fdAgent),
		"-device", "virtserialport,chardev=agent,name=cube.agent",
	)
	fd := fdFirst
	if cfg.Net != nil {
		a = append(a,
			"-netdev", fmt.Sprintf("tap,id=n0,fd=%d", fd),
			"-device", "virtio-net-device,netdev=n0,mac="+cfg.Net.MAC.String(),
		)
		fd++
	}
	for i, d := range cfg.Drives {
		set := driveFdset(i)
		ro := "off"
		if d.ReadOnly {
			ro = "on"
		}
		a = append(a, "-add-fd", fmt.Sprintf("fd=%d,set=%d", fd, set))
		fd++
		if !d.ReadOnly {
			// QEMU opens a writable image read-only first, then
			// read-write: the set holds one fd of each mode.
			a = append(a, "-add-fd", fmt.Sprintf("fd=%d,set=%d", fd, set))
			fd++
		}
		a = append(a,
			"-drive", fmt.Sprintf("if=none,id=d%d,node-name=%s,file=/dev/fdset/%d,format=raw,readonly=%s", i, formatNode(i), set, ro),
			"-device", fmt.Sprintf("virtio-blk-device,drive=d%d,serial=%s", i, d.ID),
		)
	}
	if m := cfg.Memory; m != nil {
		share := "off"
		if m.Shared {
			share = "on"
		}
		// QEMU opens mem-path by name, so the memfd is reached through
		// the jail's own /proc (see jail.Spec.Proc).
		a = append(a, "-object", fmt.Sprintf("memory-backend-file,id=mem,size=%dM,mem-path=/proc/self/fd/%d,share=%s", cfg.MemoryMiB, fd, share))
		fd++
	} else {
		a = append(a, "-object", fmt.Sprintf("memory-backend-ram,id=mem,size=%dM", cfg.MemoryMiB))
	}
	if cfg.Incoming != nil {
		// Deferred, so the migration capabilities are set over QMP
		// before the state is read (see StartVM).
		a = append(a, "-incoming", "defer")
	}
	return a
}

// driveFdset is the fdset of drive i on the command line.
func driveFdset(i int) int { return i + 1 }

// formatNode names drive i's raw format node: QEMU would name it
// "#block…", a name blockdev-reopen cannot match (see VM.ReplaceDrive).
func formatNode(i int) string { return fmt.Sprintf("r%d", i) }

// incomingFd is the fd of cfg.Incoming in the VMM (see args).
func incomingFd(cfg *vmm.Config) int {
	fd := fdFirst
	if cfg.Net != nil {
		fd++
	}
	for _, d := range cfg.Drives {
		fd++
		if !d.ReadOnly {
			fd++
		}
	}
	if cfg.Memory != nil {
		fd++
	}
	return fd
}
