package vmm

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"syscall"
	"time"

	"github.com/cube-platform/cube/errdefs"
)

// Accel is the CPU accelerator a VMM runs the guest on.
type Accel string

const (
	// AccelTCG is QEMU's software emulation: slow, but works everywhere.
	AccelTCG Accel = "tcg"
	// AccelKVM is hardware virtualization through /dev/kvm.
	AccelKVM Accel = "kvm"
)

// Drive is one virtio-blk device. The guest finds it by its serial
// (/sys/block/vdX/serial), never by its order.
type Drive struct {
	// ID is the drive's virtio serial (at most 20 bytes, [A-Za-z0-9_-]).
	ID string
	// Path is the host file backing the drive; the driver opens it before
	// the VMM drops its privileges, so the file may be root's.
	Path string
	// ReadOnly drives are opened O_RDONLY and shown read-only to the guest.
	ReadOnly bool
}

// NIC is the VM's one network card: a tap device inside the instance's
// network namespace (see sandbox/microvm/tap).
type NIC struct {
	// NetNS is the path of the network namespace holding the tap
	// (e.g. /run/netns/x); empty: the caller's own namespace.
	NetNS string
	// Isolated puts the tap in a namespace of its own instead (see
	// tap.OpenIsolated): a card that reaches nothing.
	Isolated bool
	// Tap is the tap device's name inside NetNS.
	Tap string
	// File, if set, is an open tap queue (tap.Open, tap.OpenIsolated)
	// the VMM gets a copy of, instead of the driver opening Tap: a caller
	// that must move the tap later (tap.Move) keeps its own.
	File *os.File
	// MAC the guest's card uses (the CNI interface's MAC, so traffic the
	// tc redirect hands over is addressed to the guest).
	MAC net.HardwareAddr
}

// Memory backs the guest's RAM with a file instead of the VMM's anonymous
// memory: a template's, or a clone of it (see docs/microvm-templates.md).
type Memory struct {
	// File is the RAM, MemoryMiB long (or empty, when Shared: the VMM
	// sizes it). A memfd: the jailed VMM opens it as /proc/self/fd/N.
	File *os.File
	// Shared maps File MAP_SHARED, so the guest's writes land in it (a
	// template being built: its RAM stays in the file after a snapshot).
	// Otherwise File is mapped privately, copy-on-write: every clone of
	// a template shares the pages it has not written. Give a clone a
	// sealed memfd (F_SEAL_WRITE), so not even a compromised VMM can
	// write to the template through its own descriptor.
	Shared bool
}

// JailConfig is how the VMM process is confined (see vmm/jail).
type JailConfig struct {
	// UID and GID the VMM runs as: unprivileged, and used by no other VM
	// (jail.AllocateID hands them out). Both must be non-zero.
	UID, GID int
	// CgroupParent is the sandbox's cgroup path (e.g. "/cube/<id>"); the
	// VMM gets its own cgroup "<CgroupParent>/vmm" below it, so its memory
	// counts against the sandbox. Empty: no cgroup (tests only).
	CgroupParent string
	// MemoryOverheadMiB is added to the guest memory for the VMM cgroup's
	// memory limit (QEMU's own code, TCG translation cache, device
	// buffers). 0: DefaultMemoryOverheadMiB.
	MemoryOverheadMiB int
}

// DefaultMemoryOverheadMiB is the VMM's memory allowance above the guest
// memory when JailConfig.MemoryOverheadMiB is 0.
const DefaultMemoryOverheadMiB = 160

// Config describes one VM. Paths are host paths.
type Config struct {
	// ID names the VM (the sandbox ID): letters, digits, '-', '_', '.'.
	ID string
	// Kernel is the uncompressed guest vmlinux (PVH entry).
	Kernel string
	// Initrd is the initramfs whose /init is the guest agent (may be empty).
	Initrd string
	// Cmdline is the kernel command line. It carries nothing secret.
	Cmdline string
	// VCPUs and MemoryMiB size the guest.
	VCPUs     int
	MemoryMiB int
	// Drives are the guest's block devices.
	Drives []Drive
	// MaxWritableBytes is the largest writable drive file the VMM may
	// write to, now or once a drive is replaced (qemu.VM.ReplaceDrive):
	// its RLIMIT_FSIZE is set at start and cannot be raised later by a
	// host without CAP_SYS_RESOURCE. 0: the largest of Drives.
	MaxWritableBytes int64
	// Net is the guest's network card; nil: no network.
	Net *NIC
	// AgentSocket is the host unix socket path of the guest agent's
	// channel (a virtio-serial port named cube.agent for QEMU); the driver
	// creates it, the backend connects to it once the VM runs.
	AgentSocket string
	// ConsoleLog receives the guest's serial console, capped at
	// MaxConsoleLogBytes. Empty: the console is only kept in memory.
	ConsoleLog string
	// Accel picks the accelerator; "" means AccelTCG.
	Accel Accel
	// StateDir is private to the driver (control sockets, the jail's
	// mount point). It must exist; the driver leaves it empty on Stop.
	StateDir string
	// Jail confines the VMM process.
	Jail JailConfig
	// Memory, if set, is the file the guest's RAM lives in.
	Memory *Memory
	// Incoming, if set, restores a snapshot (see VM.Save) instead of
	// booting Kernel: the VMM reads the guest's state from this file.
	// Everything else in the Config must describe the same machine as
	// the one saved (devices, sizes, kernel), and when the snapshot left
	// the RAM in a shared memory file, Memory must be that file.
	Incoming *os.File
}

