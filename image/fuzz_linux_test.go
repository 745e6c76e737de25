//go:build linux

package image

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// FuzzUnpackLayer feeds layers (plain, gzip or zstd tar) to the unpacker.
// Invariants: no panic; nothing is created, changed or removed outside the
// root (a sentinel directory beside it stays as it was); no device nodes;
// file sizes within the limits.
func FuzzUnpackLayer(f *testing.F) {
	opts := fuzzOptions()
	f.Fuzz(func(t *testing.T, data []byte) {
		base := fuzzDir(t)
		root := filepath.Join(base, "root")
		outside := filepath.Join(base, "outside")
		for _, d := range []string{root, outside} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(outside, "sentinel"), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		u, err := newUnpacker(root, opts, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer u.close()
		r, closeFn, err := decompress(bytes.NewReader(data))
		if err == nil {
			_ = u.apply(context.Background(), r)
			closeFn()
		}
		if ents, _ := os.ReadDir(base); len(ents) != 2 {
			t.Fatalf("unpack wrote beside the root: %v", names(ents))
		}
		ents, _ := os.ReadDir(outside)
		if b, err := os.ReadFile(filepath.Join(outside, "sentinel")); len(ents) != 1 || err != nil || string(b) != "keep" {
			t.Fatalf("unpack changed the directory beside the root: %v, %q, %v", names(ents), b, err)
		}
		walkRoot(t, root, opts.MaxFileSize, opts.MaxRootFSSize)
	})
}
