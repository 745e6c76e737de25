package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"sort"

	v1 "github.com/cube-platform/cube/api/v1"
)

// ListNodes lists every node by name (admin tenant or node tokens),
// paging under the hood.
func (c *Client) ListNodes(ctx context.Context) (*v1.List[*v1.Node], error) {
	return listAll[*v1.Node](ctx, c, "/v1/nodes", url.Values{}, 0)
}

// ImportImage uploads an OCI-layout or docker-archive tar.
func (c *Client) ImportImage(ctx context.Context, tar io.Reader) ([]*v1.Image, error) {
	req, err := c.newRequest(ctx, http.MethodPost, "/v1/images/import", nil, tar)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out v1.List[*v1.Image]
	if err := decodeJSON(resp.Body, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// PullImage asks the server to pull an image from its registry.
func (c *Client) PullImage(ctx context.Context, ref string, insecure bool) (*v1.Image, error) {
	var out v1.Image
	return &out, c.call(ctx, http.MethodPost, "/v1/images/pull", nil, v1.PullRequest{Image: ref, Insecure: insecure}, &out)
}

// ListImages lists the tenant's images by name, paging under the hood.
func (c *Client) ListImages(ctx context.Context) (*v1.List[*v1.Image], error) {
	out, err := listAll[*v1.Image](ctx, c, "/v1/images", url.Values{}, 0)
	if err != nil {
		return nil, err
	}
	// Pages come in the order of the escaped references; an unpaged list
	// is by name, and so is this.
	sort.SliceStable(out.Items, func(i, j int) bool { return out.Items[i].Metadata.Name < out.Items[j].Metadata.Name })
	return out, nil
}

// The calls below are for node agents (node tokens).

// RegisterNode creates or refreshes the node's record. secret is what the
// server presents back when it proxies logs and exec to the node.
func (c *Client) RegisterNode(ctx context.Context, n *v1.Node, secret string) (*v1.Node, error) {
	b, err := jsonReader(n)
	if err != nil {
		return nil, err
	}
	req, err := c.newRequest(ctx, http.MethodPut, "/v1/nodes/"+url.PathEscape(n.Metadata.Name), nil, b)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Cube-Node-Secret", secret)
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out v1.Node
	return &out, decodeJSON(resp.Body, &out)
}

// Heartbeat renews the node's lease.
func (c *Client) Heartbeat(ctx context.Context, node string) error {
	return c.call(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(node)+"/heartbeat", nil, nil, nil)
}

// UpdateStatus reports an instance's status.
func (c *Client) UpdateStatus(ctx context.Context, in *v1.Instance) (*v1.Instance, error) {
	var out v1.Instance
	q := url.Values{"tenant": {in.Metadata.Tenant}}
	return &out, c.call(ctx, http.MethodPut, instPath(in.Metadata.Name, "status"), q, in, &out)
}

// GetTenantInstance reads an instance of tenant bound to the calling node.
func (c *Client) GetTenantInstance(ctx context.Context, tenant, name string) (*v1.Instance, error) {
	var out v1.Instance
	return &out, c.call(ctx, http.MethodGet, instPath(name), url.Values{"tenant": {tenant}}, nil, &out)
}

// FinalizeDelete removes an instance whose deletion was requested, once the
// node has removed every trace of it.
func (c *Client) FinalizeDelete(ctx context.Context, tenant, name string) error {
	q := url.Values{"tenant": {tenant}, "finalize": {"true"}}
	return c.call(ctx, http.MethodDelete, instPath(name), q, nil, nil)
}

// CreateTenant creates a tenant and returns a token for it (admin only).
func (c *Client) CreateTenant(ctx context.Context, req v1.TenantRequest) (*v1.TenantToken, error) {
	var out v1.TenantToken
	return &out, c.call(ctx, http.MethodPost, "/v1/tenants", nil, req, &out)
}
