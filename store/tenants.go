package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/cube-platform/cube/errdefs"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// CreateTenant stores a new tenant; ErrAlreadyExists if the name is taken,
// so that creating a tenant twice never resets its quotas or grants.
func (s *Store) CreateTenant(ctx context.Context, t Tenant) error {
	b, _ := json.Marshal(t)
	key := TenantKey(t.Name)
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("%w: create tenant: %v", errdefs.ErrUnavailable, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("tenant %q: %w", t.Name, errdefs.ErrAlreadyExists)
	}
	return nil
}

// UpdateTenant applies fn to the stored tenant and writes it back if
// nobody wrote it in between (retrying otherwise). fn may return an
// error to abort.
func (s *Store) UpdateTenant(ctx context.Context, name string, fn func(*Tenant) error) (Tenant, error) {
	key := TenantKey(name)
	for attempt := 0; attempt < 20; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := s.cli.Get(rctx, key)
		cancel()
		if err != nil {
			return Tenant{}, fmt.Errorf("%w: read tenant: %v", errdefs.ErrUnavailable, err)
		}
		if len(resp.Kvs) == 0 {
			return Tenant{}, fmt.Errorf("tenant %q: %w", name, errdefs.ErrNotFound)
		}
		var t Tenant
		if err := json.Unmarshal(resp.Kvs[0].Value, &t); err != nil {
			return Tenant{}, fmt.Errorf("decode tenant: %w", err)
		}
		if err := fn(&t); err != nil {
			return Tenant{}, err
		}
		t.Name = name
		b, _ := json.Marshal(t)
		wctx, cancel := context.WithTimeout(ctx, opTimeout)
		w, err := s.cli.Txn(wctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(key, string(b))).Commit()
		cancel()
		if err != nil {
			return Tenant{}, fmt.Errorf("%w: store tenant: %v", errdefs.ErrUnavailable, err)
		}
		if w.Succeeded {
			return t, nil
		}
	}
	return Tenant{}, fmt.Errorf("%w: tenant %q is being changed concurrently; retry", errdefs.ErrConflict, name)
}

// DeleteTenant removes the tenant record (not its objects or tokens).
func (s *Store) DeleteTenant(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.cli.Delete(ctx, TenantKey(name))
	if err != nil {
		return fmt.Errorf("%w: delete tenant: %v", errdefs.ErrUnavailable, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("tenant %q: %w", name, errdefs.ErrNotFound)
	}
	return nil
}

// CountInstances counts the tenant's stored instances (every phase) and
// returns the revision of the count, to guard a create on.
func (s *Store) CountInstances(ctx context.Context, tenant string) (int64, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.Instances().Prefix(tenant), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, 0, fmt.Errorf("%w: count instances: %v", errdefs.ErrUnavailable, err)
	}
	return resp.Count, resp.Header.Revision, nil
}

// DeleteTenantObjects removes what a removed tenant leaves in the store
// besides instances and tokens: its image name records and its events. A
// tenant created later under the same name (another customer, maybe) must
// not inherit them.
func (s *Store) DeleteTenantObjects(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	for _, prefix := range []string{s.Images().Prefix(name), s.Events().Prefix(name)} {
		if _, err := s.cli.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
			return fmt.Errorf("%w: delete %s: %v", errdefs.ErrUnavailable, prefix, err)
		}
	}
	return nil
}
