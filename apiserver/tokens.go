package apiserver

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/store"
)

// createToken mints a token. The admin may mint one for any tenant that
// exists, of any scope (admin only for the admin tenant); a tenant token
// only for its own tenant, of scope tenant or read-only. Minting never
// touches the tenant's record, so quotas and grants stay as they are.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	if c.Role != store.RoleTenant {
		writeError(w, fmt.Errorf("%w: node tokens cannot mint tokens", errdefs.ErrForbidden))
		return
	}
	var req v1.TokenRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Tenant == "" {
		req.Tenant = c.Tenant
	}
	if req.Scope == "" {
		req.Scope = v1.ScopeTenant
	}
	if err := v1.ValidateName("tenant", req.Tenant); err != nil {
		writeError(w, err)
		return
	}
	ttl, err := v1.ParseTTL(req.TTL)
	if err != nil {
		writeError(w, err)
		return
	}
	switch req.Scope {
	case v1.ScopeTenant, v1.ScopeReadOnly:
	case v1.ScopeAdmin:
		if req.Tenant != AdminTenant {
			writeError(w, &v1.FieldError{Field: "scope", Reason: fmt.Sprintf("only the %s tenant's tokens may have scope admin", AdminTenant)})
			return
		}
	default:
		writeError(w, &v1.FieldError{Field: "scope", Reason: fmt.Sprintf("%q is not one of admin, tenant, read-only", req.Scope)})
		return
	}
	if !isAdmin(c) {
		if req.Tenant != c.Tenant {
			writeError(w, fieldErr(errdefs.ErrForbidden, "tenant", "only an admin token can mint tokens for another tenant"))
			return
		}
		if req.Scope == v1.ScopeAdmin {
			writeError(w, fieldErr(errdefs.ErrForbidden, "scope", "only an admin token can mint admin tokens"))
			return
		}
	}
	if _, err := s.store.GetTenant(r.Context(), req.Tenant); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			err = fmt.Errorf("%w: tenant %q not found: create it first with `cube tenant create %s`", errdefs.ErrNotFound, req.Tenant, req.Tenant)
		}
		writeError(w, err)
		return
	}
	now := s.cfg.Now().UTC()
	tok := store.Token{Tenant: req.Tenant, Role: store.RoleTenant, Scope: store.Scope(req.Scope), Created: now}
	if !isAdmin(c) {
		tok.MintedBy = c.ID
	}
	if ttl > 0 {
		tok.Expires = now.Add(ttl)
	}
	// A tenant's token cannot outlive the token that mints it: otherwise
	// a token about to expire (or leaked for a day) would mint one that
	// never does. Without an explicit ttl the new one expires with it.
	if !isAdmin(c) && !c.Expires.IsZero() && (tok.Expires.IsZero() || tok.Expires.After(c.Expires)) {
		if req.TTL != "" {
			writeError(w, fieldErr(errdefs.ErrForbidden, "ttl", "a token may not outlive the token that mints it (which expires at %s): ask the admin for a longer one", c.Expires.UTC().Format(time.RFC3339)))
			return
		}
		tok.Expires = c.Expires
	}
	have, err := s.store.ListTokens(r.Context(), req.Tenant)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(have) >= s.cfg.MaxTokens {
		writeError(w, fmt.Errorf("%w: tenant %s has %d tokens, the most allowed: revoke unused ones with `cube token revoke ID` (see `cube token ls`)", errdefs.ErrQuotaExceeded, req.Tenant, len(have)))
		return
	}
	plain, err := s.store.CreateToken(r.Context(), tok)
	if err != nil {
		writeError(w, err)
		return
	}
	tok.ID = store.TokenID(plain)
	s.log.Info("token created", "tenant", req.Tenant, "scope", req.Scope, "token", tok.ID, "by", c.Tenant)
	out := tokenView(tok)
	out.Token = plain
	writeJSON(w, http.StatusCreated, out)
}

func tokenView(t store.Token) *v1.Token {
	out := &v1.Token{APIVersion: v1.Version, Kind: "Token",
		Metadata: v1.ObjectMeta{Name: t.ID, Tenant: t.Tenant, CreationTimestamp: t.Created},
		Scope:    string(t.EffectiveScope()), Node: t.Node}
	if t.Role == store.RoleNode {
		out.Scope = string(store.RoleNode)
	}
	if !t.Expires.IsZero() {
		e := t.Expires
		out.Expires = &e
	}
	return out
}

// listTokens: the admin sees every token (of ?tenant= if given), others
// their own tenant's. Secrets are never listed; they are not stored.
func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	if c.Role != store.RoleTenant {
		writeError(w, fmt.Errorf("%w: node tokens cannot list tokens", errdefs.ErrForbidden))
		return
	}
	tenant := r.URL.Query().Get("tenant")
	if !isAdmin(c) {
		if tenant != "" && tenant != c.Tenant {
			writeError(w, fmt.Errorf("%w: only an admin token can list another tenant's tokens", errdefs.ErrForbidden))
			return
		}
		tenant = c.Tenant
	}
	toks, err := s.store.ListTokens(r.Context(), tenant)
	if err != nil {
		writeError(w, err)
		return
	}
	out := v1.List[*v1.Token]{Items: []*v1.Token{}}
	for _, t := range toks {
		out.Items = append(out.Items, tokenView(t))
	}
	writeJSON(w, http.StatusOK, out)
}

// revokeToken deletes a token by ID. A tenant may revoke its own tenant's
// tokens; another tenant's is the same 404 as an unknown ID.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	id := r.PathValue("id")
	t, err := s.store.GetTokenByID(r.Context(), id)
	if err == nil && !isAdmin(c) && (c.Role != store.RoleTenant || t.Role != store.RoleTenant || t.Tenant != c.Tenant) {
		err = fmt.Errorf("%w: token %q not found (list tokens with `cube token ls`)", errdefs.ErrNotFound, id)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	if err := s.store.RevokeToken(r.Context(), id); err != nil {
		writeError(w, err)
		return
	}
	s.log.Info("token revoked", "tenant", t.Tenant, "token", id, "by", c.Tenant)
	if err := s.revokeMinted(r, t.Tenant, id); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// revokeMinted revokes every token that the token id minted, and what
// those minted, and so on. Without it a leaked token outlives its
// revocation: its holder mints another first, which keeps working.
func (s *Server) revokeMinted(r *http.Request, tenant, id string) error {
	toks, err := s.store.ListTokens(r.Context(), tenant)
	if err != nil {
		return err
	}
	gone := map[string]bool{id: true}
	for more := true; more; {
		more = false
		for _, t := range toks {
			if t.MintedBy != "" && gone[t.MintedBy] && !gone[t.ID] {
				if err := s.store.RevokeToken(r.Context(), t.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
					return err
				}
				s.log.Info("token revoked", "tenant", tenant, "token", t.ID, "minted by", t.MintedBy)
				gone[t.ID], more = true, true
			}
		}
	}
	return nil
}
