package apiserver

import (
	"fmt"
	"net/http"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

// createTenant makes a tenant and a token for it; only the admin tenant
// may. The plaintext token is in this answer only.
func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	if c.Role != store.RoleTenant || c.Tenant != AdminTenant {
		writeError(w, fmt.Errorf("%w: only the %s tenant can create tenants", errdefs.ErrForbidden, AdminTenant))
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
	now := s.cfg.Now().UTC()
	if err := s.putTenant(r.Context(), req); err != nil {
		writeError(w, err)
		return
	}
	tok, err := s.store.CreateToken(r.Context(), store.Token{Tenant: req.Name, Role: store.RoleTenant, Created: now})
	if err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("tenant token created", "tenant", req.Name)
	writeJSON(w, http.StatusCreated, v1.TenantToken{Name: req.Name, Token: tok})
}