// MaxConsoleLogBytes caps what a guest can write to its console log.
const MaxConsoleLogBytes = 4 << 20

var (
	idRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	serialRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,20}$`)
)

// Validate reports the first thing wrong with c, as errdefs.ErrInvalid.
func (c *Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("vm %q: %s: %w", c.ID, fmt.Sprintf(format, a...), errdefs.ErrInvalid)
	}
	switch {
	case !idRE.MatchString(c.ID):
		return bad("id must be letters, digits, '-', '_' or '.'")
	case c.Kernel == "":
		return bad("no kernel given")
	case c.VCPUs < 1 || c.VCPUs > 64:
		return bad("vcpus %d out of range 1..64", c.VCPUs)
	case c.MemoryMiB < 16 || c.MemoryMiB > 1<<20:
		return bad("memory %d MiB out of range 16..1048576", c.MemoryMiB)
	case c.StateDir == "":
		return bad("no state dir given")
	case c.AgentSocket == "":
		return bad("no agent socket path given")
	case c.Accel != "" && c.Accel != AccelTCG && c.Accel != AccelKVM:
		return bad("accel %q is neither tcg nor kvm", c.Accel)
	case c.Jail.UID <= 0 || c.Jail.GID <= 0:
		return bad("jail uid/gid must be non-zero (use jail.AllocateID)")
	}
	seen := map[string]bool{}
	for _, d := range c.Drives {
		if !serialRE.MatchString(d.ID) {
			return bad("drive id %q must be 1-20 of [A-Za-z0-9_-]", d.ID)
		}
		if seen[d.ID] {
			return bad("drive id %q given twice", d.ID)
		}
		seen[d.ID] = true
		if d.Path == "" {
			return bad("drive %q has no path", d.ID)
		}
	}
	if c.Memory != nil && c.Memory.File == nil {
		return bad("memory backend without a file")
	}
	if n := c.Net; n != nil {
		if n.Tap == "" || len(n.Tap) > 15 {
			return bad("tap name %q must be 1-15 bytes", n.Tap)
		}
		if len(n.MAC) != 6 || n.MAC[0]&1 != 0 {
			return bad("mac %q is not a unicast ethernet address", n.MAC)
		}
	}
	return nil
}

// Driver starts VMs. Implementations are safe for concurrent use.
type Driver interface {
	// Start boots one VM and returns once the VMM runs the guest (not once
	// the guest has booted: the caller waits for its agent with its own
	// boot deadline and calls Stop when it passes). A failed Start leaves
	// nothing behind: no process, socket, mount, cgroup or file.
	Start(ctx context.Context, cfg Config) (VM, error)
}

// VM is one running VMM process.
type VM interface {
	// Pid of the VMM process (for /proc inspection and re-adoption).
	Pid() int
	// Wait delivers one ExitInfo when the VMM process has ended and its
	// resources are released; the channel is then closed.
	Wait() <-chan ExitInfo
	// Stop ends the VM (politely first, then SIGKILL once ctx is done or a
	// short grace passes) and releases everything Start made. It is
	// idempotent and returns once the process is gone.
	Stop(ctx context.Context) error
}

// ExitReason says how a VM ended.
type ExitReason string

const (
	// ExitStopped: the host asked (Stop).
	ExitStopped ExitReason = "Stopped"
	// ExitPoweroff: the guest shut itself down or rebooted (with
	// -no-reboot a reboot ends the VMM); its agent powers off this way.
	ExitPoweroff ExitReason = "Poweroff"
	// ExitGuestPanic: the guest kernel panicked.
	ExitGuestPanic ExitReason = "GuestPanic"
	// ExitVMMExited: the VMM process died without the guest asking
	// (killed, crashed, or an error of its own).
	ExitVMMExited ExitReason = "VMMExited"
)

// ExitInfo describes the end of a VM.
type ExitInfo struct {
	Reason ExitReason
	// Code is the VMM's exit status, or -1 when a signal ended it.
	Code int
	// Signal that ended the VMM process, if any.
	Signal syscall.Signal
	// Detail is a short human-readable account (the panic message, the
	// VMM's last error line); bounded, and guest-controlled for panics.
	Detail string
}

func (e ExitInfo) String() string {
	s := string(e.Reason)
	if e.Signal != 0 {
		s += fmt.Sprintf(" (signal %s)", e.Signal)
	} else {
		s += fmt.Sprintf(" (exit %d)", e.Code)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// DefaultBootTimeout is how long a caller waits for a guest's agent
// before it gives up on the VM (Stop, then report that it never booted):
// 60 s under TCG, which boots in about a second when the node is idle and
// far slower when it is not, and 10 s under KVM.
func DefaultBootTimeout(a Accel) time.Duration {
	if a == AccelKVM {
		return 10 * time.Second
	}
	return 60 * time.Second
}
