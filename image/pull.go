package image

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"
)

// newTransports returns the registry transports: ggcr's default (proxy from
// the environment, dial and TLS timeouts) plus a response-header timeout,
// and a copy that skips TLS verification for insecure pulls.
func newTransports(opts Options) (secure, insecure http.RoundTripper) {
	base := remote.DefaultTransport.(*http.Transport).Clone()
	base.ResponseHeaderTimeout = opts.RegistryResponseTimeout
	ins := base.Clone()
	if ins.TLSClientConfig == nil {
		ins.TLSClientConfig = &tls.Config{}
	}
	ins.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // asked for with PullOptions.Insecure
	return base, ins
}

var linuxAMD64 = v1.Platform{OS: "linux", Architecture: "amd64"}

// Pull fetches the linux/amd64 image ref from its registry, anonymously.
// Layers already in the store are not downloaded again. The pull is bounded
// by ctx; a registry that stops answering fails it after
// Options.RegistryResponseTimeout.
func (s *localStore) Pull(ctx context.Context, ref string, opts PullOptions) (Image, error) {
	var nopts []name.Option
	if opts.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := parseRef(ref, nopts...)
	if err != nil {
		return Image{}, err
	}
	normal := normalForm(r)
	progress := &lockedWriter{w: opts.Progress}
	tr := s.transport
	if opts.Insecure {
		tr = s.insecureTransport
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithPlatform(linuxAMD64),
		remote.WithTransport(tr),
		remote.WithUserAgent("cube"),
	}
	progress.printf("pulling %s\n", normal)

	img, err := s.resolve(ctx, r, normal, ropts)
	if err != nil {
		return Image{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return Image{}, s.pullError(ctx, r, normal, err)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return Image{}, s.pullError(ctx, r, normal, err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return Image{}, s.pullError(ctx, r, normal, err)
	}
	c, err := s.newCandidate(rawManifest, digest, rawConfig)
	if errors.Is(err, errWrongPlatform) {
		platform := "not linux/amd64"
		if cf, perr := v1.ParseConfigFile(bytes.NewReader(rawConfig)); perr == nil {
			platform = cf.OS + "/" + cf.Architecture
		}
		return Image{}, fmt.Errorf("%w: image %q is %s; cube runs linux/amd64 images", ErrNotFound, normal, platform)
	}
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: registry %s served an invalid image: %w", normal, registryOf(r), err)
	}

	missing := s.missingLayers(c)
	for _, l := range c.manifest.Layers {
		if !containsDigest(missing, l.Digest) {
			progress.printf("already have %s\n", short(l.Digest))
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.opts.PullConcurrency)
	for _, l := range missing {
		g.Go(func() error {
			progress.printf("pulling %s %s\n", short(l.Digest), humanSize(l.Size))
			layer, err := img.LayerByDigest(l.Digest)
			if err != nil {
				return fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			rc, err := layer.Compressed()
			if err != nil {
				return fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			defer rc.Close()
			if err := s.putBlob(gctx, l.Digest, l.Size, rc); err != nil {
				return fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			progress.printf("pulled %s\n", short(l.Digest))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		// Not pullError: a missing blob is a broken registry, not a
		// missing image.
		return Image{}, fmt.Errorf("pull %s from registry %s: %w", normal, registryOf(r), err)
	}
	stored, err := s.finish(ctx, c, normal)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", normal, err)
	}
	progress.printf("pulled %s %s (%s)\n", stored.Ref, stored.Digest, humanSize(stored.Size))
	return stored, nil
}

// resolve fetches the manifest of r and, for an index, picks the
// linux/amd64 image.
func (s *localStore) resolve(ctx context.Context, r name.Reference, normal string, ropts []remote.Option) (v1.Image, error) {
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return nil, s.pullError(ctx, r, normal, err)
	}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return nil, s.pullError(ctx, r, normal, err)
		}
		return img, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, s.pullError(ctx, r, normal, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, s.pullError(ctx, r, normal, err)
	}
	var found []string
	for _, m := range im.Manifests {
		if m.Platform == nil || m.Platform.OS == "" || m.Platform.OS == "unknown" {
			continue // attestations
		}
		if m.Platform.OS == linuxAMD64.OS && m.Platform.Architecture == linuxAMD64.Architecture {
			img, err := idx.Image(m.Digest)
			if err != nil {
				return nil, s.pullError(ctx, r, normal, err)
			}
			return img, nil
		}
		found = append(found, m.Platform.String())
	}
	return nil, fmt.Errorf("%w: image %q has no linux/amd64 variant (found %s); cube runs linux/amd64 images",
		ErrNotFound, normal, strings.Join(found, ", "))
}

// pullError classifies a registry error.
func (s *localStore) pullError(ctx context.Context, r name.Reference, normal string, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return fmt.Errorf("pull %s: %w", normal, err)
	}
	reg := registryOf(r)
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusNotFound || hasCode(terr, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode):
			return fmt.Errorf("%w: image %q not found in registry %s (check the name and tag)", ErrNotFound, normal, reg)
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden ||
			hasCode(terr, transport.UnauthorizedErrorCode, transport.DeniedErrorCode):
			return fmt.Errorf("%w: image %q not found in registry %s, or it needs credentials (cube pulls anonymously)", ErrNotFound, normal, reg)
		}
	}
	if strings.Contains(err.Error(), "http: server gave HTTP response to HTTPS client") {
		return fmt.Errorf("pull %s: registry %s speaks plain HTTP; pull with the insecure option if that is intended: %w", normal, reg, err)
	}
	return fmt.Errorf("pull %s from registry %s: %w", normal, reg, err)
}

func hasCode(e *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range e.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

func containsDigest(ds []v1.Descriptor, h v1.Hash) bool {
	for _, d := range ds {
		if d.Digest == h {
			return true
		}
	}
	return false
}

// short abbreviates a digest for progress lines: "sha256:0123456789ab".
func short(h v1.Hash) string {
	if len(h.Hex) > 12 {
		return h.Algorithm + ":" + h.Hex[:12]
	}
	return h.String()
}

// lockedWriter serializes progress lines from parallel downloads; a nil
// writer discards them, and write errors are ignored (progress is
// best-effort).
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	if l.w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}
