//go:build !linux

package runc

import (
	"errors"

	"github.com/cube-platform/cube/sandbox"
)

// New fails: runc containers need Linux.
func New(spec sandbox.Spec, opts Options) (sandbox.Sandbox, error) {
	return nil, errors.New("sandbox/runc: runc containers need a linux host")
}
