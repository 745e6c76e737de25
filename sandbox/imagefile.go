package sandbox

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/cube-platform/cube/errdefs"
)

// MaxImageFileSize bounds what ReadImageFile reads: /etc/passwd and
// /etc/group of a real image are a few KiB.
const MaxImageFileSize = 1 << 20

// ReadImageFile reads the file at name (a slash path, e.g. "/etc/passwd")
// inside the unpacked image at rootfs, as the privileged code that builds
// a container must: the image is hostile. It never resolves a path outside
// rootfs (os.Root refuses a link that climbs out, and any absolute link),
// never blocks (a FIFO or device is refused, and opened O_NONBLOCK in case
// it was swapped in), and reads at most MaxImageFileSize bytes.
//
// A missing file is an error that matches fs.ErrNotExist, so that callers
// can fall back; every other refusal is errdefs.ErrInvalid and names the
// file in the image.
func ReadImageFile(rootfs, name string) ([]byte, error) {
	rel := strings.TrimLeft(name, "/")
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, fmt.Errorf("open image rootfs: %w", err)
	}
	defer root.Close()
	fi, err := root.Stat(rel)
	if err != nil {
		return nil, imageFileError(name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("image file %s is a %s, not a regular file; fix the image: %w", name, kind(fi.Mode()), errdefs.ErrInvalid)
	}
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, imageFileError(name, err)
	}
	defer f.Close()
	// The image is read-only, but check the opened file itself anyway.
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("image file %s is not a regular file; fix the image: %w", name, errdefs.ErrInvalid)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxImageFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read image file %s: %w", name, err)
	}
	if len(b) > MaxImageFileSize {
		return nil, fmt.Errorf("image file %s is larger than %d bytes; fix the image: %w", name, MaxImageFileSize, errdefs.ErrInvalid)
	}
	return b, nil
}

func imageFileError(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("image file %s: %w", name, fs.ErrNotExist)
	}
	// os.Root's refusal of a link leaving the root, ELOOP, ENOTDIR...
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("image file %s cannot be read safely (%v; a link may not leave the image or be absolute): fix the image: %w", name, err, errdefs.ErrInvalid)
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeSocket != 0:
		return "socket"
	default:
		return "special file"
	}
}
