package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
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

// mkfsTimeout bounds mkfs.ext4 (it takes tens of ms on a sparse file).
const mkfsTimeout = 60 * time.Second

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
		if err := d.make(ctx); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("writable layer: %w", err)
	}
	return mountLoop(d.file, d.mount)
}

// make creates the disk file: a sparse copy of the cached empty
// filesystem of this size, made first if need be, or a fresh mkfs when
// there is no cache or it fails.
func (d disk) make(ctx context.Context) error {
	if d.cache != "" {
		tpl, cerr := cachedDisk(ctx, d.cache, d.size)
		if cerr == nil {
			cerr = copySparse(tpl, d.file)
		}
		if cerr == nil {
			return nil
		}
		// The cache is an optimisation: never fail a sandbox over it.
		if err := makeDisk(ctx, d.file, d.size); err != nil {
			return fmt.Errorf("%w (after the cached filesystem failed: %v)", err, cerr)
		}
		return nil
	}
	return makeDisk(ctx, d.file, d.size)
}

// cachedDisk returns the cached empty filesystem of size bytes, making it
// if it is not there. Sandboxes made from one copy share its UUID and
// directory hash seed, which ext4 does not mind; none of them can read
// either, as no tenant ever gets the block device.
func cachedDisk(ctx context.Context, dir string, size int64) (string, error) {
	path := filepath.Join(dir, fmt.Sprintf("ext4-%d-v1.img", size))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// Shims making it at once each write their own temp file and rename
	// it into place: the result is the same.
	return path, makeDisk(ctx, path, size)
}

// copySparse copies src to dst, data extents only (SEEK_DATA/SEEK_HOLE
// and copy_file_range), through a temp file renamed into place.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.CreateTemp(filepath.Dir(dst), ".disk-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name()) // a no-op once renamed
	err = copyExtents(in, out, fi.Size())
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy the cached filesystem %s: %w", src, err)
	}
	return os.Rename(out.Name(), dst)
}

func copyExtents(in, out *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	src, dst := int(in.Fd()), int(out.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			return err
		}
		hole, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		roff, woff := data, data
		for roff < hole {
			n, err := unix.CopyFileRange(src, &roff, dst, &woff, int(hole-roff), 0)
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("copy_file_range: unexpected end at %d", roff)
			}
		}
		off = hole
	}
	return nil
}

// makeDisk writes an empty ext4 filesystem of size bytes to a sparse file.
// Options, for start latency: lazy inode table and journal init, with
// noinit_itable at mount (so neither mkfs nor the kernel zeroes tables:
// that would take time and allocate the sparse file; a new sparse file
// reads as zeroes anyway), no discard, and no blocks reserved for root
// (the container's root is the tenant). The journal stays: measured on a
// 1 GiB file, mkfs takes 7 ms with it and 5 ms without, and it keeps the
// layer consistent across a host crash.
func makeDisk(ctx context.Context, file string, size int64) error {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("writable layer: mkfs.ext4 not found: %w (install e2fsprogs)", err)
	}
	f, err := os.CreateTemp(filepath.Dir(file), ".disk-*.tmp")
	if err != nil {
		return fmt.Errorf("writable layer: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writable layer: size %s: %w", tmp, err)
	}
	ctx, cancel := context.WithTimeout(ctx, mkfsTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("writable layer: mkfs.ext4: %w: %s", err, out)
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("writable layer: %w", err)
	}
	return syncFile(filepath.Dir(file))
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
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
