package image

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cube-platform/cube/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Owner is the tenant an import or pull is made for.
type Owner struct {
	// Tenant names the owner; it must not be empty.
	Tenant string
	// Quota caps the bytes charged to the tenant (see below); 0 means no
	// limit (the admin tenant).
	Quota int64
}

// Ownership and quota.
//
// Blobs are content-addressed and stored once, but a tenant may use a blob
// only once it has supplied the blob's bytes itself (in an archive or from a
// registry), or it owns it from an earlier import or pull. A manifest that
// names a layer the tenant does not own and does not carry is refused with
// the same error whether or not any other tenant stored that layer, and
// nothing on that path looks at other tenants' blobs: there is no existence
// oracle. Bytes a tenant supplies are verified (digest, size, DiffID) and
// counted even when the blob is already stored.
//
// A tenant is charged, once per tenant, for every blob it owns (compressed
// size) and for every image it owns (the uncompressed size of its layers,
// which bounds its root filesystem). A blob or image shared by two tenants
// counts in full for each of them. While an import or pull runs, every byte
// it writes (the extracted archive, downloaded blobs, decompressed layers)
// is reserved against the quota as it is written, and the operation fails
// with ErrStorageQuota at the bound, removing what it wrote.
//
// Records live in root/owners/HEX(tenant).json and are rewritten
// atomically under mu.

const ownersDirName = "owners"

// ownerRecord is what one tenant owns.
type ownerRecord struct {
	// Blobs by digest string.
	Blobs map[string]ownedBlob `json:"blobs"`
	// Images by manifest digest string: the uncompressed size of their
	// layers.
	Images map[string]int64 `json:"images"`
}

type ownedBlob struct {
	Size int64 `json:"size"`
	// DiffID and Unpacked are set for layers: the digest and length of the
	// uncompressed stream.
	DiffID   string `json:"diffID,omitempty"`
	Unpacked int64  `json:"unpacked,omitempty"`
}

// ownerState is a loaded ownerRecord with its derived usage.
type ownerState struct {
	rec ownerRecord
	// used is the sum charged by rec.
	used int64
	// reserved is what running imports and pulls have written so far.
	// Protected by localStore.quotaMu.
	reserved int64
}

func (r *ownerRecord) usage() int64 {
	var n int64
	for _, b := range r.Blobs {
		n += b.Size
	}
	for _, u := range r.Images {
		n += u
	}
	return n
}

func (s *localStore) ownerPath(tenant string) string {
	return filepath.Join(s.ownersDir, hex.EncodeToString([]byte(tenant))+".json")
}

// owner returns the loaded state of tenant. Preconditions: quotaMu held.
func (s *localStore) owner(tenant string) (*ownerState, error) {
	if st, ok := s.owners[tenant]; ok {
		return st, nil
	}
	st := &ownerState{rec: ownerRecord{Blobs: map[string]ownedBlob{}, Images: map[string]int64{}}}
	b, err := os.ReadFile(s.ownerPath(tenant))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("image owner record: %w", err)
	default:
		if err := json.Unmarshal(b, &st.rec); err != nil {
			return nil, fmt.Errorf("image owner record %s: %w", s.ownerPath(tenant), err)
		}
		if st.rec.Blobs == nil {
			st.rec.Blobs = map[string]ownedBlob{}
		}
		if st.rec.Images == nil {
			st.rec.Images = map[string]int64{}
		}
	}
	st.used = st.rec.usage()
	s.owners[tenant] = st
	return st, nil
}

// ForgetOwner implements Store.
func (s *localStore) ForgetOwner(ctx context.Context, tenant string) error {
	if tenant == "" {
		return fmt.Errorf("%w: forget an image owner: no tenant", errdefs.ErrInvalid)
	}
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	if err := os.Remove(s.ownerPath(tenant)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forget image owner %s: %w", tenant, err)
	}
	delete(s.owners, tenant)
	return nil
}

// Usage returns the bytes charged to tenant.
func (s *localStore) Usage(ctx context.Context, tenant string) (int64, error) {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	st, err := s.owner(tenant)
	if err != nil {
		return 0, err
	}
	return st.used, nil
}

// ownedBlobOf reports what owner holds of blob h.
func (s *localStore) ownedBlobOf(owner Owner, h v1.Hash) (ownedBlob, bool, error) {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	st, err := s.owner(owner.Tenant)
	if err != nil {
		return ownedBlob{}, false, err
	}
	b, ok := st.rec.Blobs[h.String()]
	return b, ok, nil
}

// ownsImage reports whether owner owns manifest h.
func (s *localStore) ownsImage(owner Owner, h v1.Hash) bool {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	st, err := s.owner(owner.Tenant)
	if err != nil {
		return false
	}
	_, ok := st.rec.Images[h.String()]
	return ok
}

