// Package store keeps Cube's state in etcd (embedded in `cube up`, or an
// external cluster): typed objects as JSON under /cube/, optimistic
// concurrency on etcd's ModRevision, watches, and node leases. It depends
// on api/v1 and errdefs only; it has no HTTP and no policy.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// opTimeout bounds every single etcd call.
const opTimeout = 10 * time.Second

// Store is the typed state over etcd.
type Store struct {
	cli *clientv3.Client
}

// New returns a Store over an etcd client.
func New(cli *clientv3.Client) *Store { return &Store{cli: cli} }

// Client exposes the etcd client to control-plane components that need
// transactions across collections (the scheduler's binder, elections).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Collection is one kind of object under a key prefix.
type Collection[T any, P interface {
	*T
	v1.Object
}] struct {
	cli    *clientv3.Client
	prefix string
}

// Key returns the etcd key of an object.
func (c Collection[T, P]) Key(parts ...string) string {
	k := c.prefix
	for _, p := range parts {
		k += "/" + p
	}
	return k
}

// Prefix returns the key prefix for parts (with a trailing slash).
func (c Collection[T, P]) Prefix(parts ...string) string { return c.Key(parts...) + "/" }

func decode[T any, P interface {
	*T
	v1.Object
}](kv []byte, modRev int64) (P, error) {
	obj := P(new(T))
	if err := json.Unmarshal(kv, obj); err != nil {
		return nil, fmt.Errorf("decode stored object: %w", err)
	}
	obj.Meta().ResourceVersion = strconv.FormatInt(modRev, 10)
	return obj, nil
}

func encode(obj v1.Object) (string, error) {
	rv := obj.Meta().ResourceVersion
	obj.Meta().ResourceVersion = ""
	b, err := json.Marshal(obj)
	obj.Meta().ResourceVersion = rv
	return string(b), err
}

