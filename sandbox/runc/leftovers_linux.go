package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// removeLeftovers deletes the runc containers a previous process left in
// this sandbox's runc root: a shim killed with SIGKILL cannot stop its
// containers, and their stdio died with it, so they cannot be adopted.
// They are killed and deleted so that the containers can be created again
// under their ids; their overlays, and so their writable layers, stay, as
// they do across a restart by policy.
func (s *runcSandbox) removeLeftovers(ctx context.Context) error {
	var errs []error
	for _, name := range s.order {
		c := s.byName[name]
		if _, err := os.Stat(filepath.Join(s.runc.root, c.id)); errors.Is(err, os.ErrNotExist) {
			continue
		}
		s.log.Warn("removing a container left by a previous shim", "container", name)
		if err := s.runc.run(ctx, runcStdio{}, "delete", "--force", c.id); err != nil && !notExist(err) {
			errs = append(errs, fmt.Errorf("remove container %s left by a previous shim: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
