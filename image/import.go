package image

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Import reads an OCI image-layout tar or a `docker save` tar (optionally
// gzip-compressed) and stores every linux/amd64 image in it.
//
// An archive with index.json is read as an OCI image layout (this includes
// `docker save` from Docker 25 and later, which writes both formats). Each
// index.json entry is an image manifest or an index, from which the
// linux/amd64 manifest is taken; entries for other platforms are skipped.
// The name comes from the entry's io.containerd.image.name annotation, or
// from org.opencontainers.image.ref.name when that holds a full reference;
// a bare tag such as "v1" names no repository, so such an image, like an
// unannotated one, is stored unnamed: its Ref is its digest.
//
// An archive with only manifest.json is read as a docker-archive; each
// entry is named by its RepoTags (unnamed when it has none). Its
// layers are stored as they are in the archive, and the manifest is
// synthesized (OCI media types), so re-importing the same archive gives the
// same digest.
//
// Import returns one Image per name (and per unnamed image): an image
// stored under two names appears twice with the same Digest, while the
// store keeps one record per digest whose Ref is the last name committed
// (index.json order, then RepoTags order).
// Blobs are verified against their digests; any inconsistency fails the
// whole import with ErrInvalidArchive, but images committed before the
// failure stay stored.
func (s *localStore) Import(ctx context.Context, r io.Reader) ([]Image, error) {
	dir, err := os.MkdirTemp(s.tmpDir, "import-")
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := extractArchive(ctx, r, dir, s.opts.MaxImageSize); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	var imgs []Image
	switch {
	case isFile(filepath.Join(dir, "index.json")):
		imgs, err = s.importLayout(ctx, dir)
	case isFile(filepath.Join(dir, "manifest.json")):
		imgs, err = s.importDockerArchive(ctx, dir)
	default:
		err = fmt.Errorf("%w: found neither index.json (OCI image layout) nor manifest.json (docker save); "+
			"make one with `docker save IMAGE -o image.tar` or `skopeo copy docker://IMAGE oci-archive:image.tar`", ErrInvalidArchive)
	}
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	return imgs, nil
}

func isFile(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode().IsRegular()
}

// readLocal reads a small file named by the archive itself (so untrusted).
func readLocal(dir, name string) ([]byte, error) {
	if !filepath.IsLocal(name) {
		return nil, fmt.Errorf("%w: %q is not a path inside the archive", ErrInvalidArchive, name)
	}
	f, err := os.Open(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s is missing from the archive", ErrInvalidArchive, name)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMetadataSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxMetadataSize {
		return nil, fmt.Errorf("%w: %s is larger than %s", ErrInvalidArchive, name, humanSize(maxMetadataSize))
	}
	return b, nil
}

func layoutBlobName(h v1.Hash) string {
	return filepath.Join("blobs", h.Algorithm, h.Hex)
}

// importLayout imports the images of an OCI image layout extracted in dir.
func (s *localStore) importLayout(ctx context.Context, dir string) ([]Image, error) {
	raw, err := readLocal(dir, "index.json")
	if err != nil {
		return nil, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: index.json: %v", ErrInvalidArchive, err)
	}
	var (
		imgs    []Image
		skipped []string
	)
	for _, d := range idx.Manifests {
		ref := refFromAnnotations(d.Annotations)
		md, err := s.pickFromLayout(dir, d, 0)
		if errors.Is(err, errWrongPlatform) {
			skipped = append(skipped, err.Error())
			continue
		}
		if err != nil {
			return imgs, err
		}
		img, err := s.importLayoutImage(ctx, dir, md, ref)
		if errors.Is(err, errWrongPlatform) {
			skipped = append(skipped, err.Error())
			continue
		}
		if err != nil {
			return imgs, err
		}
		imgs = appendImage(imgs, img)
	}
	if len(imgs) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("%w: the archive holds no linux/amd64 image (%s)", ErrInvalidArchive, strings.Join(skipped, "; "))
		}
		return nil, fmt.Errorf("%w: index.json lists no image", ErrInvalidArchive)
	}
	for _, sk := range skipped {
		s.log.Info("import: skipped image", "reason", sk)
	}
	return imgs, nil
}

