package client

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
)

// EventOptions select events.
type EventOptions struct {
	// For is an instance name; empty means every instance of the tenant.
	For string
	// Types keeps only these types (Normal, Warning); empty keeps all.
	Types []string
}

func (o EventOptions) query() url.Values {
	q := url.Values{}
	if o.For != "" {
		q.Set("for", o.For)
	}
	if len(o.Types) > 0 {
		q.Set("types", strings.Join(o.Types, ","))
	}
	return q
}

// ListEvents lists the tenant's recorded events, oldest first, paging
// under the hood.
func (c *Client) ListEvents(ctx context.Context, opts EventOptions) (*v1.List[*v1.Event], error) {
	out, err := listAll[*v1.Event](ctx, c, "/v1/events", opts.query(), 0)
	if err != nil {
		return nil, err
	}
	// Pages come instance by instance; an unpaged list is by time, and so
	// is this.
	sort.SliceStable(out.Items, func(i, j int) bool { return out.Items[i].Time.Before(out.Items[j].Time) })
	return out, nil
}

// WatchEvents streams events as they are recorded, after resourceVersion
// (empty: the recorded ones first). The channel closes when ctx ends or
// the server ends the stream.
func (c *Client) WatchEvents(ctx context.Context, opts EventOptions, resourceVersion string) (<-chan v1.WatchEvent[*v1.Event], error) {
	return watch[*v1.Event](ctx, c, "/v1/events", opts.query(), resourceVersion)
}

// watch opens a watch stream on path and decodes one event per line.
func watch[P any](ctx context.Context, c *Client, path string, q url.Values, resourceVersion string) (<-chan v1.WatchEvent[P], error) {
	q.Set("watch", "true")
	if resourceVersion != "" {
		q.Set("resourceVersion", resourceVersion)
	}
	req, err := c.newRequest(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	out := make(chan v1.WatchEvent[P], 16)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var ev v1.WatchEvent[P]
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				return
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
