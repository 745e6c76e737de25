package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A clone restored from a template runs the template's kernel, whose
// virtio_blk probed the template's placeholder drives: it cached their
// capacity (0 or a few bytes) and scanned their partitions. The clone's
// QEMU serves the instance's own files behind the same virtio devices, so
// before mounting anything the agent unbinds and binds virtio_blk for
// each: the probe reads the real capacity and partitions and makes a new
// gendisk, with a new block device inode (TestQEMUClone: without it the
// clone cannot mount its drives). No page of a placeholder survives
// either way: the kernel drops a block device's page cache at its last
// close (blkdev_put, kill_bdev), and nothing holds them open before Setup.

// virtioBus is the kernel's virtio bus in sysfs.
const virtioBus = "/sys/bus/virtio"

// reprobeTimeout bounds the re-probe of all disks (TCG emulates every
// instruction of it).
const reprobeTimeout = 10 * time.Second

// virtioDisk is a virtio device ("virtio3") and its disk ("vdb").
type virtioDisk struct{ dev, disk string }

// isVirtioDev reports whether name is a virtio device's ("virtio" and a
// number): the driver's directory also holds bind, unbind, uevent...
func isVirtioDev(name string) bool {
	n, ok := strings.CutPrefix(name, "virtio")
	_, err := strconv.ParseUint(n, 10, 32)
	return ok && err == nil && !strings.HasPrefix(n, "+")
}

// diskOf is the disk of a virtio device dir ("" while it has none).
func diskOf(devDir string) string {
	entries, err := os.ReadDir(filepath.Join(devDir, "block"))
	if err != nil || len(entries) != 1 {
		return ""
	}
	return entries[0].Name()
}

// boundVirtioDisks lists the virtio devices virtio_blk drives that have a
// disk, under bus (virtioBus).
func boundVirtioDisks(bus string) ([]virtioDisk, error) {
	entries, err := os.ReadDir(filepath.Join(bus, "drivers", "virtio_blk"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no virtio_blk, no disk
	}
	if err != nil {
		return nil, err
	}
	var out []virtioDisk
	for _, e := range entries {
		if !isVirtioDev(e.Name()) {
			continue
		}
		if disk := diskOf(filepath.Join(bus, "devices", e.Name())); disk != "" {
			out = append(out, virtioDisk{e.Name(), disk})
		}
	}
	return out, nil
}

// reprobeDisks unbinds and binds virtio_blk for every virtio disk under
// bus, all at once (a disk may come back as another vdX: drives are found
// by serial; measured under TCG, 2 disks took 104-132 ms against
// 125-164 ms one after the other), and waits until each disk is back in
// sysfs and its node in devDir. It returns what each took, for the debug
// log (logged after, not between: a console line costs milliseconds
// under TCG).
func reprobeDisks(ctx context.Context, bus, devDir string) ([]reprobed, error) {
	disks, err := boundVirtioDisks(bus)
	if err != nil {
		return nil, fmt.Errorf("list virtio disks: %w", err)
	}
	out := make([]reprobed, len(disks))
	errs := make([]error, len(disks))
	var wg sync.WaitGroup
	for i, d := range disks {
		wg.Go(func() { out[i], errs[i] = reprobeDisk(ctx, bus, devDir, d) })
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// reprobeDisk unbinds and binds virtio_blk for one disk and waits for it.
func reprobeDisk(ctx context.Context, bus, devDir string, d virtioDisk) (reprobed, error) {
	drv := filepath.Join(bus, "drivers", "virtio_blk")
	t0 := time.Now()
	if err := os.WriteFile(filepath.Join(drv, "unbind"), []byte(d.dev), 0); err != nil {
		return reprobed{}, fmt.Errorf("unbind %s (%s) from virtio_blk: %w", d.dev, d.disk, err)
	}
	t1 := time.Now()
	if err := os.WriteFile(filepath.Join(drv, "bind"), []byte(d.dev), 0); err != nil {
		return reprobed{}, fmt.Errorf("bind %s to virtio_blk: %w", d.dev, err)
	}
	t2 := time.Now()
	disk, err := waitDisk(ctx, filepath.Join(bus, "devices", d.dev), devDir)
	if err != nil {
		return reprobed{}, fmt.Errorf("re-probe %s (was %s): %w", d.dev, d.disk, err)
	}
	return reprobed{dev: d.dev, was: d.disk, is: disk, unbind: t1.Sub(t0), bind: t2.Sub(t1), wait: time.Since(t2)}, nil
}

// reprobed is one disk's re-probe: its names before and after, and what
// the unbind, the bind and the wait for its node took.
type reprobed struct {
	dev, was, is       string
	unbind, bind, wait time.Duration
}

func (r reprobed) String() string {
	return fmt.Sprintf("%s:%s->%s(unbind %v bind %v wait %v)", r.dev, r.was, r.is, r.unbind, r.bind, r.wait)
}

// waitDisk waits until the virtio device at devDir has a disk whose node
// is in nodes (devtmpfs), or ctx ends. The bind above probes
// synchronously, so the first look finds it; the wait is for a kernel
// that probes asynchronously.
func waitDisk(ctx context.Context, devDir, nodes string) (string, error) {
	for {
		if disk := diskOf(devDir); disk != "" {
			if _, err := os.Stat(filepath.Join(nodes, disk)); err == nil {
				return disk, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("its disk did not come back: %w", ctx.Err())
		case <-time.After(100 * time.Microsecond):
		}
	}
}
