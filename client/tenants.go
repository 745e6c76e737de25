package client

import (
	"context"
	"net/http"
	"net/url"

	v1 "github.com/cube-platform/cube/api/v1"
)

// GetTenant reads a tenant (the admin any, a tenant itself).
func (c *Client) GetTenant(ctx context.Context, name string) (*v1.Tenant, error) {
	var out v1.Tenant
	return &out, c.call(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(name), nil, nil, &out)
}

// ListTenants lists every tenant (admin only).
func (c *Client) ListTenants(ctx context.Context) (*v1.List[*v1.Tenant], error) {
	var out v1.List[*v1.Tenant]
	return &out, c.call(ctx, http.MethodGet, "/v1/tenants", nil, nil, &out)
}

// UpdateTenant changes only what u sets (admin only).
func (c *Client) UpdateTenant(ctx context.Context, name string, u v1.TenantUpdate) (*v1.Tenant, error) {
	var out v1.Tenant
	return &out, c.call(ctx, http.MethodPatch, "/v1/tenants/"+url.PathEscape(name), nil, u, &out)
}

// DeleteTenant removes a tenant and revokes its tokens (admin only);
// force also deletes its instances, which is refused otherwise.
func (c *Client) DeleteTenant(ctx context.Context, name string, force bool) error {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	return c.call(ctx, http.MethodDelete, "/v1/tenants/"+url.PathEscape(name), q, nil, nil)
}

// CreateToken mints a token; its secret is in the answer only.
func (c *Client) CreateToken(ctx context.Context, req v1.TokenRequest) (*v1.Token, error) {
	var out v1.Token
	return &out, c.call(ctx, http.MethodPost, "/v1/tokens", nil, req, &out)
}

// ListTokens lists tokens without their secrets: the admin every tenant's
// (or tenant's, if not empty), others their own.
func (c *Client) ListTokens(ctx context.Context, tenant string) (*v1.List[*v1.Token], error) {
	var q url.Values
	if tenant != "" {
		q = url.Values{"tenant": {tenant}}
	}
	var out v1.List[*v1.Token]
	return &out, c.call(ctx, http.MethodGet, "/v1/tokens", q, nil, &out)
}

// RevokeToken revokes a token by ID; the next request with it gets 401.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil, nil)
}
