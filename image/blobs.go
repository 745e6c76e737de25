package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Blobs are content-addressed and shared by every image (and so by every
// tenant) on the node, so a blob is only ever written after its content was
// hashed and matched its name. Who may use a blob is owner.go's business:
// that a blob exists here grants nobody anything.

func (s *localStore) blobPath(h v1.Hash) string {
	return filepath.Join(s.blobDir, h.Hex)
}

// hasBlob reports whether blob h is stored.
func (s *localStore) hasBlob(h v1.Hash) bool {
	fi, err := os.Lstat(s.blobPath(h))
	return err == nil && fi.Mode().IsRegular()
}

// putBlob streams r into blob want, verifying the digest and, when size is
// not negative, the exact size. It reads at most size (or MaxImageSize) + 1
// bytes.
func (s *localStore) putBlob(ctx context.Context, want v1.Hash, size int64, r io.Reader) error {
	if want.Algorithm != "sha256" {
		return fmt.Errorf("blob %s: only sha256 digests are supported", want)
	}
	if s.hasBlob(want) {
		return nil
	}
	limit := s.opts.MaxImageSize
	if size >= 0 {
		limit = size
	}
	f, err := os.CreateTemp(s.tmpDir, "blob-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after the rename
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx, io.LimitReader(r, limit+1)})
	if err != nil {
		return fmt.Errorf("blob %s: %w", want, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("blob %s: got %d bytes, the manifest says %d", want, n, size)
	}
	if n > limit {
		return fmt.Errorf("blob %s: larger than the %s image size limit", want, humanSize(limit))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Hex {
		return fmt.Errorf("blob %s: content has digest sha256:%s (corrupt or tampered)", want, got)
	}
	return s.adopt(f, want)
}

// putBytes stores b as blob want after checking its digest.
func (s *localStore) putBytes(ctx context.Context, want v1.Hash, b []byte) error {
	return s.putBlob(ctx, want, int64(len(b)), bytes.NewReader(b))
}

// hashFile returns the digest and size of the file at path.
func hashFile(ctx context.Context, path string) (v1.Hash, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer f.Close()
	hh := sha256.New()
	n, err := io.Copy(hh, ctxReader{ctx, f})
	if err != nil {
		return v1.Hash{}, 0, err
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(hh.Sum(nil))}, n, nil
}

// adopt makes the fully written temp file f the blob h.
func (s *localStore) adopt(f *os.File, h v1.Hash) error {
	if err := f.Chmod(0o444); err != nil {
		return err
	}
	// Durable before visible: a blob is never re-verified once named.
	if err := f.Sync(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), s.blobPath(h)); err != nil {
		return err
	}
	return syncDir(s.blobDir)
}

// readBlob returns the content of a stored blob, at most max bytes.
func (s *localStore) readBlob(h v1.Hash, max int64) ([]byte, error) {
	f, err := os.Open(s.blobPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s is missing from the store", h)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("blob %s is larger than %s", h, humanSize(max))
	}
	return b, nil
}
