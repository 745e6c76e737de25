package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// admission gathers what one image needs before it is stored for an
// owner: every layer the owner does not own yet is verified (digest, size,
// DiffID) and staged as a file in tmp; nothing enters the blob store until
// the whole image is admitted, so a refused image leaves nothing behind.
type admission struct {
	s   *localStore
	res *reservation

	// mu guards staged and layers (parallel downloads measure at once).
	mu sync.Mutex
	// staged are the verified layer files by digest, not yet adopted.
	// Protected by mu.
	staged map[v1.Hash]string
	// layers are the facts of every layer of the image, owned or staged.
	// Protected by mu.
	layers map[v1.Hash]ownedBlob
	// charged is what the reservation holds for this image that its grant
	// turns into owned bytes: staged blobs, uncompressed layers, and a
	// pull's manifest and config. Protected by mu.
	charged int64
}

func (s *localStore) newAdmission(res *reservation) *admission {
	return &admission{s: s, res: res, staged: map[v1.Hash]string{}, layers: map[v1.Hash]ownedBlob{}}
}

// discard removes the staged files that were not adopted.
func (a *admission) discard() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.staged {
		_ = os.Remove(p)
	}
	a.staged = map[v1.Hash]string{}
}

// owned takes the facts of layer l from the owner's record; it reports
// false when the owner does not own l (then its bytes must be supplied).
func (a *admission) owned(l v1.Descriptor) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.layers[l.Digest]; ok {
		return true, nil
	}
	b, ok, err := a.s.ownedBlobOf(a.res.owner, l.Digest)
	if err != nil || !ok || b.DiffID == "" {
		return false, err
	}
	a.layers[l.Digest] = b
	return true, nil
}

// fromFile admits the layer l from the file at path (in tmp, already
// charged): its content must have l's digest and size.
func (a *admission) fromFile(ctx context.Context, l v1.Descriptor, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, f})
	f.Close()
	if err != nil {
		return err
	}
	got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	if got != l.Digest || (l.Size >= 0 && n != l.Size) {
		return fmt.Errorf("%w: a layer has digest %s and size %d, but its manifest says %s and size %d (corrupt or tampered)", ErrInvalidArchive, got, n, l.Digest, l.Size)
	}
	return a.measure(ctx, l.Digest, n, path)
}

