package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Fuzz targets for the parsers of untrusted image input. Their seed
// corpora live in testdata/fuzz/<FuzzName>/ (so `go test` runs them) and
// are rewritten by TestWriteFuzzSeeds with CUBE_WRITE_FUZZ_SEEDS=1. Run one
// with e.g. `go test -run '^$' -fuzz '^FuzzImport$' -fuzztime 60s ./image`.

// fuzzOptions keep every bound small so that the fuzzer's inputs cannot
// make a run allocate or write much.
func fuzzOptions() Options {
	o := DefaultOptions()
	o.MaxImageSize = 8 << 20
	o.MaxFileSize = 1 << 20
	o.MaxRootFSSize = 8 << 20
	return o
}

// FuzzImport feeds archives (the tar extractor, index.json, manifest.json,
// manifests and configs) to Import. Invariants: no panic; nothing is
// written outside the store; a refused archive leaves no staging files, no
// blobs, no images and no charge; an accepted one leaves its blobs.
func FuzzImport(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		base := fuzzDir(t)
		root := filepath.Join(base, "store")
		st, err := NewLocalStoreWithOptions(root, nil, fuzzOptions())
		if err != nil {
			t.Fatal(err)
		}
		s := st.(*localStore)
		owner := Owner{Tenant: "fuzz", Quota: 32 << 20}
		imgs, err := s.Import(context.Background(), owner, bytes.NewReader(data))
		if ents, _ := os.ReadDir(base); len(ents) != 1 {
			t.Fatalf("Import wrote outside the store: %v", names(ents))
		}
		if ents, _ := os.ReadDir(s.tmpDir); len(ents) != 0 {
			t.Fatalf("Import left %v in tmp (err %v)", names(ents), err)
		}
		stored, _ := s.List(context.Background())
		returned := map[string]bool{}
		for _, img := range imgs {
			returned[img.Digest] = true
		}
		for _, img := range stored {
			if !returned[img.Digest] {
				t.Fatalf("Import stored %s without returning it (err %v)", img.Digest, err)
			}
		}
		if len(imgs) == 0 {
			if err == nil {
				t.Fatalf("Import returned no image and no error")
			}
			if ents, _ := os.ReadDir(s.blobDir); len(ents) != 0 {
				t.Fatalf("a refused Import left blobs %v: %v", names(ents), err)
			}
			if n, _ := s.Usage(context.Background(), owner.Tenant); n != 0 {
				t.Fatalf("a refused Import charged %d bytes: %v", n, err)
			}
			return
		}
		for _, img := range imgs {
			h := mustHashFuzz(t, img.Digest)
			raw, err := s.readBlob(h, maxMetadataSize)
			if err != nil {
				t.Fatalf("image %s stored without its manifest: %v", img.Digest, err)
			}
			m, err := v1.ParseManifest(bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("stored manifest %s does not parse: %v", img.Digest, err)
			}
			for _, l := range m.Layers {
				if !s.hasBlob(l.Digest) {
					t.Fatalf("image %s stored without layer %s", img.Digest, l.Digest)
				}
			}
		}
		if n, _ := s.Usage(context.Background(), owner.Tenant); n <= 0 || n > owner.Quota {
			t.Fatalf("Usage() = %d after an import; want within (0, %d]", n, owner.Quota)
		}
	})
}

// FuzzManifest feeds a manifest and a config to newCandidate, the checks
// every import and pull makes before using either. Invariants: no panic;
// an accepted pair has the digest of its bytes, a config of the declared
// digest and size, as many DiffIDs as layers, sha256 layers within the
// size bound.
func FuzzManifest(f *testing.F) {
	s := &localStore{opts: fuzzOptions()}
	f.Fuzz(func(t *testing.T, manifest, config []byte) {
		c, err := s.newCandidate(manifest, v1.Hash{}, config)
		if err != nil {
			return
		}
		sum := sha256.Sum256(manifest)
		if c.digest.Hex != hex.EncodeToString(sum[:]) {
			t.Fatalf("candidate digest %s is not the manifest's", c.digest)
		}
		csum := sha256.Sum256(config)
		if c.manifest.Config.Digest.Hex != hex.EncodeToString(csum[:]) || c.manifest.Config.Size != int64(len(config)) {
			t.Fatalf("accepted a config that is not the one the manifest names")
		}
		if err := checkRuntimeConfig(c.config); err != nil {
			t.Fatalf("accepted a config the runtime may not use: %v", err)
		}
		if len(c.config.RootFS.DiffIDs) != len(c.manifest.Layers) || len(c.manifest.Layers) > maxLayers {
			t.Fatalf("accepted %d layers with %d DiffIDs", len(c.manifest.Layers), len(c.config.RootFS.DiffIDs))
		}
		var total int64
		for _, l := range c.manifest.Layers {
			if l.Digest.Algorithm != "sha256" || len(l.Digest.Hex) != 64 || l.Size < 0 {
				t.Fatalf("accepted layer %+v", l)
			}
			total += l.Size
		}
		if total > s.opts.MaxImageSize {
			t.Fatalf("accepted %d bytes of layers, over MaxImageSize", total)
		}
	})
}

