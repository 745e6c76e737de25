package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// On-disk layout of a local store (root is NewLocalStore's argument):
//
//	root/oci/                 an OCI image layout (readable by skopeo/umoci):
//	root/oci/oci-layout         {"imageLayoutVersion":"1.0.0"}
//	root/oci/index.json         one entry per stored manifest, named by annotations
//	root/oci/blobs/sha256/HEX   manifests, configs and layers, verified on write
//	root/images/HEX.json      the Image record of manifest sha256:HEX; its
//	                          presence is what makes an image "stored"
//	root/rootfs/HEX/          the unpacked root filesystem of manifest sha256:HEX;
//	                          it only ever appears complete (atomic rename)
//	root/block/HEX.erofs      the read-only block image of rootfs/HEX (for VMs);
//	                          it only ever appears complete (atomic rename)
//	root/owners/HEX.json      what tenant HEX (hex of its name) owns (owner.go)
//	root/tmp/                 staging for imports, downloads and unpacks;
//	                          emptied by NewLocalStore
//
// One process owns a root at a time.
const (
	ociDirName    = "oci"
	imagesDirName = "images"
	rootfsDirName = "rootfs"
	blockDirName  = "block"
	tmpDirName    = "tmp"
)

type localStore struct {
	root      string
	ociDir    string
	blobDir   string
	imagesDir string
	rootfsDir string
	blockDir  string
	tmpDir    string
	ownersDir string
	opts      Options
	log       *slog.Logger

	// transport and insecureTransport carry registry traffic; the insecure
	// one skips TLS verification (PullOptions.Insecure).
	transport         *http.Transport
	insecureTransport *http.Transport

	// unpacks counts unpacks started, for tests and logs.
	unpacks atomic.Int64
	// blockBuilds counts block image builds started, for tests.
	blockBuilds atomic.Int64

	// mu serializes commits (index.json and image records) and guards flights.
	mu sync.Mutex
	// flights are the unpacks under way, keyed by manifest digest hex.
	// Protected by mu.
	flights map[string]*flight
	// blockFlights are the block image builds under way, keyed like
	// flights. Protected by mu.
	blockFlights map[string]*flight

	// quotaMu guards owners; it is taken after mu, never before.
	quotaMu sync.Mutex
	// owners are the loaded owner records by tenant. Protected by quotaMu.
	owners map[string]*ownerState
}

var _ Store = (*localStore)(nil)

// NewLocalStore opens (creating if needed) a store under root with
// DefaultOptions. See NewLocalStoreWithOptions.
func NewLocalStore(root string, log *slog.Logger) (Store, error) {
	return NewLocalStoreWithOptions(root, log, DefaultOptions())
}

// NewLocalStoreWithOptions opens (creating if needed) a store under root.
// Leftovers of an interrupted import, pull or unpack are deleted. log may be
// nil.
func NewLocalStoreWithOptions(root string, log *slog.Logger, opts Options) (Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("image store %q: %w", root, err)
	}
	s := &localStore{
		root:         abs,
		ociDir:       filepath.Join(abs, ociDirName),
		blobDir:      filepath.Join(abs, ociDirName, "blobs", "sha256"),
		imagesDir:    filepath.Join(abs, imagesDirName),
		rootfsDir:    filepath.Join(abs, rootfsDirName),
		blockDir:     filepath.Join(abs, blockDirName),
		tmpDir:       filepath.Join(abs, tmpDirName),
		ownersDir:    filepath.Join(abs, ownersDirName),
		opts:         opts,
		log:          log.With("component", "image"),
		flights:      make(map[string]*flight),
		blockFlights: make(map[string]*flight),
		owners:       make(map[string]*ownerState),
	}
	s.transport, s.insecureTransport = newTransports(opts)
	// 0711: container runtimes and user-namespaced mounters can traverse to
	// a rootfs without being able to list the store.
	for _, d := range []struct {
		path string
		perm os.FileMode
	}{
		{s.root, 0o711}, {s.ociDir, 0o700}, {s.blobDir, 0o700},
		{s.imagesDir, 0o700}, {s.rootfsDir, 0o711}, {s.ownersDir, 0o700},
		{s.blockDir, 0o711},
	} {
		if err := os.MkdirAll(d.path, d.perm); err != nil {
			return nil, fmt.Errorf("image store %s: %w", abs, err)
		}
	}
	// A crash leaves only staging debris in tmp; nothing there is referenced.
	if err := os.RemoveAll(s.tmpDir); err != nil {
		return nil, fmt.Errorf("image store %s: clean %s: %w", abs, s.tmpDir, err)
	}
	if err := os.Mkdir(s.tmpDir, 0o700); err != nil {
		return nil, fmt.Errorf("image store %s: %w", abs, err)
	}
	if err := s.initLayout(); err != nil {
		return nil, fmt.Errorf("image store %s: %w", abs, err)
	}
	return s, nil
}

