//go:build !linux

package network

import (
	"errors"
	"log/slog"
)

// NewCNI needs Linux network namespaces and the CNI plugins.
func NewCNI(cfg Config, log *slog.Logger) (Manager, error) {
	return nil, errors.New("cni networking is only supported on linux")
}
