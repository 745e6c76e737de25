package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cube-platform/cube/shim"
)

// destroyLeftoverSandbox removes what a shim that died left of the
// instance in dir: its containers outlive it, still running, with their
// overlays mounted and their cgroups. A shim started again on the saved
// config removes them (building its sandbox deletes the containers a
// previous shim left, and none of them runs again: it awaits a start that
// never comes), and is shut down at once, which destroys the sandbox: the
// same path as any teardown. No saved config means no shim got as far as
// making anything, or one shut down cleanly (it removes its config last).
func (a *Agent) destroyLeftoverSandbox(ctx context.Context, dir string) error {
	cfg, err := shim.LoadConfig(shim.FilesFor(shimSocket(dir)).Config)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	cfg.AwaitStart = true
	a.log.Info("removing the containers a dead shim left", "uid", cfg.Sandbox.ID)
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := shim.Launch(lctx, a.cfg.ShimCommand, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("start a shim to remove what a dead one left: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := c.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down the shim that removes what a dead one left: %w", err)
	}
	return nil
}
