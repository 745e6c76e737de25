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
// stored under two names appears twice with the same Digest. Names are the
// archive's own, never one another import gave the same digest.
//
// Every layer a manifest names must be in the archive unless owner already
// owns it (see owner.go); blobs are verified against their digests and
// layers against the config's DiffIDs; any inconsistency fails the whole
// import with ErrInvalidArchive, but images committed before the failure
// stay stored, and are returned with the error. The extracted archive and the decompressed layers count
// against owner's quota while they are written.
func (s *localStore) Import(ctx context.Context, owner Owner, r io.Reader) ([]Image, error) {
	res, err := s.newReservation(owner)
	if err != nil {
		return nil, err
	}
	defer res.release()
	dir, err := os.MkdirTemp(s.tmpDir, "import-")
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := extractArchive(ctx, r, dir, s.opts.MaxImageSize, res); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	var imgs []Image
	switch {
	case isFile(filepath.Join(dir, "index.json")):
		imgs, err = s.importLayout(ctx, res, dir)
	case isFile(filepath.Join(dir, "manifest.json")):
		imgs, err = s.importDockerArchive(ctx, res, dir)
	default:
		err = fmt.Errorf("%w: found neither index.json (OCI image layout) nor manifest.json (docker save); "+
			"make one with `docker save IMAGE -o image.tar` or `skopeo copy docker://IMAGE oci-archive:image.tar`", ErrInvalidArchive)
	}
	if err != nil {
		// The images committed before the failure are stored and
		// charged: the caller records them as well as the error.
		return imgs, fmt.Errorf("import: %w", err)
	}
	return imgs, nil
}

func isFile(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode().IsRegular()
}

// readLocal reads a small file named by the archive itself (so untrusted):
// a regular file inside dir, at most maxMetadataSize bytes.
func readLocal(dir, name string) ([]byte, error) {
	if !filepath.IsLocal(name) {
		return nil, fmt.Errorf("%w: %q is not a path inside the archive", ErrInvalidArchive, name)
	}
	b, err := ReadFileInRoot(dir, name, maxMetadataSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s is missing from the archive", ErrInvalidArchive, name)
	}
	if errors.Is(err, ErrFileTooLarge) {
		return nil, fmt.Errorf("%w: %s is larger than %s", ErrInvalidArchive, name, humanSize(maxMetadataSize))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidArchive, name, err)
	}
	return b, nil
}

func layoutBlobName(h v1.Hash) string {
	return filepath.Join("blobs", h.Algorithm, h.Hex)
}

// importLayout imports the images of an OCI image layout extracted in dir.
func (s *localStore) importLayout(ctx context.Context, res *reservation, dir string) ([]Image, error) {
	raw, err := readLocal(dir, "index.json")
	if err != nil {
		return nil, err
	}
	idx, err := parseIndex(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: index.json: %v", ErrInvalidArchive, err)
	}
	var (
		imgs    []Image
		skipped []string
	)
	if len(idx.Manifests) > maxIndexEntries {
		return nil, fmt.Errorf("%w: index.json lists %d entries, more than %d", ErrInvalidArchive, len(idx.Manifests), maxIndexEntries)
	}
	for n, d := range idx.Manifests {
		ref := refFromAnnotations(d.Annotations)
		md, err := s.pickFromLayout(dir, d, 0)
		if errors.Is(err, errWrongPlatform) {
			skipped = append(skipped, err.Error())
			continue
		}
		if err != nil {
			return imgs, err
		}
		img, err := s.importLayoutImage(ctx, res, dir, md, n+1, ref)
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
		child, err := parseIndex(raw)
		if err != nil {
			return v1.Descriptor{}, fmt.Errorf("%w: index %s: %v", ErrInvalidArchive, d.Digest, err)
		}
		c, found, ok := pickPlatform(child)
		if ok {
			return s.pickFromLayout(dir, c, depth+1)
		}
		return v1.Descriptor{}, fmt.Errorf("index %s has no linux/amd64 image (found %s): %w", d.Digest, strings.Join(found, ", "), errWrongPlatform)
	default:
		return v1.Descriptor{}, fmt.Errorf("%w: index.json entry %s has media type %q, neither an image nor an index", ErrInvalidArchive, d.Digest, d.MediaType)
	}
}

