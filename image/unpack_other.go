//go:build !linux

package image

import (
	"context"
	"errors"
	"io"
	"log/slog"
)

// unpacker is Linux-only: safe unpacking relies on openat(2) semantics.
type unpacker struct {
	opts       Options
	total      int64
	streamLeft int64
}

var errUnpackUnsupported = errors.New("unpacking image layers is only supported on linux")

func newUnpacker(dir string, opts Options, log *slog.Logger) (*unpacker, error) {
	return nil, errUnpackUnsupported
}

func (u *unpacker) close() error                                 { return nil }
func (u *unpacker) sync() error                                  { return nil }
func (u *unpacker) apply(ctx context.Context, r io.Reader) error { return errUnpackUnsupported }

func unpackBound(u *unpacker, r io.Reader) io.Reader { return r }