// FuzzIndex feeds OCI indexes and Docker manifest lists to parseIndex and
// pickPlatform. Invariants: no panic; bounded entries; a pick is a
// linux/amd64 image or index.
func FuzzIndex(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		idx, err := parseIndex(raw)
		if err != nil {
			return
		}
		if len(idx.Manifests) > maxIndexEntries {
			t.Fatalf("accepted %d entries", len(idx.Manifests))
		}
		d, found, ok := pickPlatform(idx)
		if !ok {
			if len(found) > len(idx.Manifests) {
				t.Fatalf("found %d platforms among %d entries", len(found), len(idx.Manifests))
			}
			return
		}
		if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != "amd64" ||
			!(d.MediaType.IsImage() || d.MediaType.IsIndex()) {
			t.Fatalf("picked %+v", d)
		}
	})
}

// fuzzDir is a fresh directory, on tmpfs when there is one: the store
// syncs what it writes, which on a disk makes each run slow.
func fuzzDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/dev/shm", "cube-fuzz-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func names(ents []os.DirEntry) []string {
	out := make([]string, len(ents))
	for i, e := range ents {
		out[i] = e.Name()
	}
	return out
}

func mustHashFuzz(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// walkRoot checks an unpacked tree: no device nodes, no file over max, at
// most total bytes of files.
func walkRoot(t *testing.T, root string, max, total int64) {
	t.Helper()
	var sum int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch m := fi.Mode(); {
		case m&fs.ModeDevice != 0 || m&fs.ModeCharDevice != 0:
			t.Fatalf("unpack made a device node %s", p)
		case m.IsRegular():
			if fi.Size() > max {
				t.Fatalf("unpack wrote %s of %d bytes, over the %d per-file limit", p, fi.Size(), max)
			}
			sum += fi.Size()
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if sum > total {
		t.Fatalf("unpack wrote %d bytes, over the %d limit", sum, total)
	}
}

// TestFuzzSeedsValid is the fuzzers' positive control: the valid seeds are
// accepted, so the invariants are checked on the success paths too.
func TestFuzzSeedsValid(t *testing.T) {
	seed := func(fuzz, name string) [][]byte {
		b, err := os.ReadFile(filepath.Join("testdata", "fuzz", fuzz, name))
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for _, line := range bytes.Split(b, []byte("\n"))[1:] {
			if q, ok := bytes.CutPrefix(line, []byte("[]byte(")); ok {
				s, err := strconv.Unquote(string(bytes.TrimSuffix(q, []byte(")"))))
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, []byte(s))
			}
		}
		return out
	}
	for _, name := range []string{"oci-layout", "docker-archive", "multi-platform", "gzipped"} {
		s := newStore(t, func(o *Options) { *o = fuzzOptions() })
		if imgs, err := s.Import(t.Context(), testOwner, bytes.NewReader(seed("FuzzImport", name)[0])); err != nil || len(imgs) == 0 {
			t.Errorf("Import(seed %s) = %+v, %v; want an image", name, imgs, err)
		}
	}
	s := &localStore{opts: fuzzOptions()}
	for _, name := range []string{"oci", "docker"} {
		a := seed("FuzzManifest", name)
		if _, err := s.newCandidate(a[0], v1.Hash{}, a[1]); err != nil {
			t.Errorf("newCandidate(seed %s) = %v", name, err)
		}
	}
	for _, name := range []string{"oci-index", "docker-list"} {
		idx, err := parseIndex(seed("FuzzIndex", name)[0])
		if err != nil {
			t.Fatalf("parseIndex(seed %s) = %v", name, err)
		}
		if _, _, ok := pickPlatform(idx); !ok {
			t.Errorf("pickPlatform(seed %s) found no linux/amd64 entry", name)
		}
	}
}
