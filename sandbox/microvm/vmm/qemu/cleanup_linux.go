package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/jail"
)

// Cleanup removes what a VM of cfg left behind when its owner died
// without Stop (a shim killed with SIGKILL takes its QEMU with it through
// PR_SET_PDEATHSIG, but not the files): the QMP and agent sockets, the
// jail's mount point and the VMM cgroup. The new shim calls it before it
// boots a fresh VM. Cleanup of a clean state is a no-op.
func (d *Driver) Cleanup(ctx context.Context, cfg vmm.Config) error {
	var errs []error
	for _, p := range []string{filepath.Join(cfg.StateDir, "qmp.sock"), cfg.AgentSocket, filepath.Join(cfg.StateDir, "jail")} {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("vm %s: remove leftover %s: %w", cfg.ID, p, err))
		}
	}
	if cfg.Jail.CgroupParent != "" {
		cg := &jail.Cgroup{Path: filepath.Join(cfg.Jail.CgroupParent, "vmm")}
		if err := cg.Remove(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
