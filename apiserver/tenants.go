package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

// createTenant makes a tenant and a first token for it; only the admin
// may. A tenant that exists is a 409: creating it again must never reset
// its quotas or grants (`cube tenant update` changes them, `cube token
// create` mints more tokens). The plaintext token is in this answer only.
func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) {
	if err := requireAdmin(r, "create tenants"); err != nil {
		writeError(w, err)
		return
	}
	var req v1.TenantRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := req.Validate(); err != nil {
		writeError(w, err)
		return
	}
	// The instances of a removed tenant of this name may still be
	// stopping: a new tenant must not inherit them (or their logs).
	if n, _, err := s.store.CountInstances(r.Context(), req.Name); err != nil {
		writeError(w, err)
		return
	} else if n > 0 {
		writeError(w, fmt.Errorf("%w: a removed tenant %q still has %d instances stopping: create it again once they are gone", errdefs.ErrConflict, req.Name, n))
		return
	}
	ttl, _ := v1.ParseTTL(req.TokenTTL)
	now := s.cfg.Now().UTC()
	t := store.Tenant{Name: req.Name, Weight: req.Weight, Quotas: req.Quotas, Created: now,
		AllowPriorities: req.AllowPriorities, AllowTolerations: req.AllowTolerations, MaxInstances: req.MaxInstances,
		ImageStorage: req.ImageStorage, AllowRuntimes: grant(nil, req.AllowRuntimes, nil)}
	if err := s.store.CreateTenant(r.Context(), t); err != nil {
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			err = fmt.Errorf("%w: tenant %q already exists: change it with `cube tenant update %s`, or mint another token with `cube token create --tenant %s`", errdefs.ErrAlreadyExists, req.Name, req.Name, req.Name)
		}
		writeError(w, err)
		return
	}
	tok := store.Token{Tenant: req.Name, Role: store.RoleTenant, Scope: store.ScopeTenant, Created: now}
	if ttl > 0 {
		tok.Expires = now.Add(ttl)
	}
	plain, err := s.store.CreateToken(r.Context(), tok)
	if err != nil {
		writeError(w, err)
		return
	}
	id := store.TokenID(plain)
	s.log.Info("tenant created", "tenant", req.Name, "token", id)
	out := v1.TenantToken{Name: req.Name, Token: plain, ID: id}
	if !tok.Expires.IsZero() {
		out.Expires = &tok.Expires
	}
	writeJSON(w, http.StatusCreated, out)
}

// updateTenant changes only the fields the request sets.
func (s *Server) updateTenant(w http.ResponseWriter, r *http.Request) {
	if err := requireAdmin(r, "change tenants"); err != nil {
		writeError(w, err)
		return
	}
	var u v1.TenantUpdate
	if err := decodeBody(r, &u); err != nil {
		writeError(w, err)
		return
	}
	if err := u.Validate(); err != nil {
		writeError(w, err)
		return
	}
	name := r.PathValue("name")
	t, err := s.store.UpdateTenant(r.Context(), name, func(t *store.Tenant) error {
		if u.Weight != nil {
			t.Weight = *u.Weight
		}
		if u.MaxInstances != nil {
			t.MaxInstances = *u.MaxInstances
		}
		if u.ImageStorage != nil {
			t.ImageStorage = *u.ImageStorage
		}
		for band, q := range u.Quotas {
			if t.Quotas == nil {
				t.Quotas = map[string]v1.Quota{}
			}
			t.Quotas[band] = q
		}
		for _, band := range u.RemoveQuotas {
			delete(t.Quotas, band)
		}
		t.AllowPriorities = grant(t.AllowPriorities, u.AllowPriorities, u.DenyPriorities)
		t.AllowTolerations = grant(t.AllowTolerations, u.AllowTolerations, u.DenyTolerations)
		t.AllowRuntimes = grant(t.AllowRuntimes, u.AllowRuntimes, u.DenyRuntimes)
		return nil
	})
	if err != nil {
		writeError(w, tenantNotFound(err, name))
		return
	}
	s.log.Info("tenant updated", "tenant", name)
	s.writeTenant(w, r, t)
}

// grant adds allow to have and removes deny, keeping the result sorted.
func grant(have, allow, deny []string) []string {
	out := slices.Clone(have)
	for _, a := range allow {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	out = slices.DeleteFunc(out, func(x string) bool { return slices.Contains(deny, x) })
	sort.Strings(out)
	return out
}

func tenantNotFound(err error, name string) error {
	if errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("%w: tenant %q not found (list tenants with `cube tenant ls`)", errdefs.ErrNotFound, name)
	}
	return err
}

