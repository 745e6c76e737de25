package image

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Bounds on untrusted metadata, checked before it is parsed or used.
const (
	// maxMetadataSize caps a manifest, index or config read into memory,
	// from an archive or a registry.
	maxMetadataSize = 4 << 20
	// maxLayers caps the layers of one image (Docker's own limit is 127
	// for overlay; OCI sets none).
	maxLayers = 256
	// maxIndexEntries caps the entries of an index (or of index.json, or
	// of a docker-archive's manifest.json).
	maxIndexEntries = 1024
)

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
	if len(rawManifest) > maxMetadataSize || len(rawConfig) > maxMetadataSize {
		return nil, fmt.Errorf("manifest or config over the %s limit", humanSize(maxMetadataSize))
	}
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
	if cd != m.Config.Digest || int64(len(rawConfig)) != m.Config.Size {
		return nil, fmt.Errorf("config %s: content has digest %s (corrupt or tampered)", m.Config.Digest, cd)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", cd, err)
	}
	if err := checkPlatform(cf); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	if err := checkRuntimeConfig(cf); err != nil {
		return nil, fmt.Errorf("config %s: %w", cd, err)
	}
	if len(m.Layers) > maxLayers {
		return nil, fmt.Errorf("manifest %s has %d layers, more than %d", digest, len(m.Layers), maxLayers)
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

// checkRuntimeConfig refuses what an image may not ask of the runtime: a
// NUL byte in any string (which C-string APIs would cut), or a working
// directory that is not an absolute clean path or lies in /proc (a
// process started in /proc/self/... reaches the host's view of itself).
func checkRuntimeConfig(cf *v1.ConfigFile) error {
	c := cf.Config
	for _, group := range [][]string{c.Entrypoint, c.Cmd, c.Env, {c.WorkingDir, c.User}, slices.Collect(maps.Keys(c.ExposedPorts))} {
		for _, v := range group {
			if strings.IndexByte(v, 0) >= 0 {
				return fmt.Errorf("a string holds a NUL byte: %q", v)
			}
		}
	}
	if w := c.WorkingDir; w != "" {
		if !path.IsAbs(w) || path.Clean(w) != w {
			return fmt.Errorf("working directory %q is not an absolute clean path", w)
		}
		if w == "/proc" || strings.HasPrefix(w, "/proc/") {
			return fmt.Errorf("working directory %q is in /proc", w)
		}
	}
	return nil
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

// parseIndex parses an OCI image index or a Docker manifest list (the same
// JSON), bounded first: at most maxMetadataSize bytes and maxIndexEntries
// entries.
func parseIndex(raw []byte) (*v1.IndexManifest, error) {
	if len(raw) > maxMetadataSize {
		return nil, fmt.Errorf("index is %d bytes, over the %s limit", len(raw), humanSize(maxMetadataSize))
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	if idx.SchemaVersion != 2 {
		return nil, fmt.Errorf("index schema version %d is not supported (only 2)", idx.SchemaVersion)
	}
	if idx.MediaType != "" && !idx.MediaType.IsIndex() {
		return nil, fmt.Errorf("media type %q is not an image index", idx.MediaType)
	}
	if len(idx.Manifests) > maxIndexEntries {
		return nil, fmt.Errorf("index lists %d entries, more than %d", len(idx.Manifests), maxIndexEntries)
	}
	return idx, nil
}

// pickPlatform returns the index entry of the linux/amd64 image (or
// nested index), skipping entries without a platform (attestations). When
// there is none, it returns the platforms it found.
func pickPlatform(idx *v1.IndexManifest) (v1.Descriptor, []string, bool) {
	var found []string
	for _, m := range idx.Manifests {
		if m.Platform == nil || m.Platform.OS == "" || m.Platform.OS == "unknown" {
			continue
		}
		if m.Platform.OS == linuxAMD64.OS && m.Platform.Architecture == linuxAMD64.Architecture &&
			(m.MediaType.IsImage() || m.MediaType.IsIndex()) {
			return m, nil, true
		}
		found = append(found, m.Platform.String())
	}
	return v1.Descriptor{}, found, false
}
