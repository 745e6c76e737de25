//go:build linux

package image

import (
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// ReadFileInRoot reads the file name (relative to root, or absolute as seen
// from inside it) out of the directory root, for reading files out of an
// image or an unpacked root filesystem (/etc/passwd, say), which are
// untrusted:
//
//   - the path is resolved with openat2 RESOLVE_IN_ROOT: "..", absolute
//     symlinks and relative ones all stay inside root, and magic links
//     (/proc/self/...) are refused;
//   - only a regular file is read: it is opened O_NONBLOCK, so a FIFO
//     never blocks the open, and anything not regular fails ErrNotRegular;
//   - at most max bytes are read: a larger file fails ErrFileTooLarge.
//
// A missing file fails with an error matching fs.ErrNotExist.
func ReadFileInRoot(root, name string, max int64) ([]byte, error) {
	dirfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dirfd)
	fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (%s)", name, ErrNotRegular, fi.Mode().Type())
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s: %w (%d bytes, at most %d)", name, ErrFileTooLarge, fi.Size(), max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w (at most %d bytes)", name, ErrFileTooLarge, max)
	}
	return b, nil
}
