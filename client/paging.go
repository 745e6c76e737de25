package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
)

// DefaultPageSize is how many items a List* call asks for per page.
const DefaultPageSize = 500

// listAttempts bounds how often a paged list starts over after the server
// expired its snapshot (etcd compacted it while we paged).
const listAttempts = 3

// listAll reads every page of the list at path (q holds its filters) and
// returns the items of all of them, with the resourceVersion of the
// snapshot they share.
func listAll[T any](ctx context.Context, c *Client, path string, q url.Values, limit int) (*v1.List[T], error) {
	if limit <= 0 {
		limit = DefaultPageSize
	}
	q.Set("limit", strconv.Itoa(limit))
	for attempt := 1; ; attempt++ {
		q.Del("continue")
		out, err := listPages[T](ctx, c, path, q)
		if errors.Is(err, errdefs.ErrExpired) && attempt < listAttempts {
			continue
		}
		return out, err
	}
}

func listPages[T any](ctx context.Context, c *Client, path string, q url.Values) (*v1.List[T], error) {
	out := &v1.List[T]{Items: []T{}}
	for {
		var page v1.List[T]
		if err := c.call(ctx, http.MethodGet, path, q, nil, &page); err != nil {
			return nil, err
		}
		if out.ResourceVersion == "" {
			out.ResourceVersion = page.ResourceVersion
		}
		out.Items = append(out.Items, page.Items...)
		if page.Continue == "" {
			return out, nil
		}
		if page.Continue == q.Get("continue") {
			return nil, fmt.Errorf("list %s: the server answered the same continue token twice", path)
		}
		q.Set("continue", page.Continue)
	}
}