// getTenant answers the admin for any tenant, and a tenant for itself
// (its grants and quotas); another tenant is the same 404 as none.
func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	c := callerFrom(r.Context())
	if !isAdmin(c) && (c.Role != store.RoleTenant || c.Tenant != name) {
		writeError(w, tenantNotFound(errdefs.ErrNotFound, name))
		return
	}
	t, err := s.store.GetTenant(r.Context(), name)
	if err != nil {
		writeError(w, tenantNotFound(err, name))
		return
	}
	s.writeTenant(w, r, t)
}

func (s *Server) writeTenant(w http.ResponseWriter, r *http.Request, t store.Tenant) {
	out, err := s.tenantView(r, t)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) tenantView(r *http.Request, t store.Tenant) (*v1.Tenant, error) {
	n, _, err := s.store.CountInstances(r.Context(), t.Name)
	if err != nil {
		return nil, err
	}
	return &v1.Tenant{APIVersion: v1.Version, Kind: "Tenant",
		Metadata: v1.ObjectMeta{Name: t.Name, CreationTimestamp: t.Created},
		Spec: v1.TenantSpec{Weight: t.Weight, Quotas: t.Quotas, AllowPriorities: t.AllowPriorities,
			AllowTolerations: t.AllowTolerations, AllowRuntimes: t.AllowRuntimes, MaxInstances: t.MaxInstances, ImageStorage: t.ImageStorage},
		Status: v1.TenantStatus{Instances: int(n), MaxInstances: s.maxInstances(t), Runtimes: allowedRuntimes(t)},
	}, nil
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	if err := requireAdmin(r, "list tenants"); err != nil {
		writeError(w, err)
		return
	}
	ts, err := s.store.ListTenants(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := v1.List[*v1.Tenant]{Items: []*v1.Tenant{}}
	for _, t := range ts {
		v, err := s.tenantView(r, t)
		if err != nil {
			writeError(w, err)
			return
		}
		out.Items = append(out.Items, v)
	}
	sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].Metadata.Name < out.Items[j].Metadata.Name })
	writeJSON(w, http.StatusOK, out)
}

// deleteTenant removes a tenant and revokes its tokens at once. While the
// tenant has instances it refuses (409) unless force=true, which also
// deletes them as `cube rm --force` would: nodes stop what runs.
func (s *Server) deleteTenant(w http.ResponseWriter, r *http.Request) {
	if err := requireAdmin(r, "remove tenants"); err != nil {
		writeError(w, err)
		return
	}
	name := r.PathValue("name")
	if name == AdminTenant {
		writeError(w, fmt.Errorf("%w: the %s tenant cannot be removed", errdefs.ErrForbidden, AdminTenant))
		return
	}
	if _, err := s.store.GetTenant(r.Context(), name); err != nil {
		writeError(w, tenantNotFound(err, name))
		return
	}
	insts := s.store.Instances()
	items, _, err := insts.List(r.Context(), insts.Prefix(name))
	if err != nil {
		writeError(w, err)
		return
	}
	if len(items) > 0 && r.URL.Query().Get("force") != "true" {
		writeError(w, fmt.Errorf("%w: tenant %q has %d instances: remove them first, or remove the tenant with `cube tenant rm --force %s`, which deletes them", errdefs.ErrConflict, name, len(items), name))
		return
	}
	// Tokens first: from here on nothing the tenant sends is accepted.
	n, err := s.store.RevokeTenantTokens(r.Context(), name)
	if err != nil {
		writeError(w, err)
		return
	}
	alive, err := s.store.AliveNodes(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	now := s.cfg.Now().UTC()
	for _, in := range items {
		key := insts.Key(name, in.Metadata.Name)
		if _, ok := alive[in.Status.Node]; in.Status.Node == "" || !ok {
			err = insts.Delete(r.Context(), key, "")
		} else {
			_, err = insts.Mutate(r.Context(), key, func(in *v1.Instance) error {
				if in.Metadata.DeletionTimestamp == nil {
					in.Metadata.DeletionTimestamp = &now
				}
				return nil
			})
		}
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			writeError(w, fmt.Errorf("delete instance %s of tenant %s: %w", in.Metadata.Name, name, err))
			return
		}
	}
	if err := s.store.DeleteTenant(r.Context(), name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		writeError(w, err)
		return
	}
	if err := s.store.DeleteTenantObjects(r.Context(), name); err != nil {
		writeError(w, err)
		return
	}
	// Its blobs too: a tenant made later under the name owns none of them.
	if err := s.cfg.Images.ForgetOwner(r.Context(), name); err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("tenant removed", "tenant", name, "tokens", n, "instances", len(items))
	w.WriteHeader(http.StatusNoContent)
}
