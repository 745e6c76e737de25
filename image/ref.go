package image

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Annotations that name an image inside an OCI image layout.
const (
	// AnnotationRefName is the OCI annotation on an index.json entry. Tools
	// disagree on its content: containerd and Docker write just the tag
	// ("v1"), skopeo and others write a full reference.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationContainerdName is containerd's (and Docker's) full image name
	// on an index.json entry, e.g. "docker.io/library/busybox:latest".
	AnnotationContainerdName = "io.containerd.image.name"
)

// dockerHub is how the normal form spells Docker Hub (ggcr says
// "index.docker.io"; Docker, containerd and users say "docker.io").
const dockerHub = "docker.io"

// NormalizeRef parses an image reference and returns its normal form:
//
//	REGISTRY/REPOSITORY:TAG     for a tagged reference (tag "latest" if none)
//	REGISTRY/REPOSITORY@DIGEST  for a digest reference (a tag next to the
//	                            digest is dropped: the digest wins)
//
// Docker Hub is spelled "docker.io" and its official images get the
// "library/" namespace, as containerd does: "busybox" becomes
// "docker.io/library/busybox:latest" and "127.0.0.1:5000/app:v1" stays as it
// is. Errors wrap ErrInvalidReference.
func NormalizeRef(ref string) (string, error) {
	r, err := parseRef(ref)
	if err != nil {
		return "", err
	}
	return normalForm(r), nil
}

// parseRef parses ref with go-containerregistry's default (validating, not
// strict) rules: a missing registry means Docker Hub, a missing tag means
// "latest", and anything that is not a valid name fails.
func parseRef(ref string, opts ...name.Option) (name.Reference, error) {
	if ref == "" {
		return nil, fmt.Errorf("%w: empty reference (expected NAME[:TAG] or NAME@sha256:DIGEST)", ErrInvalidReference)
	}
	if strings.TrimSpace(ref) != ref || strings.ContainsAny(ref, " \t\r\n") {
		return nil, fmt.Errorf("%w %q: contains white space (expected NAME[:TAG] or NAME@sha256:DIGEST)", ErrInvalidReference, ref)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %s (expected NAME[:TAG] or NAME@sha256:DIGEST)", ErrInvalidReference, ref, reasonOf(ref, opts))
	}
	// ggcr checks characters only; the distribution grammar also wants each
	// path component to start and end with a letter or digit.
	for _, c := range strings.Split(r.Context().RepositoryStr(), "/") {
		if !pathComponentRE.MatchString(c) {
			return nil, fmt.Errorf("%w %q: repository component %q must start and end with a lowercase letter or digit, "+
				"separated only by '.', '_', '__' or dashes (expected NAME[:TAG] or NAME@sha256:DIGEST)", ErrInvalidReference, ref, c)
		}
	}
	return r, nil
}

// pathComponentRE is a repository path component in the distribution
// reference grammar.
var pathComponentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

// reasonOf says why ref does not parse. ggcr's ParseReference only echoes
// the input, so ask the parser for the form ref seems to be in.
func reasonOf(ref string, opts []name.Option) string {
	var err error
	if strings.Contains(ref, "@") {
		_, err = name.NewDigest(ref, opts...)
	} else {
		_, err = name.NewTag(ref, opts...)
	}
	if err == nil {
		return "unparseable"
	}
	return err.Error()
}

// normalForm renders r in the package's normal form (see NormalizeRef).
func normalForm(r name.Reference) string {
	repo := r.Context()
	reg := repo.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = dockerHub
	}
	base := reg + "/" + repo.RepositoryStr()
	switch t := r.(type) {
	case name.Digest:
		return base + "@" + t.DigestStr()
	case name.Tag:
		return base + ":" + t.TagStr()
	default:
		return base + ":" + r.Identifier()
	}
}

// registryOf returns the registry host of a normalized or parsed reference,
// spelled as in the normal form.
func registryOf(r name.Reference) string {
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		return dockerHub
	}
	return reg
}

var digestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)

// parseDigest validates a manifest digest as used by Get and RootFS. Only
// sha256 is accepted: digests become file names in the store.
func parseDigest(digest string) (v1.Hash, error) {
	if !digestRE.MatchString(digest) {
		return v1.Hash{}, fmt.Errorf("%w: digest %q is not a manifest digest (expected sha256: and 64 lowercase hex digits)", ErrInvalidReference, digest)
	}
	return v1.NewHash(digest)
}

// refFromAnnotations names an image from its index.json annotations.
// io.containerd.image.name wins; org.opencontainers.image.ref.name counts
// only if it is a full reference (it contains '/', ':' or '@'), because a
// bare word like "v1" or "latest" is a tag without a repository. It returns
// "" when the image has no usable name; the caller then uses the digest.
func refFromAnnotations(ann map[string]string) string {
	if n := ann[AnnotationContainerdName]; n != "" {
		if ref, err := NormalizeRef(n); err == nil {
			return ref
		}
	}
	if n := ann[AnnotationRefName]; n != "" && strings.ContainsAny(n, "/:@") {
		if ref, err := NormalizeRef(n); err == nil {
			return ref
		}
	}
	return ""
}