// pickFromLayout resolves an index.json descriptor to the descriptor of a
// linux/amd64 image manifest, descending into nested indexes.
func (s *localStore) pickFromLayout(dir string, d v1.Descriptor, depth int) (v1.Descriptor, error) {
	switch {
	case d.MediaType.IsImage():
		if p := d.Platform; p != nil && p.OS != "" && (p.OS != "linux" || p.Architecture != "amd64") {
			return v1.Descriptor{}, fmt.Errorf("manifest %s is %s: %w", d.Digest, p, errWrongPlatform)
		}
		return d, nil
	case d.MediaType.IsIndex():
		if depth > 4 {
			return v1.Descriptor{}, fmt.Errorf("%w: indexes nested too deep at %s", ErrInvalidArchive, d.Digest)
		}
		raw, err := readLocal(dir, layoutBlobName(d.Digest))
		if err != nil {
			return v1.Descriptor{}, err
		}
		if got, _, _ := v1.SHA256(bytes.NewReader(raw)); got != d.Digest {
			return v1.Descriptor{}, fmt.Errorf("%w: index %s has digest %s (corrupt or tampered)", ErrInvalidArchive, d.Digest, got)
		}
		child, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("%w: index %s: %v", ErrInvalidArchive, d.Digest, err)
		}
		var found []string
		for _, c := range child.Manifests {
			if c.Platform == nil || c.Platform.OS == "" {
				continue // attestations and the like
			}
			if c.Platform.OS == "linux" && c.Platform.Architecture == "amd64" {
				return s.pickFromLayout(dir, c, depth+1)
			}
			found = append(found, c.Platform.String())
		}
		return v1.Descriptor{}, fmt.Errorf("index %s has no linux/amd64 image (found %s): %w", d.Digest, strings.Join(found, ", "), errWrongPlatform)
	default:
		return v1.Descriptor{}, fmt.Errorf("%w: index.json entry %s has media type %q, neither an image nor an index", ErrInvalidArchive, d.Digest, d.MediaType)
	}
}