// reservation counts what one import or pull writes against its owner's
// quota. Its methods are safe for concurrent use (parallel downloads).
type reservation struct {
	s     *localStore
	owner Owner
	// n is what this reservation holds. Protected by s.quotaMu.
	n int64
}

func (s *localStore) newReservation(owner Owner) (*reservation, error) {
	if owner.Tenant == "" {
		return nil, fmt.Errorf("%w: an image import or pull needs an owner", errdefs.ErrInvalid)
	}
	return &reservation{s: s, owner: owner}, nil
}

// add reserves n more bytes, or fails with ErrStorageQuota.
func (r *reservation) add(n int64) error {
	r.s.quotaMu.Lock()
	defer r.s.quotaMu.Unlock()
	st, err := r.s.owner(r.owner.Tenant)
	if err != nil {
		return err
	}
	if q := r.owner.Quota; q > 0 && st.used+st.reserved+n > q {
		return fmt.Errorf("%w: tenant %s may store %s of images and has %s stored; this image needs more (ask the admin to raise the tenant's image storage)",
			ErrStorageQuota, r.owner.Tenant, humanSize(q), humanSize(st.used))
	}
	st.reserved += n
	r.n += n
	return nil
}

// sub gives back n reserved bytes (what a grant just made owned).
func (r *reservation) sub(n int64) {
	r.s.quotaMu.Lock()
	defer r.s.quotaMu.Unlock()
	n = min(n, r.n)
	if st, ok := r.s.owners[r.owner.Tenant]; ok {
		st.reserved -= n
	}
	r.n -= n
}

// release gives back everything reserved.
func (r *reservation) release() {
	r.s.quotaMu.Lock()
	defer r.s.quotaMu.Unlock()
	if st, ok := r.s.owners[r.owner.Tenant]; ok {
		st.reserved -= r.n
	}
	r.n = 0
}

// chargeWriter reserves every byte written through it before passing it on.
type chargeWriter struct {
	res *reservation
	w   interface{ Write([]byte) (int, error) }
}

func (c chargeWriter) Write(p []byte) (int, error) {
	if err := c.res.add(int64(len(p))); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// grantCheck fails with ErrStorageQuota unless res's owner may own blobs
// and image (its manifest digest and uncompressed size) on top of what it
// owns. What other operations of the tenant hold reserved counts; res's own
// reservation is what is being granted.
func (s *localStore) grantCheck(res *reservation, blobs map[v1.Hash]ownedBlob, image v1.Hash, unpacked int64) error {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	_, err := s.grantDelta(res, blobs, image, unpacked)
	return err
}

// grantDelta returns the bytes a grant adds, checked against the quota.
// Preconditions: quotaMu held.
func (s *localStore) grantDelta(res *reservation, blobs map[v1.Hash]ownedBlob, image v1.Hash, unpacked int64) (*ownerState, error) {
	owner := res.owner
	st, err := s.owner(owner.Tenant)
	if err != nil {
		return nil, err
	}
	var delta int64
	for h, b := range blobs {
		if _, ok := st.rec.Blobs[h.String()]; !ok {
			delta += b.Size
		}
	}
	if _, ok := st.rec.Images[image.String()]; !ok {
		delta += unpacked
	}
	if q := owner.Quota; q > 0 && st.used+(st.reserved-res.n)+delta > q {
		return nil, fmt.Errorf("%w: tenant %s may store %s of images and has %s stored; this image needs %s more (ask the admin to raise the tenant's image storage)",
			ErrStorageQuota, owner.Tenant, humanSize(q), humanSize(st.used), humanSize(delta))
	}
	return st, nil
}

// grant records that res's owner now owns blobs and image and persists the
// record (see grantCheck). Preconditions: mu held, the blobs in place.
func (s *localStore) grant(res *reservation, blobs map[v1.Hash]ownedBlob, image v1.Hash, unpacked int64) error {
	s.quotaMu.Lock()
	defer s.quotaMu.Unlock()
	st, err := s.grantDelta(res, blobs, image, unpacked)
	if err != nil {
		return err
	}
	rec := ownerRecord{Blobs: make(map[string]ownedBlob, len(st.rec.Blobs)+len(blobs)), Images: make(map[string]int64, len(st.rec.Images)+1)}
	for k, v := range st.rec.Blobs {
		rec.Blobs[k] = v
	}
	for k, v := range st.rec.Images {
		rec.Images[k] = v
	}
	for h, b := range blobs {
		rec.Blobs[h.String()] = b
	}
	rec.Images[image.String()] = unpacked
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.ownersDir, filepath.Base(s.ownerPath(res.owner.Tenant)), b, 0o600); err != nil {
		return err
	}
	st.rec = rec
	st.used = rec.usage()
	return nil
}
