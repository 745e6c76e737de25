package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

type callerKey struct{}

// caller is who made a request.
type caller struct {
	store.Token
}

func callerFrom(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey{}).(caller)
	return c
}

// authenticate resolves the bearer token; only hashes are stored.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		plain, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || plain == "" {
			writeError(w, fmt.Errorf("%w: missing bearer token: set CUBE_TOKEN or run `cube up` to write a client config", errdefs.ErrUnauthorized))
			return
		}
		tok, err := s.store.LookupToken(r.Context(), plain)
		if err != nil {
			if err == errdefs.ErrUnauthorized {
				err = fmt.Errorf("%w: the token is not valid (was the data dir reset? re-run `cube up` to write a new client config)", errdefs.ErrUnauthorized)
			}
			writeError(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{tok})))
	})
}

// tenantOf returns the tenant a request acts for: the token's tenant, or
// for a node agent the `tenant` query parameter.
func tenantOf(r *http.Request) (string, error) {
	c := callerFrom(r.Context())
	if c.Role == store.RoleNode {
		t := r.URL.Query().Get("tenant")
		if t == "" {
			return "", fmt.Errorf("%w: node requests name the tenant with ?tenant=", errdefs.ErrInvalid)
		}
		return t, nil
	}
	return c.Tenant, nil
}

func requireRole(r *http.Request, role store.Role) error {
	if callerFrom(r.Context()).Role != role {
		return fmt.Errorf("%w: this call is for %s tokens", errdefs.ErrForbidden, role)
	}
	return nil
}
