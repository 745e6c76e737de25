package image

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

// Layer unpacking rules (the code is in unpack_linux.go). A layer is
// untrusted input, and the unpacked rootfs is shared by every instance of
// the image, so:
//
//   - An entry name is cleaned lexically; a leading "/" is dropped, and a
//     name that then escapes the root ("../../etc/passwd") is refused.
//   - No symlink is ever followed while writing: paths are resolved from a
//     directory fd one component at a time with O_NOFOLLOW and every change
//     is made relative to the parent's fd. An entry whose parent path holds
//     a symlink is refused, even one pointing inside the rootfs (containerd
//     would follow that one; image builders record real paths, so we
//     prefer the simpler invariant). Symlink entries themselves are stored
//     verbatim, absolute or relative: "/bin/sh -> /bin/busybox" is fine.
//   - An entry replaces whatever is at its path (the old thing is removed,
//     never written through), except that a directory entry over an
//     existing directory only updates its metadata.
//   - Hard links must name an existing non-directory inside the rootfs,
//     again resolved without following symlinks.
//   - Character and block devices are refused (the runtime provides /dev).
//     FIFOs are created: they are harmless, and some images ship them.
//   - Whiteouts: ".wh.NAME" deletes NAME from lower layers;
//     ".wh..wh..opq" makes its directory opaque: when the layer is done,
//     everything under it that this layer did not write is deleted (so the
//     marker may come before or after the layer's own entries).
//   - Regular files larger than Options.MaxFileSize, or more than
//     Options.MaxRootFSSize of file data in total, are refused.
//   - Mode (with setuid/setgid/sticky), owner (when running as root), and
//     modification times are preserved. Extended attributes are kept only
//     for user.* and security.capability; trusted.* (e.g. overlayfs's own
//     attributes) and security.selinux are dropped.
//
// Every refusal wraps ErrUnsafeLayer and names the offending entry.

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// defaultStreamLimit bounds the uncompressed layer bytes one unpack reads
// when the image's admitted size is not known: file data is bounded by
// MaxRootFSSize, and tar headers and padding rarely double it.
func defaultStreamLimit(o Options) int64 { return 2*o.MaxRootFSSize + 64<<20 }

// streamBound fails reads once *left bytes were read.
type streamBound struct {
	r    io.Reader
	left *int64
}

func (b *streamBound) Read(p []byte) (int, error) {
	if *b.left <= 0 {
		return 0, unsafeLayer("the layers uncompress to more than the image was admitted for")
	}
	if int64(len(p)) > *b.left {
		p = p[:*b.left]
	}
	n, err := b.r.Read(p)
	*b.left -= int64(n)
	return n, err
}

func unsafeLayer(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnsafeLayer}, args...)...)
}

// entryPath cleans a layer entry name into a slash-separated path relative
// to the root ("." is the root itself) or refuses it if it escapes.
func entryPath(name string) (string, error) {
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", unsafeLayer("entry %q escapes the root filesystem", name)
	}
	return p, nil
}

// layerState is what the unpacker remembers while applying one layer.
type layerState struct {
	// touched holds every path this layer wrote and all their ancestors:
	// what an opaque directory keeps.
	touched map[string]bool
	// opaque lists directories with an opaque whiteout.
	opaque []string
	// dirs are directory times to set once the layer's files are in.
	dirs []dirTimes
}

type dirTimes struct {
	path         string
	atime, mtime time.Time
}

func newLayerState() *layerState {
	return &layerState{touched: make(map[string]bool)}
}

// touch records p and its ancestors as written by this layer.
func (st *layerState) touch(p string) {
	for q := p; q != "." && q != "/" && !st.touched[q]; q = path.Dir(q) {
		st.touched[q] = true
	}
}

// checkSize enforces the file size limits before a regular file is written.
func (u *unpacker) checkSize(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA {
		return nil
	}
	if hdr.Size < 0 {
		return unsafeLayer("entry %q has a negative size", hdr.Name)
	}
	if hdr.Size > u.opts.MaxFileSize {
		return unsafeLayer("entry %q is %s, over the %s per-file limit", hdr.Name, humanSize(hdr.Size), humanSize(u.opts.MaxFileSize))
	}
	u.total += hdr.Size
	if u.total > u.opts.MaxRootFSSize {
		return unsafeLayer("entry %q takes the image over the %s root filesystem limit", hdr.Name, humanSize(u.opts.MaxRootFSSize))
	}
	return nil
}

// accessTime is the atime to set: the entry's, or its mtime.
func accessTime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

// keepXattr says which extended attributes survive unpacking.
func keepXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || name == "security.capability"
}
