package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/store"
)

// maxImport bounds an uploaded image archive.
const maxImport = 8 << 30

// DefaultImageStorage is a tenant's image-storage quota when its record
// sets none: what its blobs and unpacked images may take on disk. The
// admin tenant has no limit.
const DefaultImageStorage = 10 << 30

// imageKey turns a normalized reference into one key component.
func imageKey(ref string) string { return url.PathEscape(ref) }

// imageOwner is who an import or pull is for, with the tenant's quota.
func (s *Server) imageOwner(ctx context.Context, tenant string) (image.Owner, error) {
	if tenant == AdminTenant {
		return image.Owner{Tenant: tenant}, nil
	}
	o := image.Owner{Tenant: tenant, Quota: DefaultImageStorage}
	t, err := s.store.GetTenant(ctx, tenant)
	if errors.Is(err, errdefs.ErrNotFound) {
		return o, nil
	}
	if err != nil {
		return image.Owner{}, err
	}
	if t.ImageStorage != "" {
		q, err := v1.ParseMemory(t.ImageStorage)
		if err != nil || q <= 0 {
			return image.Owner{}, fmt.Errorf("tenant %s: image storage %q: %w", tenant, t.ImageStorage, errdefs.ErrInvalid)
		}
		o.Quota = q
	}
	return o, nil
}

// pullGuard is what a tenant's pull may dial: nil (anything) for the
// admin; for any other tenant, not loopback, link-local, this host, the
// nodes or the instance network, unless the operator allowed the
// registry.
func (s *Server) pullGuard(ctx context.Context, tenant string) *image.NetGuard {
	if tenant == AdminTenant {
		return nil
	}
	g := &image.NetGuard{Allow: s.cfg.RegistryAllow, Deny: append([]netip.Prefix(nil), s.cfg.RegistryDeny...)}
	listen := s.cfg.Listen
	if s.ln != nil {
		listen = s.ln.Addr().String()
	}
	if host, _, err := net.SplitHostPort(listen); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil {
			g.Deny = append(g.Deny, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
		}
	}
	if nodes, _, err := s.store.Nodes().List(ctx, s.store.Nodes().Prefix()); err == nil {
		for _, n := range nodes {
			host, _, err := net.SplitHostPort(n.Status.Address)
			if err != nil {
				host = n.Status.Address
			}
			if ip, err := netip.ParseAddr(host); err == nil {
				g.Deny = append(g.Deny, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			}
		}
	}
	return g
}

// recordImage makes ref → digest visible to the tenant (create or update).
func (s *Server) recordImage(ctx context.Context, tenant string, img image.Image) (*v1.Image, error) {
	imgs := s.store.Images()
	key := imgs.Key(tenant, imageKey(img.Ref))
	rec := &v1.Image{
		APIVersion: v1.Version, Kind: "Image",
		Metadata: v1.ObjectMeta{Name: img.Ref, Tenant: tenant, UID: newUID(), CreationTimestamp: s.cfg.Now().UTC()},
		Digest:   img.Digest, Size: img.Size,
	}
	err := imgs.Create(ctx, key, rec)
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		rec, err = imgs.Mutate(ctx, key, func(cur *v1.Image) error {
			cur.Digest, cur.Size = img.Digest, img.Size
			return nil
		})
	}
	return rec, err
}

func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	if err := requireRole(r, store.RoleTenant); err != nil {
		writeError(w, err)
		return
	}
	tenant := callerFrom(r.Context()).Tenant
	owner, err := s.imageOwner(r.Context(), tenant)
	if err != nil {
		writeError(w, err)
		return
	}
	imported, ierr := s.cfg.Images.Import(r.Context(), owner, io.LimitReader(r.Body, maxImport))
	// Images stored before a failure are the tenant's (and charged):
	// record them either way.
	out := v1.List[*v1.Image]{Items: []*v1.Image{}}
	for _, img := range imported {
		rec, err := s.recordImage(r.Context(), tenant, img)
		if err != nil {
			writeError(w, err)
			return
		}
		out.Items = append(out.Items, rec)
	}
	if ierr != nil {
		writeError(w, fmt.Errorf("import image: %w", ierr))
		return
	}
	s.log.Info("images imported", "tenant", tenant, "count", len(out.Items))
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) pullImage(w http.ResponseWriter, r *http.Request) {
	if err := requireRole(r, store.RoleTenant); err != nil {
		writeError(w, err)
		return
	}
	tenant := callerFrom(r.Context()).Tenant
	var req v1.PullRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if _, err := image.NormalizeRef(req.Image); err != nil {
		writeError(w, &v1.FieldError{Field: "image", Reason: err.Error()})
		return
	}
	owner, err := s.imageOwner(r.Context(), tenant)
	if err != nil {
		writeError(w, err)
		return
	}
	opts := image.PullOptions{Insecure: req.Insecure, Guard: s.pullGuard(r.Context(), tenant)}
	img, err := s.cfg.Images.Pull(r.Context(), owner, req.Image, opts)
	if err != nil {
		writeError(w, fmt.Errorf("pull %s: %w", req.Image, err))
		return
	}
	rec, err := s.recordImage(r.Context(), tenant, img)
	if err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("image pulled", "tenant", tenant, "ref", img.Ref, "digest", img.Digest)
	writeJSON(w, http.StatusCreated, rec)
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	if err := requireRole(r, store.RoleTenant); err != nil {
		writeError(w, err)
		return
	}
	imgs := s.store.Images()
	prefix := imgs.Prefix(callerFrom(r.Context()).Tenant)
	p, err := parsePaging(r, prefix)
	if err != nil {
		writeError(w, err)
		return
	}
	if p.paged {
		// Pages come in key order: the escaped reference's order, which
		// is not always the name order of an unpaged list.
		page, err := listPage(r, imgs, prefix, p, nil)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v1.List[*v1.Image]{Items: page.Items, ResourceVersion: fmt.Sprint(page.Revision), Continue: continueOf(page)})
		return
	}
	items, rev, err := imgs.List(r.Context(), prefix)
	if err != nil {
		writeError(w, err)
		return
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Metadata.Name < items[j].Metadata.Name })
	writeJSON(w, http.StatusOK, v1.List[*v1.Image]{Items: items, ResourceVersion: fmt.Sprint(rev)})
}
