//go:build linux

package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The operations below act on one name inside an already opened parent
// directory (parent is an fd), never on a path: nothing here can be
// redirected by a symlink.

// mkdir makes base a directory, keeping an existing one (and its contents)
// and replacing anything else.
func (u *unpacker) mkdir(parent int, base string, hdr *tar.Header) error {
	var st unix.Stat_t
	err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := removeAllAt(parent, base); err != nil {
			return err
		}
		err = unix.ENOENT
	}
	if errors.Is(err, unix.ENOENT) {
		err = unix.Mkdirat(parent, base, 0o700)
	}
	if err != nil {
		return err
	}
	fd, err := unix.Openat(parent, base, dirFlags, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := u.setMeta(fd, hdr); err != nil {
		return err
	}
	u.setXattrs(fd, hdr)
	return nil
}

// writeFile replaces base with a regular file holding the entry's content.
func (u *unpacker) writeFile(ctx context.Context, parent int, base string, hdr *tar.Header, r io.Reader) error {
	if err := removeAllAt(parent, base); err != nil {
		return err
	}
	fd, err := unix.Openat(parent, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), base)
	defer f.Close()
	n, err := io.Copy(f, ctxReader{ctx, io.LimitReader(r, hdr.Size)})
	if err != nil {
		return err
	}
	if n != hdr.Size {
		return fmt.Errorf("layer is truncated: got %d of %d bytes", n, hdr.Size)
	}
	if err := u.setMeta(fd, hdr); err != nil {
		return err
	}
	u.setXattrs(fd, hdr)
	if err := f.Close(); err != nil {
		return err
	}
	return setTimes(parent, base, accessTime(hdr), hdr.ModTime)
}

// symlink replaces base with a symlink, stored verbatim.
func (u *unpacker) symlink(parent int, base string, hdr *tar.Header) error {
	if hdr.Linkname == "" {
		return fmt.Errorf("symlink with an empty target")
	}
	if err := removeAllAt(parent, base); err != nil {
		return err
	}
	if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
		return err
	}
	if u.chown {
		if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	return setTimes(parent, base, accessTime(hdr), hdr.ModTime)
}

// hardlink replaces the entry at p (in parent) with a hard link to another
// file of the rootfs.
func (u *unpacker) hardlink(parent int, p string, hdr *tar.Header) error {
	target, err := entryPath(hdr.Linkname)
	if err != nil || target == "." {
		return unsafeLayer("entry %q is a hard link to %q, outside the root filesystem", hdr.Name, hdr.Linkname)
	}
	if target == p {
		return nil
	}
	src, err := u.openDir(hdr.Name, path.Dir(target), false)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("hard link target %q does not exist", hdr.Linkname)
	}
	if err != nil {
		return err
	}
	defer unix.Close(src)
	srcBase := path.Base(target)
	var st unix.Stat_t
	if err := unix.Fstatat(src, srcBase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("hard link target %q is a directory", hdr.Linkname)
	}
	base := path.Base(p)
	if err := removeAllAt(parent, base); err != nil {
		return err
	}
	// Flags 0: a link to a symlink links the symlink itself.
	return unix.Linkat(src, srcBase, parent, base, 0)
}

// mkfifo replaces base with a FIFO.
func (u *unpacker) mkfifo(parent int, base string, hdr *tar.Header) error {
	if err := removeAllAt(parent, base); err != nil {
		return err
	}
	if err := unix.Mknodat(parent, base, unix.S_IFIFO|0o600, 0); err != nil {
		return err
	}
	if u.chown {
		if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	// Opening a FIFO to fchmod it would block; base is the FIFO just made
	// in a directory only we write, so the path-based call is safe.
	if err := unix.Fchmodat(parent, base, uint32(hdr.Mode&0o7777), 0); err != nil {
		return err
	}
	return setTimes(parent, base, accessTime(hdr), hdr.ModTime)
}

// setMeta gives the open file or directory fd the entry's owner and mode.
// The mode is set after the owner because chown clears setuid/setgid.
func (u *unpacker) setMeta(fd int, hdr *tar.Header) error {
	if u.chown {
		if hdr.Uid < 0 || hdr.Gid < 0 {
			return fmt.Errorf("negative owner %d:%d", hdr.Uid, hdr.Gid)
		}
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	return unix.Fchmod(fd, uint32(hdr.Mode&0o7777))
}

// setXattrs applies the kept extended attributes; failures (a file system
// without user xattrs, say) are logged, not fatal.
func (u *unpacker) setXattrs(fd int, hdr *tar.Header) {
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || !keepXattr(name) {
			continue
		}
		if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil {
			u.log.Debug("cannot set xattr", "entry", hdr.Name, "xattr", name, "err", err)
		}
	}
}

// setTimes sets base's times without following a symlink.
func setTimes(parent int, base string, atime, mtime time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	return unix.UtimesNanoAt(parent, base, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// removeAllAt removes name (a file, symlink or whole tree) from the
// directory dirfd without following symlinks. A missing name is fine.
func removeAllAt(dirfd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(dirfd, name, 0)
	}
	fd, err := unix.Openat(dirfd, name, dirFlags, 0)
	if err != nil {
		return err
	}
	names, err := readDirNames(fd)
	for _, n := range names {
		if err != nil {
			break
		}
		err = removeAllAt(fd, n)
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// readDirNames lists the directory fd. It reads through a fresh open of
// "." (not a dup, which would share and move fd's read offset).
func readDirNames(fd int) ([]string, error) {
	own, err := unix.Openat(fd, ".", dirFlags, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(own), "")
	defer f.Close()
	return f.Readdirnames(-1)
}
