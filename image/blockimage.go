package image

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cube-platform/cube/errdefs"
)

// FSTypeEROFS is the filesystem type of the block images BlockImage makes.
const FSTypeEROFS = "erofs"

// blockImageUUID is every block image's filesystem UUID: a fixed one, so
// that one rootfs always gives the same bytes. Guests find drives by their
// virtio serial, never by UUID.
const blockImageUUID = "c0be0000-0000-4000-8000-000000000000"

// blockImageEpoch is SOURCE_DATE_EPOCH for mkfs.erofs (2100-01-01 UTC).
// erofs-utils 1.5 writes it as the build time instead of the clock's, and
// with it stores every inode's own mtime (extended inodes), clamped to it.
// -T would be deterministic too, but sets every mtime to one value.
const blockImageEpoch = "4102444800"

// blockImageTimeout bounds one mkfs.erofs run on top of the caller's ctx.
const blockImageTimeout = 30 * time.Minute

// maxMkfsStderr bounds what of mkfs.erofs's stderr an error carries.
const maxMkfsStderr = 4 << 10

// BuildBlockImage writes a read-only erofs image of the directory tree
// rootfsDir to out with mkfs.erofs (erofs-utils): owners, modes, xattrs,
// symlinks, device nodes and mtimes as they are in the tree. The same tree
// gives the same bytes. out appears complete or not at all (a temp file
// beside it, synced, renamed).
func BuildBlockImage(ctx context.Context, rootfsDir, out string) error {
	return buildBlockImage(ctx, rootfsDir, filepath.Dir(out), out)
}

// buildBlockImage is BuildBlockImage staging its temp file in tmpDir
// (on out's filesystem).
func buildBlockImage(ctx context.Context, rootfsDir, tmpDir, out string) (err error) {
	fi, err := os.Stat(rootfsDir)
	if err != nil || !fi.IsDir() {
		return fmt.Errorf("block image: rootfs %s is not a directory: %w", rootfsDir, errdefs.ErrInvalid)
	}
	mkfs, err := exec.LookPath("mkfs.erofs")
	if err != nil {
		return fmt.Errorf("block image: mkfs.erofs not found (apt-get install erofs-utils): %w", errdefs.ErrUnavailable)
	}
	tmp, err := os.CreateTemp(tmpDir, "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("block image: %w", err)
	}
	tmpPath := tmp.Name()
	tmp.Close()
	defer func() {
		if err != nil {
			os.Remove(tmpPath)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, blockImageTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, mkfs, "--quiet", "-U", blockImageUUID, tmpPath, rootfsDir)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SOURCE_DATE_EPOCH=" + blockImageEpoch}
	stderr := &tailBuffer{max: maxMkfsStderr}
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("block image of %s: mkfs.erofs: %w", rootfsDir, ctx.Err())
		}
		return fmt.Errorf("block image of %s: mkfs.erofs: %v: %s", rootfsDir, err, strings.TrimSpace(stderr.String()))
	}
	f, err := os.OpenFile(tmpPath, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("block image: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("block image: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("block image: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("block image: %w", err)
	}
	if err := os.Rename(tmpPath, out); err != nil {
		return fmt.Errorf("block image: %w", err)
	}
	if err := syncDir(filepath.Dir(out)); err != nil {
		return fmt.Errorf("block image: %w", err)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// BlockImage returns the read-only block image of a stored image,
// root/block/HEX.erofs, and its filesystem type, building it from RootFS
// the first time. Every VM on the node shares it (read-only drives).
//
// Like RootFS, concurrent calls for one image share one build, a caller
// whose ctx ends stops waiting, the build stops when no caller waits, and
// the image is staged in root/tmp and renamed into place complete.
func (s *localStore) BlockImage(ctx context.Context, digest string) (string, string, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return "", "", err
	}
	if _, err := s.get(h); err != nil {
		return "", "", err
	}
	final := s.blockPath(h)
	if isFile(final) {
		return final, FSTypeEROFS, nil
	}
	s.mu.Lock()
	f := s.blockFlights[h.Hex]
	if f == nil {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel}
		s.blockFlights[h.Hex] = f
		go s.blockFly(fctx, f, h)
	}
	f.waiters++
	s.mu.Unlock()

	select {
	case <-f.done:
		if f.err != nil {
			return "", "", f.err
		}
		return f.path, FSTypeEROFS, nil
	case <-ctx.Done():
		s.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
			if s.blockFlights[h.Hex] == f {
				delete(s.blockFlights, h.Hex)
			}
		}
		s.mu.Unlock()
		return "", "", fmt.Errorf("block image %s: %w", h, ctx.Err())
	}
}

func (s *localStore) blockPath(h v1.Hash) string {
	return filepath.Join(s.blockDir, h.Hex+".erofs")
}

func (s *localStore) blockFly(ctx context.Context, f *flight, h v1.Hash) {
	defer f.cancel()
	f.path, f.err = s.buildBlock(ctx, h)
	s.mu.Lock()
	if s.blockFlights[h.Hex] == f {
		delete(s.blockFlights, h.Hex)
	}
	s.mu.Unlock()
	close(f.done)
}

func (s *localStore) buildBlock(ctx context.Context, h v1.Hash) (string, error) {
	final := s.blockPath(h)
	if isFile(final) {
		return final, nil
	}
	root, err := s.RootFS(ctx, h.String())
	if err != nil {
		return "", err
	}
	s.blockBuilds.Add(1)
	start := time.Now()
	if err := buildBlockImage(ctx, root, s.tmpDir, final); err != nil {
		return "", fmt.Errorf("block image %s: %w", h, err)
	}
	fi, _ := os.Stat(final)
	var size int64
	if fi != nil {
		size = fi.Size()
	}
	s.log.Info("built block image", "digest", h.String(), "path", final, "bytes", size,
		"duration", time.Since(start).Round(time.Millisecond))
	return final, nil
}
