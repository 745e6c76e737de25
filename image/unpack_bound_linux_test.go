//go:build linux

package image

import (
	"archive/tar"
	"bytes"
	"io"
	"log/slog"
	"testing"
)

// TestUnpackStreamBound: 1 GiB of zeros after a layer's tar (tar reads a
// directory's header only; the rest is what applyLayer drains) stops at
// the unpack's bound on uncompressed bytes.
func TestUnpackStreamBound(t *testing.T) {
	opts := fuzzOptions()
	u, err := newUnpacker(t.TempDir(), opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer u.close()
	r, closeFn, err := decompress(bytes.NewReader(gzipBombOf(t, tar.TypeDir, "d", 1<<30)))
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	if err := u.apply(t.Context(), r); err != nil {
		t.Fatalf("apply() = %v", err)
	}
	_, err = io.Copy(io.Discard, unpackBound(u, r)) // as applyLayer drains
	wantErr(t, "drain(1 GiB after the tar)", err, ErrUnsafeLayer, "uncompress to more")
}
