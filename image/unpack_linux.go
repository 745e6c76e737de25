//go:build linux

package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// unpacker applies layers, in order, to one root directory. See unpack.go
// for the rules.
type unpacker struct {
	rootfd int
	opts   Options
	log    *slog.Logger
	// chown: we run as root and can give files their owners.
	chown bool
	// total is the file bytes written so far (MaxRootFSSize).
	total int64
	// streamLeft is how many more bytes of uncompressed layer stream the
	// unpacker reads, over all layers: entries whose data is skipped
	// (a symlink or directory "holding" gigabytes) cost decompression
	// too.
	streamLeft int64
}

const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

func newUnpacker(dir string, opts Options, log *slog.Logger) (*unpacker, error) {
	fd, err := unix.Open(dir, dirFlags, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return &unpacker{rootfd: fd, opts: opts, log: log, chown: os.Geteuid() == 0, streamLeft: defaultStreamLimit(opts)}, nil
}

func (u *unpacker) close() error { return unix.Close(u.rootfd) }

// sync flushes the file system holding the rootfs.
func (u *unpacker) sync() error { return unix.Syncfs(u.rootfd) }

// apply unpacks one uncompressed layer tar.
func (u *unpacker) apply(ctx context.Context, r io.Reader) error {
	st := newLayerState()
	tr := tar.NewReader(unpackBound(u, r))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		if err := u.entry(ctx, st, hdr, tr); err != nil {
			return err
		}
	}
	for _, d := range st.opaque {
		if err := u.applyOpaque(st, d); err != nil {
			return err
		}
	}
	u.setDirTimes(st)
	return nil
}

func (u *unpacker) entry(ctx context.Context, st *layerState, hdr *tar.Header, r io.Reader) error {
	p, err := entryPath(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := path.Dir(p), path.Base(p)
	if p == "." {
		if hdr.Typeflag != tar.TypeDir {
			return unsafeLayer("entry %q would replace the root directory", hdr.Name)
		}
		if err := u.setMeta(u.rootfd, hdr); err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
		return nil
	}
	if wh, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		return u.whiteout(st, hdr.Name, dir, wh)
	}
	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock:
		kind := "character"
		if hdr.Typeflag == tar.TypeBlock {
			kind = "block"
		}
		return unsafeLayer("entry %q is a %s device node (%d:%d); images may not create devices", hdr.Name, kind, hdr.Devmajor, hdr.Devminor)
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeDir, tar.TypeReg, tar.TypeRegA, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	default:
		return fmt.Errorf("layer entry %q: unsupported tar entry type %q", hdr.Name, string(hdr.Typeflag))
	}
	if err := u.checkSize(hdr); err != nil {
		return err
	}
	parent, err := u.openDir(hdr.Name, dir, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = u.mkdir(parent, base, hdr)
		st.dirs = append(st.dirs, dirTimes{p, accessTime(hdr), hdr.ModTime})
	case tar.TypeReg, tar.TypeRegA:
		err = u.writeFile(ctx, parent, base, hdr, r)
	case tar.TypeSymlink:
		err = u.symlink(parent, base, hdr)
	case tar.TypeLink:
		err = u.hardlink(parent, p, hdr)
	case tar.TypeFifo:
		err = u.mkfifo(parent, base, hdr)
	}
	if err != nil {
		if errors.Is(err, ErrUnsafeLayer) || ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
	}
	st.touch(p)
	return nil
}

// openDir opens the directory rel (relative to the root) without following
// any symlink and returns its fd. With create, missing directories are made
// (0755, root-owned). entry names the layer entry for error messages.
// Without create, a missing directory yields an error matching
// fs.ErrNotExist.
func (u *unpacker) openDir(entry, rel string, create bool) (int, error) {
	fd, err := unix.FcntlInt(uintptr(u.rootfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if rel == "." {
		return fd, nil
	}
	walked := ""
	for _, c := range strings.Split(rel, "/") {
		walked = path.Join(walked, c)
		next, err := unix.Openat(fd, c, dirFlags, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, c, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				next, err = unix.Openat(fd, c, dirFlags, 0)
			}
		}
		if err != nil {
			err = u.dirError(fd, c, entry, walked, err)
			unix.Close(fd)
			return -1, err
		}
		unix.Close(fd)
		fd = next
	}
	return fd, nil
}

// dirError explains why component c (at walked) of entry's path could not
// be opened as a directory from dirfd.
func (u *unpacker) dirError(dirfd int, c, entry, walked string, err error) error {
	if errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "open", Path: walked, Err: fs.ErrNotExist}
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		var st unix.Stat_t
		if unix.Fstatat(dirfd, c, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return unsafeLayer("entry %q: %q is a symbolic link; refusing to write through it", entry, walked)
		}
		return fmt.Errorf("layer entry %q: %q is not a directory", entry, walked)
	}
	return fmt.Errorf("layer entry %q: open %q: %w", entry, walked, err)
}

// whiteout handles ".wh.NAME" and ".wh..wh..opq" entries in dir.
func (u *unpacker) whiteout(st *layerState, entry, dir, name string) error {
	if name == whiteoutOpaque[len(whiteoutPrefix):] {
		fd, err := u.openDir(entry, dir, false)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		unix.Close(fd)
		st.opaque = append(st.opaque, dir)
		return nil
	}
	if name == "" || name == "." || name == ".." {
		return unsafeLayer("whiteout entry %q names no file", entry)
	}
	target := path.Join(dir, name)
	if st.touched[target] {
		return nil // whiteouts hide lower layers, not this one's files
	}
	fd, err := u.openDir(entry, dir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := removeAllAt(fd, name); err != nil {
		return fmt.Errorf("layer entry %q: remove %q: %w", entry, target, err)
	}
	return nil
}

// applyOpaque deletes what lower layers left under the opaque directory d.
func (u *unpacker) applyOpaque(st *layerState, d string) error {
	entry := path.Join(d, whiteoutOpaque)
	fd, err := u.openDir(entry, d, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := prune(fd, d, st.touched); err != nil {
		return fmt.Errorf("layer entry %q: %w", entry, err)
	}
	return nil
}

// prune removes every child of the directory fd (at rel) that is not in
// keep, and recurses into kept directories.
func prune(fd int, rel string, keep map[string]bool) error {
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		p := path.Join(rel, n)
		if !keep[p] {
			if err := removeAllAt(fd, n); err != nil {
				return err
			}
			continue
		}
		child, err := unix.Openat(fd, n, dirFlags, 0)
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			continue // a kept file or symlink
		}
		if err != nil {
			return err
		}
		err = prune(child, p, keep)
		unix.Close(child)
		if err != nil {
			return err
		}
	}
	return nil
}

// setDirTimes sets the times of the layer's directories, now that their
// contents are written. Failures only cost accuracy, so they are logged.
func (u *unpacker) setDirTimes(st *layerState) {
	for _, d := range slices.Backward(st.dirs) {
		fd, err := u.openDir(d.path, path.Dir(d.path), false)
		if err == nil {
			err = setTimes(fd, path.Base(d.path), d.atime, d.mtime)
			unix.Close(fd)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOENT) {
			u.log.Debug("cannot set directory times", "path", d.path, "err", err)
		}
	}
}

// unpackBound counts r against u's stream bound.
func unpackBound(u *unpacker, r io.Reader) io.Reader { return &streamBound{r: r, left: &u.streamLeft} }
