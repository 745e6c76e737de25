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
func newTransports(opts Options) (secure, insecure *http.Transport) {
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

// Pull fetches the linux/amd64 image ref from its registry, anonymously,
// for owner. Layers the owner already owns are not downloaded again; every
// other layer is downloaded and verified even when another tenant stored
// it. Manifests, indexes and configs are capped at 4 MiB. With
// opts.Guard, every connection is vetted (see NetGuard). Errors name the
// registry and the HTTP status, never what the registry sent.
//
// The pull is bounded by ctx; a registry that stops answering fails it after
// Options.RegistryResponseTimeout.
func (s *localStore) Pull(ctx context.Context, owner Owner, ref string, opts PullOptions) (Image, error) {
	var nopts []name.Option
	if opts.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := parseRef(ref, nopts...)
	if err != nil {
		return Image{}, err
	}
	res, err := s.newReservation(owner)
	if err != nil {
		return Image{}, err
	}
	defer res.release()
	normal := normalForm(r)
	progress := &lockedWriter{w: opts.Progress}
	base := s.transport
	if opts.Insecure {
		base = s.insecureTransport
	}
	var tr http.RoundTripper = base
	if opts.Guard != nil {
		gt := guardedTransport(base, opts.Guard)
		defer gt.CloseIdleConnections()
		tr = gt
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithPlatform(linuxAMD64),
		remote.WithTransport(cappedTransport{tr}),
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
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: registry %s served an invalid manifest: %w", normal, registryOf(r), err)
	}
	if m.Config.Size < 0 || m.Config.Size > maxMetadataSize {
		return Image{}, fmt.Errorf("pull %s: registry %s served a manifest whose config is %d bytes, over the %s limit", normal, registryOf(r), m.Config.Size, humanSize(maxMetadataSize))
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
	if err := res.add(int64(len(rawManifest) + len(rawConfig))); err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", normal, err)
	}

	a := s.newAdmission(res)
	a.charged = int64(len(rawManifest) + len(rawConfig))
	defer a.discard()
	var missing []v1.Descriptor
	for _, l := range c.manifest.Layers {
		owned, err := a.owned(l)
		if err != nil {
			return Image{}, err
		}
		switch {
		case owned:
			progress.printf("already have %s\n", short(l.Digest))
		case !containsDigest(missing, l.Digest):
			missing = append(missing, l)
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
			if err := a.fromReader(gctx, l, rc); err != nil {
				return fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			progress.printf("pulled %s\n", short(l.Digest))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		// Not pullError: a missing blob is a broken registry, not a
		// missing image.
		if errors.Is(err, ErrStorageQuota) || errors.Is(err, ErrUnsafeLayer) {
			return Image{}, fmt.Errorf("pull %s: %w", normal, err)
		}
		return Image{}, fmt.Errorf("pull %s from registry %s: %w", normal, registryOf(r), scrub(err))
	}
	stored, err := s.admit(ctx, a, c, normal)
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
	raw, err := idx.RawManifest()
	if err != nil {
		return nil, s.pullError(ctx, r, normal, err)
	}
	im, err := parseIndex(raw)
	if err != nil {
		return nil, fmt.Errorf("pull %s: registry %s served an invalid index: %w", normal, registryOf(r), err)
	}
	m, found, ok := pickPlatform(im)
	if !ok {
		return nil, fmt.Errorf("%w: image %q has no linux/amd64 variant (found %s); cube runs linux/amd64 images",
			ErrNotFound, normal, strings.Join(found, ", "))
	}
	if !m.MediaType.IsImage() {
		return nil, fmt.Errorf("pull %s: registry %s served an index whose linux/amd64 entry is another index; cube does not follow nested indexes from registries", normal, registryOf(r))
	}
	img, err := idx.Image(m.Digest)
	if err != nil {
		return nil, s.pullError(ctx, r, normal, err)
	}
	return img, nil
}

// pullError classifies a registry error. What the registry sent (an error
// body, an HTML page, its error messages) is never repeated: a tenant could
// otherwise read any service the registry name points at.
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
	if errors.Is(err, ErrRegistryRefused) {
		return fmt.Errorf("pull %s: %w", normal, guardError(err))
	}
	if terr != nil {
		return fmt.Errorf("pull %s from registry %s: %w", normal, reg, scrub(err))
	}
	if strings.Contains(err.Error(), "http: server gave HTTP response to HTTPS client") {
		return fmt.Errorf("pull %s: registry %s speaks plain HTTP; pull with the insecure option if that is intended", normal, reg)
	}
	return fmt.Errorf("pull %s from registry %s: %w", normal, reg, scrub(err))
}

// guardError digs the NetGuard refusal out of the transport's wrapping.
func guardError(err error) error {
	for e := err; e != nil; {
		if strings.HasPrefix(e.Error(), ErrRegistryRefused.Error()) {
			return e
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return err
}

// scrub replaces a registry's answer by its status: the body and the
// registry's own messages stay out of the error.
func scrub(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		host := "the registry"
		if terr.Request != nil && terr.Request.URL != nil {
			host = terr.Request.URL.Host
		}
		safe := fmt.Sprintf("%s answered HTTP %d %s", host, terr.StatusCode, http.StatusText(terr.StatusCode))
		// Keep the context the error was wrapped in ("layer sha256:…: ").
		if msg, raw := err.Error(), terr.Error(); strings.Contains(msg, raw) {
			return errors.New(strings.Replace(msg, raw, safe, 1))
		}
		return errors.New(safe)
	}
	return err
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
