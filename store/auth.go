package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Role of a token.
type Role string

const (
	// RoleTenant acts on its tenant's objects only.
	RoleTenant Role = "tenant"
	// RoleNode is a node agent: it registers its node and reports status of
	// the instances bound to it, across tenants.
	RoleNode Role = "node"
)

// Token is what a bearer token grants. Only its SHA-256 is stored.
type Token struct {
	Tenant  string    `json:"tenant,omitempty"`
	Role    Role      `json:"role"`
	Node    string    `json:"node,omitempty"`
	Created time.Time `json:"created"`
	// Scope of a tenant token (see Scope); empty in tokens minted before
	// scopes, which EffectiveScope reads as before.
	Scope Scope `json:"scope,omitempty"`
	// Expires is when the token stops working; zero never.
	Expires time.Time `json:"expires,omitzero"`
	// MintedBy is the ID of the tenant token that minted this one (empty
	// when the admin did): revoking that token revokes this one too.
	MintedBy string `json:"mintedBy,omitempty"`
	// ID names the token without revealing it (derived from its hash, so
	// it is never stored); set by LookupToken and ListTokens.
	ID string `json:"-"`
}

// Tenant is the owner of objects.
type Tenant struct {
	Name string `json:"name"`
	// Weight scales the tenant's fair share; 0 counts as 1.
	Weight float64 `json:"weight,omitempty"`
	// Quotas per priority band; a band without an entry is unlimited.
	Quotas  map[string]v1.Quota `json:"quotas,omitempty"`
	Created time.Time           `json:"created"`
	// ImageStorage caps the tenant's image storage ("10Gi"); empty means
	// the API server's default.
	ImageStorage string `json:"imageStorage,omitempty"`
	// AllowPriorities are the bands above production the admin granted.
	AllowPriorities []string `json:"allowPriorities,omitempty"`
	// AllowTolerations are the taint keys the tenant may tolerate ("*":
	// every key, which a toleration without a key needs).
	AllowTolerations []string `json:"allowTolerations,omitempty"`
	// AllowRuntimes are the runtimes granted beyond microvm ("runc").
	AllowRuntimes []string `json:"allowRuntimes,omitempty"`
	// MaxInstances bounds the tenant's stored instances, every phase
	// counted; 0 is the server's default.
	MaxInstances int `json:"maxInstances,omitempty"`
}

// TenantKey is where a tenant is stored.
func TenantKey(name string) string { return "/cube/tenants/" + name }

// PutTenant creates or replaces a tenant, keeping its creation time.
func (s *Store) PutTenant(ctx context.Context, t Tenant) error {
	if cur, err := s.GetTenant(ctx, t.Name); err == nil {
		t.Created = cur.Created
	}
	b, _ := json.Marshal(t)
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := s.cli.Put(ctx, TenantKey(t.Name), string(b)); err != nil {
		return fmt.Errorf("%w: store tenant: %v", errdefs.ErrUnavailable, err)
	}
	return nil
}

// GetTenant reads a tenant.
func (s *Store) GetTenant(ctx context.Context, name string) (Tenant, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, TenantKey(name))
	if err != nil {
		return Tenant{}, fmt.Errorf("%w: read tenant: %v", errdefs.ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return Tenant{}, fmt.Errorf("tenant %q: %w", name, errdefs.ErrNotFound)
	}
	var t Tenant
	return t, json.Unmarshal(resp.Kvs[0].Value, &t)
}

// ListTenants reads every tenant.
func (s *Store) ListTenants(ctx context.Context) ([]Tenant, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, "/cube/tenants/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%w: list tenants: %v", errdefs.ErrUnavailable, err)
	}
	out := make([]Tenant, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var t Tenant
		if err := json.Unmarshal(kv.Value, &t); err == nil {
			out = append(out, t)
		}
	}
	return out, nil
}

func tokenKey(plain string) string {
	sum := sha256.Sum256([]byte(plain))
	return "/cube/tokens/" + hex.EncodeToString(sum[:])
}

// EnsureTenant creates the tenant if it does not exist.
func (s *Store) EnsureTenant(ctx context.Context, name string, now time.Time) error {
	b, _ := json.Marshal(Tenant{Name: name, Created: now})
	key := TenantKey(name)
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("%w: create tenant: %v", errdefs.ErrUnavailable, err)
	}
	return nil
}

