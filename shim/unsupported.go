//go:build !linux

package shim

import (
	"context"
	"errors"
)

var errNotLinux = errors.New("shim: the shim runs runc containers and needs a linux host")

// Main fails: the shim needs Linux.
func Main(ctx context.Context, configPath string) error { return errNotLinux }

// Launch fails: the shim needs Linux.
func Launch(ctx context.Context, argv []string, cfg Config) (*Client, error) { return nil, errNotLinux }
