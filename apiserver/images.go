package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image"
	"github.com/cube-platform/cube/store"
)

// maxImport bounds an uploaded image archive.
const maxImport = 8 << 30

// imageKey turns a normalized reference into one key component.
func imageKey(ref string) string { return url.PathEscape(ref) }

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
	imported, err := s.cfg.Images.Import(r.Context(), io.LimitReader(r.Body, maxImport))
	if err != nil {
		writeError(w, fmt.Errorf("import image: %w", err))
		return
	}
	out := v1.List[*v1.Image]{Items: []*v1.Image{}}
	for _, img := range imported {
		rec, err := s.recordImage(r.Context(), tenant, img)
		if err != nil {
			writeError(w, err)
			return
		}
		out.Items = append(out.Items, rec)
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
	img, err := s.cfg.Images.Pull(r.Context(), req.Image, image.PullOptions{Insecure: req.Insecure})
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