// initLayout writes oci-layout and an empty index.json when missing.
func (s *localStore) initLayout() error {
	if _, err := os.Stat(filepath.Join(s.ociDir, "oci-layout")); errors.Is(err, fs.ErrNotExist) {
		if err := writeFileAtomic(s.ociDir, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(s.ociDir, "index.json")); errors.Is(err, fs.ErrNotExist) {
		return s.writeIndex(&v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}})
	}
	return nil
}

func (s *localStore) recordPath(h v1.Hash) string {
	return filepath.Join(s.imagesDir, h.Hex+".json")
}

// Get returns a stored image by manifest digest.
func (s *localStore) Get(ctx context.Context, digest string) (Image, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return Image{}, err
	}
	return s.get(h)
}

func (s *localStore) get(h v1.Hash) (Image, error) {
	b, err := os.ReadFile(s.recordPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		return Image{}, fmt.Errorf("%w: %s is not stored on this node (import or pull it first)", ErrNotFound, h)
	}
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", h, err)
	}
	var img Image
	if err := json.Unmarshal(b, &img); err != nil {
		return Image{}, fmt.Errorf("image %s: corrupt record %s: %w", h, s.recordPath(h), err)
	}
	return img, nil
}

// List returns every stored image, sorted by Ref then Digest.
func (s *localStore) List(ctx context.Context) ([]Image, error) {
	ents, err := os.ReadDir(s.imagesDir)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	imgs := make([]Image, 0, len(ents))
	for _, e := range ents {
		hex, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		h, err := parseDigest("sha256:" + hex)
		if err != nil {
			continue
		}
		img, err := s.get(h)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		imgs = append(imgs, img)
	}
	slices.SortFunc(imgs, func(a, b Image) int {
		if c := strings.Compare(a.Ref, b.Ref); c != 0 {
			return c
		}
		return strings.Compare(a.Digest, b.Digest)
	})
	return imgs, nil
}

// commitLocked makes an image visible: its blobs are already in place, so
// add it to index.json and write its record (the commit point). The record
// carries no name: names belong to tenants and live with the caller.
// Preconditions: mu held.
func (s *localStore) commitLocked(img Image, desc v1.Descriptor) error {
	img.Ref = img.Digest
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d v1.Descriptor) bool { return d.Digest == desc.Digest })
	desc.Annotations = nil
	idx.Manifests = append(idx.Manifests, desc)
	if err := s.writeIndex(idx); err != nil {
		return err
	}
	b, err := json.MarshalIndent(img, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.imagesDir, desc.Digest.Hex+".json", b, 0o600)
}

// readIndex reads index.json. Preconditions: mu held (or no writer yet).
func (s *localStore) readIndex() (*v1.IndexManifest, error) {
	f, err := os.Open(filepath.Join(s.ociDir, "index.json"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	idx, err := v1.ParseIndexManifest(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return idx, nil
}

// writeIndex replaces index.json. Preconditions: mu held (or no writer yet).
func (s *localStore) writeIndex(idx *v1.IndexManifest) error {
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.ociDir, "index.json", b, 0o644)
}

// writeFileAtomic writes dir/name so that readers and crashes see either the
// old or the new content, never a mix.
func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes renames and creations in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ctxReader fails reads once ctx is done, bounding long copies.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
