package image

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// An import archive is untrusted input. extractArchive unpacks it into a
// private staging directory and allows only what an image archive needs:
// directories and regular files at relative paths without "..". Symbolic
// and hard links are never created: old `docker save` writes a repeated
// layer as a symlink to the first copy, so a link whose target is a regular
// file inside the archive becomes a hard link in the staging directory;
// every other link is refused.

const (
	// maxArchiveEntries caps the entries of an import archive: blobs,
	// index.json, manifest.json and a few directories. A layer with a
	// million files is one entry.
	maxArchiveEntries = 100_000
	// maxArchiveLinks caps the link entries, which are resolved in passes
	// (quadratic at worst); old `docker save` writes one per repeated layer.
	maxArchiveLinks = 1024
	// entryOverhead is what an entry is charged beyond its bytes.
	entryOverhead = 512
)

// countingReader counts bytes and fails past limit.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.limit {
		return n, fmt.Errorf("%w: archive is larger than the %s image size limit", ErrInvalidArchive, humanSize(c.limit))
	}
	return n, err
}

// extractArchive extracts the tar stream r (optionally gzip-compressed) into
// the existing, empty directory dir, charging every byte written to res. On
// error, dir may hold a partial extraction: the caller removes it.
func extractArchive(ctx context.Context, r io.Reader, dir string, limit int64, res *reservation) error {
	cr := &countingReader{r: ctxReader{ctx, r}, limit: limit}
	br := bufio.NewReader(cr)
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%w: bad gzip stream: %v", ErrInvalidArchive, err)
		}
		defer zr.Close()
		// The limit applies to what lands on disk too.
		src = &countingReader{r: zr, limit: limit}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()

	type link struct{ name, target string }
	var links []link
	tr := tar.NewReader(src)
	entries := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrInvalidArchive) {
				return err
			}
			return fmt.Errorf("%w: not a readable tar archive: %v", ErrInvalidArchive, err)
		}
		entries++
		if entries > maxArchiveEntries {
			return fmt.Errorf("%w: more than %d entries; an image archive holds blobs and a few metadata files", ErrInvalidArchive, maxArchiveEntries)
		}
		// Every entry costs an inode and a directory entry.
		if err := res.add(entryOverhead); err != nil {
			return err
		}
		name, err := archivePath(hdr.Name)
		if err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name != "." {
				if err := root.MkdirAll(name, 0o700); err != nil {
					return fmt.Errorf("%w: entry %q: %v", ErrInvalidArchive, hdr.Name, err)
				}
			}
		case tar.TypeReg:
			if err := extractFile(root, name, tr, res); err != nil {
				if errors.Is(err, ErrInvalidArchive) || errors.Is(err, ErrStorageQuota) || ctx.Err() != nil {
					return err
				}
				return fmt.Errorf("%w: entry %q: %v", ErrInvalidArchive, hdr.Name, err)
			}
		case tar.TypeSymlink:
			if path.IsAbs(hdr.Linkname) {
				return fmt.Errorf("%w: entry %q is a symlink to the absolute path %q; an image archive may not link outside itself", ErrInvalidArchive, hdr.Name, hdr.Linkname)
			}
			target, err := archivePath(path.Join(path.Dir(name), hdr.Linkname))
			if err != nil {
				return fmt.Errorf("%w: entry %q is a symlink to %q, outside the archive", ErrInvalidArchive, hdr.Name, hdr.Linkname)
			}
			links = append(links, link{name, target})
		case tar.TypeLink:
			target, err := archivePath(hdr.Linkname)
			if err != nil {
				return fmt.Errorf("%w: entry %q is a hard link to %q, outside the archive", ErrInvalidArchive, hdr.Name, hdr.Linkname)
			}
			links = append(links, link{name, target})
		case tar.TypeXGlobalHeader:
		default:
			return fmt.Errorf("%w: entry %q has tar type %q; an image archive holds only files and directories", ErrInvalidArchive, hdr.Name, string(hdr.Typeflag))
		}
	}
	if entries == 0 {
		return fmt.Errorf("%w: the archive is empty", ErrInvalidArchive)
	}
	if len(links) > maxArchiveLinks {
		return fmt.Errorf("%w: more than %d links", ErrInvalidArchive, maxArchiveLinks)
	}
	// Links may come before their targets and may chain; resolve until no
	// progress.
	for len(links) > 0 {
		var left []link
		for _, l := range links {
			fi, err := root.Lstat(l.target)
			if err != nil || !fi.Mode().IsRegular() {
				left = append(left, l)
				continue
			}
			if dir := path.Dir(l.name); dir != "." {
				if err := root.MkdirAll(dir, 0o700); err != nil {
					return fmt.Errorf("%w: entry %q: %v", ErrInvalidArchive, l.name, err)
				}
			}
			_ = root.Remove(l.name)
			if err := root.Link(l.target, l.name); err != nil {
				return fmt.Errorf("%w: entry %q: %v", ErrInvalidArchive, l.name, err)
			}
		}
		if len(left) == len(links) {
			return fmt.Errorf("%w: entry %q links to %q, which is not a file in the archive", ErrInvalidArchive, left[0].name, left[0].target)
		}
		links = left
	}
	return nil
}

// archivePath validates an archive entry name and returns it cleaned and
// slash-separated. Absolute names and any ".." are refused outright.
func archivePath(name string) (string, error) {
	if name == "" || path.IsAbs(name) || strings.ContainsRune(name, '\\') {
		return "", fmt.Errorf("%w: entry %q: absolute or empty path; an image archive holds relative paths only", ErrInvalidArchive, name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: entry %q contains \"..\"; refusing a path that could escape the archive", ErrInvalidArchive, name)
		}
	}
	clean := path.Clean(name)
	if !filepath.IsLocal(clean) && clean != "." {
		return "", fmt.Errorf("%w: entry %q is not a local path", ErrInvalidArchive, name)
	}
	return clean, nil
}

func extractFile(root *os.Root, name string, r io.Reader, res *reservation) error {
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	// A repeated entry replaces the earlier one, as tar does.
	f, err := root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(chargeWriter{res, f}, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
