package image

import (
	"errors"
	"fmt"
	"time"

	"github.com/cube-platform/cube/errdefs"
)

// Options tune a local store. Start from DefaultOptions.
type Options struct {
	// MaxImageSize caps the bytes of one image as stored: the archive Import
	// reads (per call) and the sum of compressed layers Pull downloads.
	MaxImageSize int64
	// MaxFileSize caps one regular file in an unpacked root filesystem.
	MaxFileSize int64
	// MaxRootFSSize caps the file bytes written while unpacking one image,
	// summed over all layers (a file that a later layer replaces still counts).
	MaxRootFSSize int64
	// PullConcurrency is how many layers Pull downloads at once.
	PullConcurrency int
	// RegistryResponseTimeout bounds the wait for a registry's response
	// headers, so a stalled registry fails a pull whose ctx has no deadline.
	RegistryResponseTimeout time.Duration
}

const gib = int64(1) << 30

// DefaultOptions returns the defaults: 64 GiB images, 8 GiB files, 64 GiB
// root filesystems, 3 parallel layer downloads, 60 s registry response
// timeout.
func DefaultOptions() Options {
	return Options{
		MaxImageSize:            64 * gib,
		MaxFileSize:             8 * gib,
		MaxRootFSSize:           64 * gib,
		PullConcurrency:         3,
		RegistryResponseTimeout: 60 * time.Second,
	}
}

// Validate reports the first field that cannot work.
func (o Options) Validate() error {
	var errs []error
	if o.MaxImageSize <= 0 {
		errs = append(errs, fmt.Errorf("MaxImageSize must be positive, got %d", o.MaxImageSize))
	}
	if o.MaxFileSize <= 0 {
		errs = append(errs, fmt.Errorf("MaxFileSize must be positive, got %d", o.MaxFileSize))
	}
	if o.MaxRootFSSize <= 0 {
		errs = append(errs, fmt.Errorf("MaxRootFSSize must be positive, got %d", o.MaxRootFSSize))
	}
	if o.PullConcurrency <= 0 {
		errs = append(errs, fmt.Errorf("PullConcurrency must be positive, got %d", o.PullConcurrency))
	}
	if o.RegistryResponseTimeout <= 0 {
		errs = append(errs, fmt.Errorf("RegistryResponseTimeout must be positive, got %s", o.RegistryResponseTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("image store options: %w: %w", errdefs.ErrInvalid, err)
	}
	return nil
}

// humanSize renders n bytes for progress lines and error messages.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
