package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// flight is one unpack under way; callers asking for the same image wait
// on it instead of unpacking again.
type flight struct {
	done   chan struct{}
	cancel context.CancelFunc
	// path and err are written once, before done is closed.
	path string
	err  error
	// waiters counts the callers still waiting; the unpack is cancelled
	// when the last one gives up. Protected by localStore.mu.
	waiters int
}

// RootFS unpacks the image once and returns its root filesystem,
// root/rootfs/HEX. Callers must treat it as read-only and shared: mount it
// read-only or use it as an overlayfs lower directory.
//
// Concurrent calls for one image share a single unpack. A caller whose ctx
// ends stops waiting; the unpack itself stops only when no caller waits
// any more. The rootfs is built in root/tmp and renamed into place when
// complete, so a crash mid-unpack never leaves a partial rootfs that a
// later call would return.
func (s *localStore) RootFS(ctx context.Context, digest string) (string, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return "", err
	}
	if _, err := s.get(h); err != nil {
		return "", err
	}
	final := filepath.Join(s.rootfsDir, h.Hex)
	if isDir(final) {
		return final, nil
	}
	s.mu.Lock()
	f := s.flights[h.Hex]
	if f == nil {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel}
		s.flights[h.Hex] = f
		go s.fly(fctx, f, h)
	}
	f.waiters++
	s.mu.Unlock()

	select {
	case <-f.done:
		return f.path, f.err
	case <-ctx.Done():
		s.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
			// A new caller starts afresh rather than joining a dying unpack.
			if s.flights[h.Hex] == f {
				delete(s.flights, h.Hex)
			}
		}
		s.mu.Unlock()
		return "", fmt.Errorf("rootfs %s: %w", h, ctx.Err())
	}
}

func (s *localStore) fly(ctx context.Context, f *flight, h v1.Hash) {
	defer f.cancel()
	f.path, f.err = s.unpack(ctx, h)
	s.mu.Lock()
	if s.flights[h.Hex] == f {
		delete(s.flights, h.Hex)
	}
	s.mu.Unlock()
	close(f.done)
}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// unpack builds the rootfs of manifest h in a temp dir and renames it into
// place.
func (s *localStore) unpack(ctx context.Context, h v1.Hash) (path string, err error) {
	final := filepath.Join(s.rootfsDir, h.Hex)
	if isDir(final) {
		return final, nil
	}
	s.unpacks.Add(1)
	start := time.Now()
	raw, err := s.readBlob(h, maxMetadataSize)
	if err != nil {
		return "", fmt.Errorf("unpack image %s: %w", h, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("unpack image %s: %w", h, err)
	}
	tmp, err := os.MkdirTemp(s.tmpDir, "rootfs-"+h.Hex[:12]+"-")
	if err != nil {
		return "", fmt.Errorf("unpack image %s: %w", h, err)
	}
	defer func() {
		if err != nil {
			if rerr := os.RemoveAll(tmp); rerr != nil {
				s.log.Warn("cannot remove failed unpack", "dir", tmp, "err", rerr)
			}
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("unpack image %s: %w", h, err)
	}
	// The image was admitted for the uncompressed size of its layers, and
	// its files cannot hold more: that is the unpack's bound.
	uopts := s.opts
	if rec, err := s.get(h); err == nil && rec.Unpacked > 0 && rec.Unpacked < uopts.MaxRootFSSize {
		uopts.MaxRootFSSize = rec.Unpacked
	}
	u, err := newUnpacker(tmp, uopts, s.log)
	if err != nil {
		return "", fmt.Errorf("unpack image %s: %w", h, err)
	}
	if rec, err := s.get(h); err == nil && rec.Unpacked > 0 {
		// The exact uncompressed length measured when it was admitted
		// (the drain of each layer's trailer included).
		u.streamLeft = rec.Unpacked + 1
	}
	defer u.close()
	for i, l := range m.Layers {
		if err := s.applyLayer(ctx, u, l); err != nil {
			return "", fmt.Errorf("unpack image %s: layer %d/%d (%s): %w", h, i+1, len(m.Layers), short(l.Digest), err)
		}
	}
	// Durable before visible: the rename publishes the rootfs for good.
	if err := u.sync(); err != nil {
		return "", fmt.Errorf("unpack image %s: sync: %w", h, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if isDir(final) { // another process or a cancelled unpack won
			_ = os.RemoveAll(tmp)
			return final, nil
		}
		return "", fmt.Errorf("unpack image %s: %w", h, err)
	}
	if err := syncDir(s.rootfsDir); err != nil {
		return "", fmt.Errorf("unpack image %s: %w", h, err)
	}
	s.log.Info("unpacked image", "digest", h.String(), "layers", len(m.Layers),
		"bytes", u.total, "duration", time.Since(start).Round(time.Millisecond))
	return final, nil
}

// applyLayer decompresses one stored layer blob into u.
func (s *localStore) applyLayer(ctx context.Context, u *unpacker, l v1.Descriptor) error {
	f, err := os.Open(s.blobPath(l.Digest))
	if err != nil {
		return err
	}
	defer f.Close()
	r, closeFn, err := decompress(f)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := u.apply(ctx, r); err != nil {
		return err
	}
	// Drain: a gzip trailer (and its checksum) follows the tar end marker.
	// What follows the tar counts against the unpack's stream bound too.
	_, err = io.Copy(io.Discard, ctxReader{ctx, unpackBound(u, r)})
	return err
}

// decompress recognizes gzip and zstd by their magic bytes (media types
// lie often enough); anything else is read as a plain tar.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		// A frame may ask for any window; 128 MiB is zstd --long's
		// largest default and bounds what one layer can make us allocate.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(128<<20), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, zr.Close, nil
	default:
		return br, func() {}, nil
	}
}
