//go:build !linux

package kernel

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/cube-platform/cube/errdefs"
)

func (b *Builder) lock(ctx context.Context, path string) (func(), error) {
	return nil, fmt.Errorf("kernel build: only on linux: %w", errdefs.ErrUnavailable)
}

func setProcessGroup(cmd *exec.Cmd) {}