func (s *localStore) importLayoutImage(ctx context.Context, dir string, d v1.Descriptor, ref string) (Image, error) {
	rawManifest, err := readLocal(dir, layoutBlobName(d.Digest))
	if err != nil {
		return Image{}, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return Image{}, fmt.Errorf("%w: manifest %s: %v", ErrInvalidArchive, d.Digest, err)
	}
	rawConfig, err := readLocal(dir, layoutBlobName(m.Config.Digest))
	if err != nil {
		return Image{}, err
	}
	c, err := s.newCandidate(rawManifest, d.Digest, rawConfig)
	if errors.Is(err, errWrongPlatform) {
		return Image{}, err
	}
	if err != nil {
		return Image{}, fmt.Errorf("%w: %v", ErrInvalidArchive, err)
	}
	for _, l := range s.missingLayers(c) {
		p := filepath.Join(dir, layoutBlobName(l.Digest))
		if !isFile(p) {
			return Image{}, fmt.Errorf("%w: layer %s of manifest %s is missing from the archive", ErrInvalidArchive, l.Digest, c.digest)
		}
		got, n, err := s.ingestFile(ctx, p)
		if err != nil {
			return Image{}, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		if got != l.Digest || n != l.Size {
			return Image{}, fmt.Errorf("%w: layer %s has digest %s and size %d, the manifest says size %d (corrupt or tampered)", ErrInvalidArchive, l.Digest, got, n, l.Size)
		}
	}
	return s.finish(ctx, c, ref)
}

// appendImage adds img unless the same name and digest is already there.
func appendImage(imgs []Image, img Image) []Image {
	if slices.ContainsFunc(imgs, func(i Image) bool { return i.Ref == img.Ref && i.Digest == img.Digest }) {
		return imgs
	}
	return append(imgs, img)
}

// importDockerArchive imports the images of a docker-archive extracted in
// dir.
func (s *localStore) importDockerArchive(ctx context.Context, dir string) ([]Image, error) {
	raw, err := readLocal(dir, "manifest.json")
	if err != nil {
		return nil, err
	}
	var entries tarball.Manifest
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("%w: manifest.json: %v", ErrInvalidArchive, err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: manifest.json lists no image", ErrInvalidArchive)
	}
	// A layer file shared by two entries is moved into the store by the
	// first; remember what it was.
	seen := map[string]v1.Descriptor{}
	var (
		imgs    []Image
		skipped []string
	)
	for i, e := range entries {
		c, err := s.dockerCandidate(ctx, dir, e, seen)
		if errors.Is(err, errWrongPlatform) {
			skipped = append(skipped, err.Error())
			continue
		}
		if err != nil {
			return imgs, fmt.Errorf("manifest.json entry %d: %w", i+1, err)
		}
		refs := []string{""}
		if len(e.RepoTags) > 0 {
			refs = refs[:0]
			for _, t := range e.RepoTags {
				ref, err := NormalizeRef(t)
				if err != nil {
					return imgs, fmt.Errorf("%w: manifest.json entry %d: RepoTag %q: %v", ErrInvalidArchive, i+1, t, err)
				}
				refs = append(refs, ref)
			}
		}
		for _, ref := range refs {
			img, err := s.finish(ctx, c, ref)
			if err != nil {
				return imgs, err
			}
			imgs = appendImage(imgs, img)
		}
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("%w: the archive holds no linux/amd64 image (%s)", ErrInvalidArchive, strings.Join(skipped, "; "))
	}
	return imgs, nil
}

// dockerCandidate stores the layers of one manifest.json entry and builds
// the OCI manifest that describes them.
func (s *localStore) dockerCandidate(ctx context.Context, dir string, e tarball.Descriptor, seen map[string]v1.Descriptor) (*candidate, error) {
	rawConfig, err := readLocal(dir, e.Config)
	if err != nil {
		return nil, err
	}
	cd, cn, err := v1.SHA256(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, err
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, fmt.Errorf("%w: config %s: %v", ErrInvalidArchive, e.Config, err)
	}
	if err := checkPlatform(cf); err != nil {
		return nil, fmt.Errorf("config %s: %w", cd, err)
	}
	if len(cf.RootFS.DiffIDs) != len(e.Layers) {
		return nil, fmt.Errorf("%w: %d layers but config %s lists %d", ErrInvalidArchive, len(e.Layers), e.Config, len(cf.RootFS.DiffIDs))
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: cn, Digest: cd},
	}
	var total int64
	for i, name := range e.Layers {
		d, ok := seen[name]
		if !ok {
			if !filepath.IsLocal(name) || !isFile(filepath.Join(dir, name)) {
				return nil, fmt.Errorf("%w: layer %q is missing from the archive", ErrInvalidArchive, name)
			}
			p := filepath.Join(dir, name)
			mt, err := sniffLayer(p)
			if err != nil {
				return nil, err
			}
			h, n, err := s.ingestFile(ctx, p)
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w", name, err)
			}
			d = v1.Descriptor{MediaType: mt, Size: n, Digest: h}
			seen[name] = d
		}
		// An uncompressed layer's digest is its DiffID: check it.
		if d.MediaType == types.OCIUncompressedLayer && d.Digest != cf.RootFS.DiffIDs[i] {
			return nil, fmt.Errorf("%w: layer %q has digest %s but the config expects %s", ErrInvalidArchive, name, d.Digest, cf.RootFS.DiffIDs[i])
		}
		total += d.Size
		m.Layers = append(m.Layers, d)
	}
	if total > s.opts.MaxImageSize {
		return nil, fmt.Errorf("%w: layers are larger than the %s image size limit", ErrInvalidArchive, humanSize(s.opts.MaxImageSize))
	}
	rawManifest, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	c, err := s.newCandidate(rawManifest, v1.Hash{}, rawConfig)
	if err != nil && !errors.Is(err, errWrongPlatform) {
		err = fmt.Errorf("%w: %v", ErrInvalidArchive, err)
	}
	return c, err
}

// sniffLayer picks the OCI media type of a layer file from its magic bytes.
func sniffLayer(p string) (types.MediaType, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	magic, _ := bufio.NewReader(f).Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return types.OCILayer, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return types.OCILayerZStd, nil
	default:
		return types.OCIUncompressedLayer, nil
	}
}