// fromReader admits layer l from r (a registry download): written to tmp
// while charged and hashed, then measured.
func (a *admission) fromReader(ctx context.Context, l v1.Descriptor, r io.Reader) (err error) {
	if l.Size > a.s.opts.MaxImageSize {
		return fmt.Errorf("layer %s is larger than the %s image size limit", l.Digest, humanSize(a.s.opts.MaxImageSize))
	}
	f, err := os.CreateTemp(a.s.tmpDir, "blob-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(chargeWriter{a.res, f}, h), ctxReader{ctx, io.LimitReader(r, l.Size+1)})
	if err != nil {
		return err
	}
	if n != l.Size {
		return fmt.Errorf("layer %s: got %d bytes, the manifest says %d", l.Digest, n, l.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != l.Digest.Hex {
		return fmt.Errorf("layer %s: content has digest sha256:%s (corrupt or tampered)", l.Digest, got)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return a.measure(ctx, l.Digest, n, f.Name())
}

// measure decompresses the verified layer file at path, charging every
// uncompressed byte as it is produced, and records its DiffID.
func (a *admission) measure(ctx context.Context, digest v1.Hash, size int64, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	diffID, n, err := a.s.uncompressedDigest(ctx, f, a.res)
	if err != nil {
		return fmt.Errorf("layer %s: %w", digest, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.layers[digest] = ownedBlob{Size: size, DiffID: diffID.String(), Unpacked: n}
	a.staged[digest] = path
	a.charged += size + n
	return nil
}

// layerEntryCharge is what each entry of a layer costs on top of its
// bytes: the disk a host filesystem sets aside per inode (ext4's default
// bytes-per-inode ratio). Charged by bytes alone, an image of a million
// empty files would cost 0.5 GB of quota but a million host inodes, and a
// tenant within its quota could run the node out of inodes.
const layerEntryCharge = 16 << 10

// uncompressedDigest returns the sha256 of the decompressed layer stream r
// and what it costs: its length plus layerEntryCharge per tar entry. With
// res, every byte and entry is charged as it comes; the stream is bounded
// by MaxRootFSSize in any case (a decompression bomb for an owner without
// a quota).
func (s *localStore) uncompressedDigest(ctx context.Context, r io.Reader, res *reservation) (v1.Hash, int64, error) {
	dr, closeFn, err := decompress(r)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer closeFn()
	h := sha256.New()
	var w io.Writer = h
	if res != nil {
		w = chargeWriter{res, h}
	}
	limit := s.opts.MaxRootFSSize
	src := ctxReader{ctx, io.LimitReader(dr, limit+1)}
	cw := &countWriter{w: w}
	// Every byte tar reads passes through cw once; what it does not read
	// (the end blocks, or what is not a tar at all, which the unpack
	// refuses later) is copied after it.
	tr := tar.NewReader(io.TeeReader(src, cw))
	var entries int64
	for {
		if _, err := tr.Next(); err != nil {
			if cw.err != nil {
				return v1.Hash{}, 0, cw.err
			}
			break
		}
		entries++
		if res != nil {
			if err := res.add(layerEntryCharge); err != nil {
				return v1.Hash{}, 0, err
			}
		}
	}
	if _, err := io.Copy(cw, src); err != nil {
		return v1.Hash{}, 0, err
	}
	if cw.n > limit {
		return v1.Hash{}, 0, unsafeLayer("a layer decompresses to more than the %s root filesystem limit", humanSize(limit))
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, cw.n + entries*layerEntryCharge, nil
}

// countWriter counts what it passes on, and keeps the first error (a quota
// refusal), which a tee would otherwise hand to tar as a read error.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil {
		c.err = err
	}
	return n, err
}

// checkDiffIDs verifies every layer's uncompressed digest against the
// config and returns the image's uncompressed size.
func (a *admission) checkDiffIDs(c *candidate) (int64, error) {
	var total int64
	for i, l := range c.manifest.Layers {
		facts, ok := a.layers[l.Digest]
		if !ok {
			return 0, fmt.Errorf("manifest %s: layer %d was not admitted", c.digest, i+1)
		}
		if want := c.config.RootFS.DiffIDs[i].String(); facts.DiffID != want {
			return 0, fmt.Errorf("%w: layer %d (%s) uncompresses to %s, but the config's rootfs.diff_ids[%d] is %s (corrupt or tampered)",
				ErrInvalidArchive, i+1, l.Digest, facts.DiffID, i, want)
		}
		total += facts.Unpacked
	}
	return total, nil
}

// admit stores the admitted image c for the owner under ref ("" means
// unnamed): it adopts the staged layers, writes config and manifest,
// records the image and grants the owner all of it.
func (s *localStore) admit(ctx context.Context, a *admission, c *candidate, ref string) (Image, error) {
	unpacked, err := a.checkDiffIDs(c)
	if err != nil {
		return Image{}, err
	}
	grant := map[v1.Hash]ownedBlob{
		c.manifest.Config.Digest: {Size: int64(len(c.rawConfig))},
		c.digest:                 {Size: int64(len(c.rawManifest))},
	}
	for _, l := range c.manifest.Layers {
		grant[l.Digest] = a.layers[l.Digest]
	}
	img := Image{
		Ref:      c.digest.String(),
		Digest:   c.digest.String(),
		Created:  c.config.Created.Time.UTC(),
		Config:   configOf(c.config),
		Unpacked: unpacked,
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

	s.mu.Lock()
	defer s.mu.Unlock()
	// The final quota check comes before anything becomes visible.
	if err := s.grantCheck(a.res, grant, c.digest, unpacked); err != nil {
		return Image{}, err
	}
	for h, p := range a.staged {
		// Always replace: a blob already stored has the same bytes, and
		// doing the same work either way keeps what others stored out of
		// the timing.
		if err := s.adoptPath(p, h); err != nil {
			return Image{}, fmt.Errorf("store layer %s: %w", h, err)
		}
		delete(a.staged, h)
	}
	if err := s.putBytes(ctx, c.manifest.Config.Digest, c.rawConfig); err != nil {
		return Image{}, err
	}
	if err := s.putBytes(ctx, c.digest, c.rawManifest); err != nil {
		return Image{}, err
	}
	if err := s.commitLocked(img, desc); err != nil {
		return Image{}, fmt.Errorf("commit image %s: %w", c.digest, err)
	}
	if err := s.grant(a.res, grant, c.digest, unpacked); err != nil {
		return Image{}, fmt.Errorf("commit image %s: %w", c.digest, err)
	}
	// Now owned, so counted in the tenant's usage: no longer reserved
	// (the next image of the same archive must not count it twice).
	a.res.sub(a.charged)
	a.charged = 0
	if ref != "" {
		img.Ref = ref
	}
	s.log.Info("stored image", "tenant", a.res.owner.Tenant, "ref", img.Ref, "digest", img.Digest, "size", img.Size, "layers", len(c.manifest.Layers))
	return img, nil
}

// adoptPath moves the verified file p into the blob store as h.
func (s *localStore) adoptPath(p string, h v1.Hash) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return s.adopt(f, h)
}
