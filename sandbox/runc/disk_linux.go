package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	sbdisk "github.com/cube-platform/cube/sandbox/disk"
)

// disk is the sandbox's writable layer: an ext4 filesystem in a sparse
// file under StateDir, mounted through a loop device. Every container's
// overlay upper and work directories live on it, so all their writes
// together stop at its size with ENOSPC, and never fill the node's own
// filesystem beyond it. It is the same shape as the writable-layer drive
// of a microVM backend.
//
// The file and its mount outlive the shim (a SIGKILLed shim leaves both,
// and the next one adopts the mount as it adopts the overlays); Destroy
// unmounts it, which releases the loop device (LO_FLAGS_AUTOCLEAR: the
// kernel detaches it once the mount is gone, so a crash never leaks one),
// and removes the file with StateDir.
type disk struct {
	file  string // the block file, <StateDir>/disk.img
	mount string // where it is mounted, <StateDir>/disk
	size  int64  // bytes
	// cache is the node-wide sandbox.Spec.CacheDir ("": none), where an
	// empty filesystem of each size is made once and then copied: a copy
	// of its few hundred KiB of data is cheaper than running mkfs.
	cache string
}

// ensure makes the disk (once: the file is published by rename after mkfs
// succeeded, so a half-made file is never used) and mounts it, unless it is
// mounted already.
func (d disk) ensure(ctx context.Context) error {
	if mounted, err := isMountPoint(d.mount); err != nil || mounted {
		return err
	}
	if err := os.MkdirAll(d.mount, 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(d.file); errors.Is(err, os.ErrNotExist) {
		if err := sbdisk.Make(ctx, d.file, d.size, d.cache); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("writable layer: %w", err)
	}
	return mountLoop(d.file, d.mount)
}

// mountLoop attaches file to a free loop device with LO_FLAGS_AUTOCLEAR
// and mounts its ext4 at target. Our descriptor of the device is closed
// before returning: from then on only the mount holds the device, and its
// unmount (or a failed mount) detaches it.
func mountLoop(file, target string) error {
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("writable layer: %w", err)
	}
	defer f.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("writable layer: %w (is the loop module loaded?)", err)
	}
	defer ctl.Close()
	for range 32 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return fmt.Errorf("writable layer: find a free loop device: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		lf, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("writable layer: %w", err)
		}
		err = attachLoop(int(lf.Fd()), int(f.Fd()), file)
		if errors.Is(err, unix.EBUSY) {
			lf.Close() // another process took it since GET_FREE
			continue
		}
		if err != nil {
			lf.Close()
			return fmt.Errorf("writable layer: attach %s to %s: %w", file, dev, err)
		}
		err = unix.Mount(dev, target, "ext4", unix.MS_NOSUID|unix.MS_NODEV, "noinit_itable")
		lf.Close()
		if err != nil {
			return fmt.Errorf("writable layer: mount %s (%s) at %s: %w", file, dev, target, err)
		}
		return nil
	}
	return errors.New("writable layer: every free loop device was taken by others; retry")
}

// attachLoop binds the backing file to the loop device in one step
// (LOOP_CONFIGURE, Linux 5.8), falling back to LOOP_SET_FD and
// LOOP_SET_STATUS64 on older kernels.
func attachLoop(loopFD, fileFD int, name string) error {
	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}
	copy(info.File_name[:len(info.File_name)-1], name)
	err := unix.IoctlLoopConfigure(loopFD, &unix.LoopConfig{Fd: uint32(fileFD), Info: info})
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return err
	}
	if err := unix.IoctlSetInt(loopFD, unix.LOOP_SET_FD, fileFD); err != nil {
		return err
	}
	if err := unix.IoctlLoopSetStatus64(loopFD, &info); err != nil {
		unix.IoctlSetInt(loopFD, unix.LOOP_CLR_FD, 0)
		return err
	}
	return nil
}
