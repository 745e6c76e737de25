package qemu

import (
	"context"
	"fmt"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// driveSlot is what a VM remembers of one of its drives: the QMP names
// ReplaceDrive needs.
type driveSlot struct {
	id       string // the virtio serial (vmm.Drive.ID)
	readOnly bool
	fdset    int    // the fdset behind its file node now
	format   string // its raw format node's name (formatNode)
	gen      int    // how many times it was replaced
}

// nextFdset is the first fdset id ReplaceDrive hands out: above any a
// command line uses (one per drive, from 1).
const nextFdset = 1000

// ReplaceDrive puts the file d.Path behind the drive whose serial is
// d.ID, while the guest runs: the guest keeps the virtio device (and the
// size it probed), and its reads and writes reach the new file from the
// next request on. The guest must not have the drive open (a mounted
// filesystem would see another disk's blocks under its caches).
//
// It is how a pooled VM, warmed on scratch drives, takes an instance's
// own (docs/microvm-templates.md): QMP add-fd hands the new file over,
// blockdev-add makes a file node of it, blockdev-reopen points the
// drive's raw node at that node (the old file node goes with its last
// reference), and remove-fd closes the old descriptors. d.ReadOnly must
// match the drive's: a read-only device cannot become writable.
func (v *VM) ReplaceDrive(ctx context.Context, d vmm.Drive) error {
	v.driveMu.Lock()
	defer v.driveMu.Unlock()
	var slot *driveSlot
	for i := range v.drives {
		if v.drives[i].id == d.ID {
			slot = &v.drives[i]
		}
	}
	if slot == nil {
		return fmt.Errorf("vm %s: no drive %q: %w", v.id, d.ID, errdefs.ErrNotFound)
	}
	if slot.readOnly != d.ReadOnly {
		return fmt.Errorf("vm %s: drive %q is read-only=%t, not %t: %w", v.id, d.ID, slot.readOnly, d.ReadOnly, errdefs.ErrInvalid)
	}
	files, size, err := driveFiles(d)
	if err != nil {
		return fmt.Errorf("vm %s: %w", v.id, err)
	}
	defer func() {
		for _, f := range files {
			f.Close() // QEMU holds its own copies
		}
	}()
	// QEMU may write a file only up to the RLIMIT_FSIZE StartVM set.
	if !d.ReadOnly && size > v.maxFile {
		return fmt.Errorf("vm %s: drive %q: %s is %d bytes, more than this vmm may write (%d; see vmm.Config.MaxWritableBytes): %w",
			v.id, d.ID, d.Path, size, v.maxFile, errdefs.ErrInvalid)
	}
	v.fdsets++
	set := nextFdset + v.fdsets
	for _, f := range files {
		if _, err := v.qmp.ExecuteFile(ctx, "add-fd", map[string]any{"fdset-id": set}, f); err != nil {
			return fmt.Errorf("vm %s: drive %q: %w", v.id, d.ID, err)
		}
	}
	slot.gen++
	node := fmt.Sprintf("f-%s-%d", d.ID, slot.gen)
	if _, err := v.qmp.Execute(ctx, "blockdev-add", map[string]any{
		"driver": "file", "node-name": node, "filename": fmt.Sprintf("/dev/fdset/%d", set), "read-only": d.ReadOnly,
	}); err != nil {
		v.qmp.Execute(ctx, "remove-fd", map[string]any{"fdset-id": set})
		return fmt.Errorf("vm %s: drive %q: %w", v.id, d.ID, err)
	}
	// Reopen resets every option it is not given: read-only included.
	if _, err := v.qmp.Execute(ctx, "blockdev-reopen", map[string]any{"options": []map[string]any{{
		"node-name": slot.format, "driver": "raw", "file": node, "read-only": d.ReadOnly,
	}}}); err != nil {
		v.qmp.Execute(ctx, "blockdev-del", map[string]any{"node-name": node})
		v.qmp.Execute(ctx, "remove-fd", map[string]any{"fdset-id": set})
		return fmt.Errorf("vm %s: drive %q: %w", v.id, d.ID, err)
	}
	old := slot.fdset
	slot.fdset = set
	// The old file node is gone with its last reference; its fdset's
	// descriptors stay until removed (a scratch file held open).
	if _, err := v.qmp.Execute(ctx, "remove-fd", map[string]any{"fdset-id": old}); err != nil {
		return fmt.Errorf("vm %s: drive %q: release the old file: %w", v.id, d.ID, err)
	}
	return nil
}

// slotsOf are a new VM's drive slots, in cfg's order (see args).
func slotsOf(cfg *vmm.Config) []driveSlot {
	s := make([]driveSlot, len(cfg.Drives))
	for i, d := range cfg.Drives {
		s[i] = driveSlot{id: d.ID, format: formatNode(i), readOnly: d.ReadOnly, fdset: driveFdset(i)}
	}
	return s
}