// importLayoutImage admits the image manifest d, entry n of index.json.
func (s *localStore) importLayoutImage(ctx context.Context, res *reservation, dir string, d v1.Descriptor, n int, ref string) (Image, error) {
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
	a := s.newAdmission(res)
	defer a.discard()
	for i, l := range c.manifest.Layers {
		owned, err := a.owned(l)
		if err != nil {
			return Image{}, err
		}
		if owned {
			continue
		}
		if _, staged := a.staged[l.Digest]; staged {
			continue
		}
		// The same answer whether or not anyone else stored this layer:
		// no digests in the message, no look at the blob store.
		p := filepath.Join(dir, layoutBlobName(l.Digest))
		if !isFile(p) {
			return Image{}, fmt.Errorf("%w: layer %d of image %d is not in the archive; an archive must carry every layer its manifests name, except layers you imported or pulled before", ErrInvalidArchive, i+1, n)
		}
		if err := a.fromFile(ctx, l, p); err != nil {
			return Image{}, err
		}
	}
	return s.admit(ctx, a, c, ref)
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
func (s *localStore) importDockerArchive(ctx context.Context, res *reservation, dir string) ([]Image, error) {
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
	if len(entries) > maxIndexEntries {
		return nil, fmt.Errorf("%w: manifest.json lists %d images, more than %d", ErrInvalidArchive, len(entries), maxIndexEntries)
	}
	// A layer file shared by two entries is moved into the store by the
	// first; remember what it was.
	seen := map[string]v1.Descriptor{}
	var (
		imgs    []Image
		skipped []string
	)
	for i, e := range entries {
		a := s.newAdmission(res)
		c, err := s.dockerCandidate(ctx, a, dir, e, seen)
		if errors.Is(err, errWrongPlatform) {
			skipped = append(skipped, err.Error())
			continue
		}
		if err != nil {
			a.discard()
			return imgs, fmt.Errorf("manifest.json entry %d: %w", i+1, err)
		}
		refs := []string{""}
		if len(e.RepoTags) > 0 {
			refs = refs[:0]
			for _, t := range e.RepoTags {
				ref, err := NormalizeRef(t)
				if err != nil {
					a.discard()
					return imgs, fmt.Errorf("%w: manifest.json entry %d: RepoTag %q: %v", ErrInvalidArchive, i+1, t, err)
				}
				refs = append(refs, ref)
			}
		}
		for _, ref := range refs {
			img, err := s.admit(ctx, a, c, ref)
			if err != nil {
				a.discard()
				return imgs, err
			}
			imgs = appendImage(imgs, img)
		}
		a.discard()
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("%w: the archive holds no linux/amd64 image (%s)", ErrInvalidArchive, strings.Join(skipped, "; "))
	}
	return imgs, nil
}

// dockerCandidate stores the layers of one manifest.json entry and builds
// the OCI manifest that describes them.
func (s *localStore) dockerCandidate(ctx context.Context, a *admission, dir string, e tarball.Descriptor, seen map[string]v1.Descriptor) (*candidate, error) {
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
	if len(e.Layers) > maxLayers {
		return nil, fmt.Errorf("%w: %d layers, more than %d", ErrInvalidArchive, len(e.Layers), maxLayers)
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
	for _, name := range e.Layers {
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
			h, n, err := hashFile(ctx, p)
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w", name, err)
			}
			d = v1.Descriptor{MediaType: mt, Size: n, Digest: h}
			seen[name] = d
		}
		// The layer is in the archive, so its bytes are supplied: admit
		// it unless owned (or admitted for an earlier entry).
		if owned, err := a.owned(d); err != nil {
			return nil, err
		} else if _, staged := a.staged[d.Digest]; !owned && !staged {
			p := filepath.Join(dir, name)
			if !isFile(p) {
				return nil, fmt.Errorf("%w: layer %q is missing from the archive", ErrInvalidArchive, name)
			}
			if err := a.measure(ctx, d.Digest, d.Size, p); err != nil {
				return nil, err
			}
		}
		// The config's DiffIDs are checked when the image is admitted.
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