// Get reads one object.
func (c Collection[T, P]) Get(ctx context.Context, key string) (P, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("%w: etcd get: %v", errdefs.ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errdefs.ErrNotFound
	}
	return decode[T, P](resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// GetWithRevision reads one object and the store's revision at the read:
// a watch from that revision sees every later change, and, unlike one
// from the object's own older revision, etcd serves it at once instead of
// from its resync loop (up to 100 ms late).
func (c Collection[T, P]) GetWithRevision(ctx context.Context, key string) (P, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: etcd get: %v", errdefs.ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, errdefs.ErrNotFound
	}
	obj, err := decode[T, P](resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	return obj, resp.Header.Revision, err
}

// List reads every object under prefix and the revision of the read.
func (c Collection[T, P]) List(ctx context.Context, prefix string) ([]P, int64, error) {
	return c.ListAt(ctx, prefix, 0)
}

// Create writes obj at key if nothing is there (ErrAlreadyExists otherwise)
// and sets its resourceVersion.
func (c Collection[T, P]) Create(ctx context.Context, key string, obj P) error {
	return c.createIf(ctx, key, obj)
}

// createIf writes obj at key if nothing is there and every guard holds:
// ErrAlreadyExists when the key exists, ErrConflict when a guard failed.
func (c Collection[T, P]) createIf(ctx context.Context, key string, obj P, guards ...clientv3.Cmp) error {
	val, err := encode(obj)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, guards...)
	resp, err := c.cli.Txn(ctx).If(cmps...).
		Then(clientv3.OpPut(key, val)).
		Else(clientv3.OpGet(key, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return fmt.Errorf("%w: etcd create: %v", errdefs.ErrUnavailable, err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return errdefs.ErrAlreadyExists
		}
		return errdefs.ErrConflict
	}
	obj.Meta().ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
	return nil
}

// Update writes obj at key if its resourceVersion still matches the stored
// one (ErrConflict otherwise; ErrNotFound if it is gone).
func (c Collection[T, P]) Update(ctx context.Context, key string, obj P) error {
	rv, err := strconv.ParseInt(obj.Meta().ResourceVersion, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: resourceVersion %q is not a number", errdefs.ErrInvalid, obj.Meta().ResourceVersion)
	}
	val, err := encode(obj)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rv)).
		Then(clientv3.OpPut(key, val)).
		Else(clientv3.OpGet(key, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return fmt.Errorf("%w: etcd update: %v", errdefs.ErrUnavailable, err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count == 0 {
			return errdefs.ErrNotFound
		}
		return fmt.Errorf("%w: the object was modified (resourceVersion %d is stale); read it again and retry", errdefs.ErrConflict, rv)
	}
	obj.Meta().ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
	return nil
}

// Mutate reads the object at key, applies fn and writes it back, retrying
// on conflicts. fn may return an error to abort.
func (c Collection[T, P]) Mutate(ctx context.Context, key string, fn func(P) error) (P, error) {
	for attempt := 0; ; attempt++ {
		obj, err := c.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		if err := fn(obj); err != nil {
			return nil, err
		}
		err = c.Update(ctx, key, obj)
		if err == nil {
			return obj, nil
		}
		if !isConflict(err) || attempt > 50 {
			return nil, err
		}
	}
}

// Delete removes the object; with rv != "" only if it still matches.
func (c Collection[T, P]) Delete(ctx context.Context, key, rv string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var cmp []clientv3.Cmp
	if rv != "" {
		n, err := strconv.ParseInt(rv, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: resourceVersion %q is not a number", errdefs.ErrInvalid, rv)
		}
		cmp = append(cmp, clientv3.Compare(clientv3.ModRevision(key), "=", n))
	} else {
		cmp = append(cmp, clientv3.Compare(clientv3.CreateRevision(key), ">", 0))
	}
	resp, err := c.cli.Txn(ctx).If(cmp...).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return fmt.Errorf("%w: etcd delete: %v", errdefs.ErrUnavailable, err)
	}
	if !resp.Succeeded {
		if rv != "" {
			return fmt.Errorf("%w: the object was modified; read it again and retry", errdefs.ErrConflict)
		}
		return errdefs.ErrNotFound
	}
	return nil
}

// Event is one change seen by Watch.
type Event[P any] struct {
	Type   v1.EventType
	Object P
	// prev is the stored object before a modification, decoded only by
	// Prev: most watchers want the change, not what it replaced.
	prev func() P
	// Revision of the change, for resuming.
	Revision int64
}

// Prev decodes the object a modification replaced; nil for other events
// or when it cannot be decoded.
func (e Event[P]) Prev() P {
	if e.prev == nil {
		var none P
		return none
	}
	return e.prev()
}

// Watch streams changes under prefix after revision rev (0: from now).
// The channel closes when ctx ends or the watch fails (e.g. compacted);
// the caller then lists again.
func (c Collection[T, P]) Watch(ctx context.Context, prefix string, rev int64) <-chan Event[P] {
	out := make(chan Event[P], 64)
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev+1))
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := c.cli.Watch(wctx, prefix, opts...)
	go func() {
		defer close(out)
		defer cancel()
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			for _, ev := range resp.Events {
				var e Event[P]
				e.Revision = ev.Kv.ModRevision
				var err error
				switch {
				case ev.Type == clientv3.EventTypeDelete:
					e.Type = v1.EventDeleted
					if ev.PrevKv == nil {
						continue
					}
					e.Object, err = decode[T, P](ev.PrevKv.Value, ev.Kv.ModRevision)
				case ev.IsCreate():
					e.Type = v1.EventAdded
					e.Object, err = decode[T, P](ev.Kv.Value, ev.Kv.ModRevision)
				default:
					e.Type = v1.EventModified
					e.Object, err = decode[T, P](ev.Kv.Value, ev.Kv.ModRevision)
					if kv := ev.PrevKv; kv != nil {
						e.prev = func() P {
							p, _ := decode[T, P](kv.Value, kv.ModRevision)
							return p
						}
					}
				}
				if err != nil {
					continue
				}
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

func isConflict(err error) bool {
	return err != nil && errors.Is(err, errdefs.ErrConflict)
}

// ListAt reads every object under prefix as of revision rev (0: now).
func (c Collection[T, P]) ListAt(ctx context.Context, prefix string, rev int64) ([]P, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := c.cli.Get(ctx, prefix, opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: etcd list: %v", errdefs.ErrUnavailable, err)
	}
	out := make([]P, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		o, err := decode[T, P](kv.Value, kv.ModRevision)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, o)
	}
	return out, resp.Header.Revision, nil
}

// Encode is the stored form of an object (without its resourceVersion),
// for callers that build their own transactions.
func Encode(obj v1.Object) (string, error) { return encode(obj) }

// NodeBindingKey is bumped by every binding to the node: appliers compare
// it so that two of them can never overcommit a node.
func NodeBindingKey(node string) string { return "/cube/nodebinding/" + node }

// CreateGuarded writes obj at key if nothing is there and nothing under
// guardPrefix changed after revision rev; admission uses it so that two
// requests racing for the last of a quota cannot both win. It returns
// ErrAlreadyExists, or ErrConflict when the guard failed (read and retry).
func (c Collection[T, P]) CreateGuarded(ctx context.Context, key string, obj P, guardPrefix string, rev int64) error {
	return c.createIf(ctx, key, obj, clientv3.Compare(clientv3.ModRevision(guardPrefix), "<", rev+1).WithPrefix())
}