// CreateToken makes a new random token for t, stores its hash and returns
// the plaintext, which is shown once and never stored.
func (s *Store) CreateToken(ctx context.Context, t Token) (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	plain := "cube_" + base64.RawURLEncoding.EncodeToString(raw[:])
	b, _ := json.Marshal(t)
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := s.cli.Put(ctx, tokenKey(plain), string(b)); err != nil {
		return "", fmt.Errorf("%w: store token: %v", errdefs.ErrUnavailable, err)
	}
	return plain, nil
}

// LookupToken returns what a plaintext token grants, or ErrUnauthorized.
func (s *Store) LookupToken(ctx context.Context, plain string) (Token, error) {
	if !strings.HasPrefix(plain, "cube_") {
		return Token{}, errdefs.ErrUnauthorized
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, tokenKey(plain))
	if err != nil {
		return Token{}, fmt.Errorf("%w: read token: %v", errdefs.ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return Token{}, errdefs.ErrUnauthorized
	}
	var t Token
	if err := json.Unmarshal(resp.Kvs[0].Value, &t); err != nil {
		return Token{}, fmt.Errorf("decode token: %w", err)
	}
	t.ID = tokenID(string(resp.Kvs[0].Key))
	return t, nil
}

const aliveKey = "/cube/nodealive/"

// Heartbeat keeps node's liveness key alive with a lease of ttl. leaseID is
// the lease from the previous beat (0 at first); the lease to use next time
// is returned. When the node stops beating, the key expires with the lease.
func (s *Store) Heartbeat(ctx context.Context, node string, ttl time.Duration, leaseID int64, now time.Time) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if leaseID != 0 {
		if _, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(leaseID)); err == nil {
			// Refresh the timestamp too; it is what `cube nodes` shows.
			if _, err := s.cli.Put(ctx, aliveKey+node, now.UTC().Format(time.RFC3339Nano), clientv3.WithLease(clientv3.LeaseID(leaseID))); err == nil {
				return leaseID, nil
			}
		}
	}
	lease, err := s.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return 0, fmt.Errorf("%w: grant lease: %v", errdefs.ErrUnavailable, err)
	}
	if _, err := s.cli.Put(ctx, aliveKey+node, now.UTC().Format(time.RFC3339Nano), clientv3.WithLease(lease.ID)); err != nil {
		return 0, fmt.Errorf("%w: heartbeat: %v", errdefs.ErrUnavailable, err)
	}
	return int64(lease.ID), nil
}

// AliveNodes returns every node whose lease is alive, with its last beat.
func (s *Store) AliveNodes(ctx context.Context) (map[string]time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, aliveKey, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%w: read node leases: %v", errdefs.ErrUnavailable, err)
	}
	out := map[string]time.Time{}
	for _, kv := range resp.Kvs {
		t, _ := time.Parse(time.RFC3339Nano, string(kv.Value))
		out[strings.TrimPrefix(string(kv.Key), aliveKey)] = t
	}
	return out, nil
}

// SetNodeSecret stores the secret the server presents to a node agent
// when it proxies logs and exec; GetNodeSecret reads it.
func (s *Store) SetNodeSecret(ctx context.Context, node, secret string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := s.cli.Put(ctx, "/cube/nodesecrets/"+node, secret)
	if err != nil {
		return fmt.Errorf("%w: store node secret: %v", errdefs.ErrUnavailable, err)
	}
	return nil
}

// GetNodeSecret reads what SetNodeSecret stored.
func (s *Store) GetNodeSecret(ctx context.Context, node string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, "/cube/nodesecrets/"+node)
	if err != nil {
		return "", fmt.Errorf("%w: read node secret: %v", errdefs.ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("node %s has no secret: %w", node, errdefs.ErrNotFound)
	}
	return string(resp.Kvs[0].Value), nil
}

// MarkAlive marks many nodes alive under one lease of ttl (for benches and
// tests that stand up a synthetic fleet without a node agent per node).
func (s *Store) MarkAlive(ctx context.Context, nodes []string, ttl time.Duration, now time.Time) error {
	lease, err := s.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return fmt.Errorf("%w: grant lease: %v", errdefs.ErrUnavailable, err)
	}
	stamp := now.UTC().Format(time.RFC3339Nano)
	for i := 0; i < len(nodes); i += 100 {
		var ops []clientv3.Op
		for _, n := range nodes[i:min(i+100, len(nodes))] {
			ops = append(ops, clientv3.OpPut(aliveKey+n, stamp, clientv3.WithLease(lease.ID)))
		}
		if _, err := s.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("%w: mark nodes alive: %v", errdefs.ErrUnavailable, err)
		}
	}
	return nil
}
