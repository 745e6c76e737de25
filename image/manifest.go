package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxMetadataSize caps a manifest, index or config read into memory.
const maxMetadataSize = 16 << 20

// errWrongPlatform marks an image for another OS or CPU; Import skips such
// images and Pull reports them.
var errWrongPlatform = errors.New("not a linux/amd64 image")

// candidate is a manifest and config whose digests and shape were checked,
// ready to be stored once its layers are.
type candidate struct {
	digest      v1.Hash
	rawManifest []byte
	manifest    *v1.Manifest
	rawConfig   []byte
	config      *v1.ConfigFile
}

// newCandidate checks a manifest (whose digest must be want, unless want is
// zero) and its config. Errors are plain; callers add the class.
func (s *localStore) newCandidate(rawManifest []byte, want v1.Hash, rawConfig []byte) (*candidate, error) {
	digest, _, err := v1.SHA256(bytes.NewReader(rawManifest))
	if err != nil {
		return nil, err
	}
	if want != (v1.Hash{}) && digest != want {
		return nil, fmt.Errorf("manifest %s: content has digest %s (corrupt or tampered)", want, digest)
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("manifest %s: schema version %d is not supported (only 2)", digest, m.SchemaVersion)
	}
	if m.MediaType != "" && !m.MediaType.IsImage() {
		return nil, fmt.Errorf("manifest %s: media type %q is not an image manifest", digest, m.MediaType)
	}
	cd, _, err := v1.SHA256(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, err
	}
	if cd != m.Config.Digest {
		return nil, fmt.Errorf("config %s: content has digest %s (corrupt or tampered)", m.Config.Digest, cd)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", cd, err)
	}
	if err := checkPlatform(cf); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	if n := len(cf.RootFS.DiffIDs); n != len(m.Layers) {
		return nil, fmt.Errorf("manifest %s has %d layers but its config lists %d", digest, len(m.Layers), n)
	}
	var total int64
	for i, l := range m.Layers {
		if !l.MediaType.IsLayer() {
			return nil, fmt.Errorf("manifest %s: layer %d has media type %q, not a layer", digest, i+1, l.MediaType)
		}
		if !l.MediaType.IsDistributable() {
			return nil, fmt.Errorf("manifest %s: layer %d is a foreign (non-distributable) layer, which is not supported", digest, i+1)
		}
		if l.Digest.Algorithm != "sha256" {
			return nil, fmt.Errorf("manifest %s: layer %d digest %s: only sha256 is supported", digest, i+1, l.Digest)
		}
		if l.Size < 0 {
			return nil, fmt.Errorf("manifest %s: layer %d has negative size", digest, i+1)
		}
		total += l.Size
		if total > s.opts.MaxImageSize || total < 0 {
			return nil, fmt.Errorf("manifest %s: layers are larger than the %s image size limit", digest, humanSize(s.opts.MaxImageSize))
		}
	}
	return &candidate{digest: digest, rawManifest: rawManifest, manifest: m, rawConfig: rawConfig, config: cf}, nil
}

// missingLayers returns the layers of c not yet in the blob store, once
// each.
func (s *localStore) missingLayers(c *candidate) []v1.Descriptor {
	var out []v1.Descriptor
	for _, l := range c.manifest.Layers {
		if !s.hasBlob(l.Digest) && !slices.ContainsFunc(out, func(d v1.Descriptor) bool { return d.Digest == l.Digest }) {
			out = append(out, l)
		}
	}
	return out
}

// finish stores c's config and manifest (its layers must be stored) and
// commits the image under ref ("" means unnamed: the digest is the Ref).
func (s *localStore) finish(ctx context.Context, c *candidate, ref string) (Image, error) {
	for _, l := range c.manifest.Layers {
		if !s.hasBlob(l.Digest) {
			return Image{}, fmt.Errorf("manifest %s: layer %s was not stored", c.digest, l.Digest)
		}
	}
	if err := s.putBytes(ctx, c.manifest.Config.Digest, c.rawConfig); err != nil {
		return Image{}, err
	}
	if err := s.putBytes(ctx, c.digest, c.rawManifest); err != nil {
		return Image{}, err
	}
	img := Image{
		Ref:     ref,
		Digest:  c.digest.String(),
		Created: c.config.Created.Time.UTC(),
		Config:  configOf(c.config),
	}
	if img.Ref == "" {
		img.Ref = img.Digest
	}
	for _, l := range c.manifest.Layers {
		img.Size += l.Size
	}
	mt := c.manifest.MediaType
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	desc := v1.Descriptor{
		MediaType: mt,
		Size:      int64(len(c.rawManifest)),
		Digest:    c.digest,
		Platform:  &v1.Platform{OS: "linux", Architecture: "amd64"},
	}
	img, err := s.commit(img, desc)
	if err != nil {
		return Image{}, fmt.Errorf("commit image %s: %w", c.digest, err)
	}
	s.log.Info("stored image", "ref", img.Ref, "digest", img.Digest, "size", img.Size, "layers", len(c.manifest.Layers))
	return img, nil
}

// checkPlatform accepts linux/amd64 configs (and ones that do not say).
func checkPlatform(cf *v1.ConfigFile) error {
	if (cf.OS != "" && cf.OS != "linux") || (cf.Architecture != "" && cf.Architecture != "amd64") {
		return fmt.Errorf("is %s/%s: %w", cf.OS, cf.Architecture, errWrongPlatform)
	}
	return nil
}

// configOf keeps what a runtime needs from an image config.
func configOf(cf *v1.ConfigFile) Config {
	c := Config{
		Entrypoint: cf.Config.Entrypoint,
		Cmd:        cf.Config.Cmd,
		Env:        cf.Config.Env,
		WorkingDir: cf.Config.WorkingDir,
		User:       cf.Config.User,
	}
	for p := range cf.Config.ExposedPorts {
		c.ExposedPorts = append(c.ExposedPorts, p)
	}
	slices.Sort(c.ExposedPorts)
	return c
}
