package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

type callerKey struct{}

// caller is who made a request.
type caller struct {
	store.Token
	// plain is the bearer token itself, for openStream to watch it.
	plain string
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
			refuse(w, fmt.Errorf("%w: missing bearer token: set CUBE_TOKEN or run `cube up` to write a client config", errdefs.ErrUnauthorized))
			return
		}
		// No cache: every request reads the token, so a revocation holds
		// from the very next request.
		tok, err := s.store.LookupToken(r.Context(), plain)
		if err != nil {
			if err == errdefs.ErrUnauthorized {
				err = fmt.Errorf("%w: the token is not valid: it was revoked, or the data dir was reset (ask the admin for a new one, or re-run `cube up` to write a new client config)", errdefs.ErrUnauthorized)
			}
			refuse(w, err)
			return
		}
		if !tok.Expires.IsZero() && !s.cfg.Now().Before(tok.Expires) {
			refuse(w, fmt.Errorf("%w: token %s expired at %s: ask the admin for a new one (`cube token create --tenant %s`)", errdefs.ErrUnauthorized, tok.ID, tok.Expires.UTC().Format(time.RFC3339), tok.Tenant))
			return
		}
		if tok.EffectiveScope() == store.ScopeReadOnly && r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, fmt.Errorf("%w: token %s is read-only: it may only read (GET); use a token of scope tenant to change anything", errdefs.ErrForbidden, tok.ID))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{Token: tok, plain: plain})))
	})
}

// refuse answers a request that did not authenticate, and closes the
// connection without reading the rest of its body. Otherwise net/http
// reads up to 256 KiB of the unread body, before it sends the answer and
// again when it closes the body, with no deadline: a client with no token
// that declares a body and sends a byte a second held a connection and a
// goroutine for days, and enough of them every file descriptor of cube up.
func refuse(w http.ResponseWriter, err error) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	writeError(w, err)
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

// isAdmin: the caller may manage tenants and tokens (an admin-scoped
// token of the admin tenant).
func isAdmin(c caller) bool {
	return c.Role == store.RoleTenant && c.Tenant == AdminTenant && c.EffectiveScope() == store.ScopeAdmin
}

func requireAdmin(r *http.Request, what string) error {
	if !isAdmin(callerFrom(r.Context())) {
		return fmt.Errorf("%w: only an admin token of the %s tenant can %s", errdefs.ErrForbidden, AdminTenant, what)
	}
	return nil
}
