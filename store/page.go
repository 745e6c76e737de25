package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/cube-platform/cube/errdefs"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// PageRequest selects one page of a list.
type PageRequest[P any] struct {
	// Prefix is the key range listed (with its trailing slash).
	Prefix string
	// From is the first key to read; "" starts at Prefix. It must lie
	// under Prefix (the caller checks: it comes from a client).
	From string
	// Revision to read at; 0 reads the current one. The pages of one list
	// all read the revision of the first, so together they are one
	// snapshot.
	Revision int64
	// Limit is the most objects the page holds; <= 0 means no limit.
	Limit int
	// MaxScan bounds the keys the page examines, so that a selector that
	// matches little cannot make one request read the whole prefix; <= 0
	// means no bound. A page that hit it holds fewer than Limit objects
	// (maybe none) and still has a Next.
	MaxScan int
	// Match keeps an object; nil keeps every one.
	Match func(P) bool
}

// Page is one page of a list, in key order.
type Page[P any] struct {
	Items []P
	// Revision the page was read at.
	Revision int64
	// Next is the first key of the next page; "" when nothing remains.
	Next string
}

// ListPage reads one page of the objects under req.Prefix. A revision etcd
// has compacted away is ErrExpired; one it has not reached yet is
// ErrInvalid.
func (c Collection[T, P]) ListPage(ctx context.Context, req PageRequest[P]) (Page[P], error) {
	page := Page[P]{Items: []P{}, Revision: req.Revision}
	end := clientv3.GetPrefixRangeEnd(req.Prefix)
	from := req.From
	if from == "" {
		from = req.Prefix
	}
	scanned := 0
	for {
		batch := req.Limit
		if req.MaxScan > 0 && (batch <= 0 || req.MaxScan-scanned < batch) {
			batch = req.MaxScan - scanned
		}
		opts := []clientv3.OpOption{clientv3.WithRange(end)}
		if batch > 0 {
			opts = append(opts, clientv3.WithLimit(int64(batch)))
		}
		if page.Revision > 0 {
			opts = append(opts, clientv3.WithRev(page.Revision))
		}
		resp, err := c.get(ctx, from, opts...)
		if err != nil {
			return page, pageError(err, page.Revision)
		}
		if page.Revision == 0 {
			page.Revision = resp.Header.Revision
		}
		for i, kv := range resp.Kvs {
			scanned++
			obj, err := decode[T, P](kv.Value, kv.ModRevision)
			if err != nil {
				return page, err
			}
			if req.Match == nil || req.Match(obj) {
				page.Items = append(page.Items, obj)
			}
			if i == len(resp.Kvs)-1 && !resp.More {
				return page, nil
			}
			full := req.Limit > 0 && len(page.Items) >= req.Limit
			if full || (req.MaxScan > 0 && scanned >= req.MaxScan) {
				// The smallest key after this one.
				page.Next = string(kv.Key) + "\x00"
				return page, nil
			}
		}
		if len(resp.Kvs) == 0 || !resp.More {
			return page, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (c Collection[T, P]) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	return c.cli.Get(ctx, key, opts...)
}

func pageError(err error, rev int64) error {
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("%w: revision %d has been compacted", errdefs.ErrExpired, rev)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return fmt.Errorf("%w: revision %d is newer than the store's", errdefs.ErrInvalid, rev)
	}
	return fmt.Errorf("%w: etcd list: %v", errdefs.ErrUnavailable, err)
}
