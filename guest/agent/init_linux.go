package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/guest/agentapi"
)

// Main is cmd/cube-agent's main: the agent as the VM's PID 1. It returns
// only to exit.
func Main() int {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "cube-agent: run me as the VM's init (PID 1); the host starts VMs with it")
		return 2
	}
	err := runInit()
	// An init that returns panics the kernel; reboot instead, so that
	// QEMU (-no-reboot) exits and the shim sees why on the console.
	fmt.Fprintln(os.Stderr, "cube-agent: fatal:", err)
	powerOff()
	return 1
}

func runInit() error {
	if err := leaveRootfs(); err != nil {
		return err
	}
	if err := mountBase(); err != nil {
		return err
	}
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel(os.Getenv("cube_agent_log"))}))
	a, err := New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fctx, fcancel := context.WithTimeout(ctx, portWait())
	dev, err := findPort(fctx, PortName)
	fcancel()
	if err != nil {
		return err
	}
	if err := a.prepareNetwork(); err != nil {
		return err
	}
	srv, err := a.NewServer()
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		errc <- a.servePort(ctx, dev, srv, func() {
			// On the console, so a host that snapshots the VM as a
			// template knows the agent serves without ever connecting
			// (a clone's host must be the port's first: see ReadyMarker).
			fmt.Println(agentapi.ReadyMarker)
		})
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", dev, err)
	case <-a.Done():
	}
	// The Shutdown call is answered once the server is idle (its reply
	// written), bounded in case the host stopped reading.
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	srv.Shutdown(sctx)
	scancel()
	powerOff()
	return errors.New("still running after reboot")
}

// portWait bounds the wait for the agent port: 30 s, or the kernel
// command line's cube_agent_port_wait=<duration> (the kernel hands such
// parameters to init as environment variables).
func portWait() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("cube_agent_port_wait")); err == nil && d > 0 && d <= 10*time.Minute {
		return d
	}
	return 30 * time.Second
}

// logLevel is the agent's log level from the kernel command line's
// cube_agent_log=debug (the kernel hands it to init in the environment);
// info otherwise.
func logLevel(s string) slog.Level {
	if s == "debug" {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// leaveRootfs moves the agent's root off the initramfs' rootfs onto a
// bind mount of it. The kernel refuses pivot_root in a namespace whose
// root mount is rootfs (it has no parent), so without this no container
// could pivot into its root; switch_root does the same move.
func leaveRootfs() error {
	const nr = "/.root"
	if err := os.MkdirAll(nr, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("/", nr, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind the initramfs: %w", err)
	}
	if err := unix.Chdir(nr); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the initramfs root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// mountBase mounts what an init must: /proc, /sys, /dev and friends, and
// cgroup v2.
func mountBase() error {
	type m struct {
		src, target, fstype string
		flags               uintptr
		data                string
	}
	nodev := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	for _, x := range []m{
		{"proc", "/proc", "proc", nodev, ""},
		{"sysfs", "/sys", "sysfs", nodev, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "ptmxmode=0666,mode=0620"},
		{"shm", "/dev/shm", "tmpfs", nodev, "mode=1777"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", nodev, ""},
	} {
		if err := os.MkdirAll(x.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(x.src, x.target, x.fstype, x.flags, x.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", x.target, err)
		}
	}
	return nil
}

// powerOff ends the VM: reboot(RESTART), which QEMU's -no-reboot turns
// into an exit (without ACPI, a power-off would not end QEMU).
func powerOff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}
