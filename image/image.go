// Package image imports and pulls OCI images into a content-addressed store
// on local disk and unpacks each image once into a shared, read-only root
// filesystem. It knows nothing of the API or etcd: callers keep their own
// name→digest records per tenant and address images here by digest.
//
// Archives, registries and layers are untrusted input: blobs are verified
// against their digests before they are stored, layers against the DiffIDs
// of their config, and layers are unpacked without ever following a
// symlink (see unpack.go for the rules).
//
// The store is shared by tenants who do not trust each other, so every
// import and pull is made for an Owner (owner.go): a tenant may use a blob
// only if it supplied the blob's bytes, now or before, and everything it
// stores counts against its image-storage quota while it is written. No
// answer depends on what other tenants stored.
//
// The package must not depend on the control plane (store, apiserver,
// scheduler, controller), the node agent, sandbox backends or networking;
// of Cube it imports only errdefs. Its test helpers live in imagetest,
// which does not import this package.
//
// NewLocalStore is the implementation (store.go documents the on-disk
// layout); NormalizeRef gives references their normal form.
package image

import (
	"context"
	"io"
	"time"

	"github.com/cube-platform/cube/errdefs"
)

// Errors callers test with errors.Is. Each one also matches its class in
// package errdefs (errors.Is(err, errdefs.ErrNotFound) holds for an
// ErrNotFound), so the API edge maps them to a status without knowing this
// package.
var (
	// ErrNotFound: no such image (by ref or digest) in the store or registry.
	ErrNotFound error = &classError{"image not found", errdefs.ErrNotFound}
	// ErrInvalidReference: the reference (or digest) does not parse.
	ErrInvalidReference error = &classError{"invalid image reference", errdefs.ErrInvalid}
	// ErrUnsafeLayer: a layer tries to escape the rootfs, create devices or
	// exceed the unpack size limits.
	ErrUnsafeLayer error = &classError{"unsafe image layer", errdefs.ErrInvalid}
	// ErrInvalidArchive: the tar is neither an OCI layout nor a docker-archive,
	// or it is unsafe, corrupt or too large.
	ErrInvalidArchive error = &classError{"invalid image archive", errdefs.ErrInvalid}
	// ErrStorageQuota: the owner's image-storage quota would be exceeded.
	ErrStorageQuota error = &classError{"image storage quota exceeded", errdefs.ErrQuotaExceeded}
	// ErrRegistryRefused: the registry's address is one a restricted pull
	// may not reach (see NetGuard).
	ErrRegistryRefused error = &classError{"registry address refused", errdefs.ErrForbidden}
)

// classError is a sentinel with its own message that unwraps to an errdefs
// class.
type classError struct {
	msg   string
	class error
}

func (e *classError) Error() string { return e.msg }
func (e *classError) Unwrap() error { return e.class }

// Image is one stored image.
type Image struct {
	// Ref is the normalized reference (see NormalizeRef), e.g.
	// "docker.io/library/busybox:latest" or "127.0.0.1:5000/app:v1", as
	// the caller of Import or Pull named it. An image imported without a
	// usable name has its Digest as Ref. Names belong to tenants, so the
	// store keeps none: Get and List always give the Digest as Ref.
	Ref string `json:"ref"`
	// Digest is the manifest digest ("sha256:..."): the image's identity.
	Digest string `json:"digest"`
	// Size is the sum of compressed layer sizes in bytes.
	Size int64 `json:"size"`
	// Created is the image config's creation time (zero when absent).
	Created time.Time `json:"created,omitzero"`
	Config  Config    `json:"config"`
	// Unpacked is what the image was charged for its root filesystem:
	// the uncompressed layer sizes plus 16 KiB per file (a host inode's
	// share of disk), and so also a bound its unpack cannot exceed. Zero
	// for images stored before it was recorded.
	Unpacked int64 `json:"unpacked,omitempty"`
}

// Config is the part of the OCI image config a runtime needs.
type Config struct {
	Entrypoint   []string `json:"entrypoint,omitempty"`
	Cmd          []string `json:"cmd,omitempty"`
	Env          []string `json:"env,omitempty"`
	WorkingDir   string   `json:"workingDir,omitempty"`
	User         string   `json:"user,omitempty"`
	ExposedPorts []string `json:"exposedPorts,omitempty"` // "80/tcp"
}

// PullOptions tune a registry pull.
type PullOptions struct {
	// Insecure allows plain HTTP (and unverified TLS) to the registry.
	Insecure bool
	// Progress, when set, receives human-readable progress lines.
	Progress io.Writer
	// Guard, when set, vets every address the pull dials, redirects
	// included; nil dials anything (the admin's pulls).
	Guard *NetGuard
}

// Store is the node-local image store.
type Store interface {
	// Import reads an OCI image-layout tar or a `docker save` tar and stores
	// every image in it for owner; it returns what it stored.
	Import(ctx context.Context, owner Owner, r io.Reader) ([]Image, error)
	// Pull fetches ref (linux/amd64) from its registry for owner.
	Pull(ctx context.Context, owner Owner, ref string, opts PullOptions) (Image, error)
	// Usage returns the image-storage bytes charged to tenant.
	Usage(ctx context.Context, tenant string) (int64, error)
	// ForgetOwner drops everything tenant owns (for a removed tenant), so
	// a new tenant of the same name owns nothing of the old one's. Blobs
	// stay for other owners.
	ForgetOwner(ctx context.Context, tenant string) error
	// Get returns a stored image by digest, whoever stored it. Only trusted
	// callers (the node agent) may use it: tenants reach images through
	// their own name records.
	Get(ctx context.Context, digest string) (Image, error)
	// List returns every stored image (for the node agent).
	List(ctx context.Context) ([]Image, error)
	// RootFS unpacks the image once (safely) and returns the path of its
	// shared read-only root filesystem. Concurrent calls unpack once.
	RootFS(ctx context.Context, digest string) (string, error)
	// BlockImage returns the path of the image's shared read-only block
	// image (built from RootFS once; concurrent calls build once) and its
	// filesystem type (FSTypeEROFS), for a VM's root drive.
	BlockImage(ctx context.Context, digest string) (path, fstype string, err error)
}
