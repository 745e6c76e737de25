// Package client is the Go client of Cube's REST API, used by the CLI, the
// node agent and tests. It depends on api/v1 and the stream framing only.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
)

// Client talks to one Cube API server with one token.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// New returns a client for server ("http://127.0.0.1:7680") and token.
func New(server, token string) *Client {
	return &Client{base: strings.TrimRight(server, "/"), token: token, hc: &http.Client{}}
}

// Server returns the server URL.
func (c *Client) Server() string { return c.base }

// APIError is an error answered by the server.
type APIError struct {
	Status int
	v1.ErrorDetail
}

func (e *APIError) Error() string {
	return e.Message
}

// Unwrap maps the API code back to an errdefs class so callers can use
// errors.Is(err, errdefs.ErrNotFound).
func (e *APIError) Unwrap() error {
	switch e.Code {
	case "NotFound":
		return errdefs.ErrNotFound
	case "AlreadyExists":
		return errdefs.ErrAlreadyExists
	case "Conflict":
		return errdefs.ErrConflict
	case "InvalidArgument":
		return errdefs.ErrInvalid
	case "Unauthorized":
		return errdefs.ErrUnauthorized
	case "Forbidden":
		return errdefs.ErrForbidden
	case "QuotaExceeded":
		return errdefs.ErrQuotaExceeded
	case "Timeout":
		return errdefs.ErrTimeout
	case "Unavailable":
		return errdefs.ErrUnavailable
	case "Expired":
		return errdefs.ErrExpired
	}
	return nil
}

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// do sends a request and returns the response for 2xx, or an *APIError.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, req.Context().Err()
		}
		return nil, fmt.Errorf("%w: cannot reach the Cube server at %s (is `cube up` running?): %v", errdefs.ErrUnavailable, c.base, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 || resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(resp)
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var eb v1.ErrorBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Message == "" {
		return &APIError{Status: resp.StatusCode, ErrorDetail: v1.ErrorDetail{Code: "Internal", Message: fmt.Sprintf("server answered %s: %s", resp.Status, bytes.TrimSpace(b))}}
	}
	return &APIError{Status: resp.StatusCode, ErrorDetail: eb.Error}
}

// call sends in (if not nil) as JSON and decodes the answer into out (if
// not nil).
func (c *Client) call(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s answer: %w", method, path, err)
	}
	return nil
}

func instPath(name string, sub ...string) string {
	p := "/v1/instances/" + url.PathEscape(name)
	for _, s := range sub {
		p += "/" + s
	}
	return p
}

// CreateInstance creates an instance.
func (c *Client) CreateInstance(ctx context.Context, in *v1.Instance) (*v1.Instance, error) {
	var out v1.Instance
	return &out, c.call(ctx, http.MethodPost, "/v1/instances", nil, in, &out)
}

// GetInstance reads an instance.
func (c *Client) GetInstance(ctx context.Context, name string) (*v1.Instance, error) {
	var out v1.Instance
	return &out, c.call(ctx, http.MethodGet, instPath(name), nil, nil, &out)
}

// ListOptions filter a list or watch.
type ListOptions struct {
	LabelSelector string
	FieldSelector string
	// Tenant is required for node tokens only.
	Tenant string
	// Limit is the page size List* ask the server for (0: DefaultPageSize).
	// They still return every item: they follow the pages themselves.
	Limit int
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.LabelSelector != "" {
		q.Set("labelSelector", o.LabelSelector)
	}
	if o.FieldSelector != "" {
		q.Set("fieldSelector", o.FieldSelector)
	}
	if o.Tenant != "" {
		q.Set("tenant", o.Tenant)
	}
	return q
}

// ListInstances lists every instance that matches opts, by name, paging
// under the hood. Its ResourceVersion is the snapshot all pages came from.
func (c *Client) ListInstances(ctx context.Context, opts ListOptions) (*v1.List[*v1.Instance], error) {
	out, err := listAll[*v1.Instance](ctx, c, "/v1/instances", opts.query(), opts.Limit)
	if err != nil {
		return nil, err
	}
	// Pages come in key order, tenant by tenant for a node token; an
	// unpaged list is by name, and so is this.
	sort.SliceStable(out.Items, func(i, j int) bool { return out.Items[i].Metadata.Name < out.Items[j].Metadata.Name })
	return out, nil
}

// WatchInstances streams changes; the channel closes when ctx ends or the
// server ends the stream (callers re-list and watch again).
func (c *Client) WatchInstances(ctx context.Context, opts ListOptions, resourceVersion string) (<-chan v1.WatchEvent[*v1.Instance], error) {
	return watch[*v1.Instance](ctx, c, "/v1/instances", opts.query(), resourceVersion)
}

// DeleteInstance asks for deletion; force stops a live instance.
func (c *Client) DeleteInstance(ctx context.Context, name string, force bool) error {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	return c.call(ctx, http.MethodDelete, instPath(name), q, nil, nil)
}

// SuspendInstance asks the instance's node to save it to disk and stop it
// (microvm only; it must be Running). It returns once asked; wait for the
// phase Suspended.
func (c *Client) SuspendInstance(ctx context.Context, name string) (*v1.Instance, error) {
	var out v1.Instance
	return &out, c.call(ctx, http.MethodPost, instPath(name, "suspend"), nil, nil, &out)
}

// ResumeInstance asks the node to run a Suspended instance again. It
// returns once asked; wait for the phase Running.
func (c *Client) ResumeInstance(ctx context.Context, name string) (*v1.Instance, error) {
	var out v1.Instance
	return &out, c.call(ctx, http.MethodPost, instPath(name, "resume"), nil, nil, &out)
}

// WaitInstance long-polls until the instance is in one of states
// ("running", "exited", "deleted", or a phase name), it ends, or timeout.
// On timeout the error is an *APIError with code Timeout whose message
// holds the current state. A nil instance means it was deleted.
func (c *Client) WaitInstance(ctx context.Context, name string, states []string, timeout time.Duration) (*v1.Instance, error) {
	q := url.Values{"state": {strings.Join(states, ",")}, "timeout": {timeout.String()}}
	req, err := c.newRequest(ctx, http.MethodGet, instPath(name, "wait"), q, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	var out v1.Instance
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	return &out, nil
}

// LogOptions select log lines.
type LogOptions struct {
	Container  string
	Follow     bool
	Tail       int // <0: all
	Since      string
	Until      string
	Timestamps bool
}

// Logs copies an instance's logs to w until they end (or ctx, when following).
func (c *Client) Logs(ctx context.Context, name string, o LogOptions, w io.Writer) error {
	q := url.Values{}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	if o.Follow {
		q.Set("follow", "true")
	}
	if o.Tail >= 0 {
		q.Set("tail", fmt.Sprint(o.Tail))
	}
	if o.Since != "" {
		q.Set("since", o.Since)
	}
	if o.Until != "" {
		q.Set("until", o.Until)
	}
	if o.Timestamps {
		q.Set("timestamps", "true")
	}
	req, err := c.newRequest(ctx, http.MethodGet, instPath(name, "logs"), q, nil)
	if err != nil {
		return err
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// IsNotFound reports whether err is a not-found answer.
func IsNotFound(err error) bool { return errors.Is(err, errdefs.ErrNotFound) }

// DryRunInstance validates and admits an instance on the server without
// creating it.
func (c *Client) DryRunInstance(ctx context.Context, in *v1.Instance) error {
	return c.call(ctx, http.MethodPost, "/v1/instances", url.Values{"dryRun": {"true"}}, in, nil)
}
