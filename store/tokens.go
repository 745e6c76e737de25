package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/cube-platform/cube/errdefs"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Scope is what a tenant token may do.
type Scope string

const (
	// ScopeAdmin manages tenants and tokens; only the admin tenant's
	// tokens may have it.
	ScopeAdmin Scope = "admin"
	// ScopeTenant acts on its tenant's objects.
	ScopeTenant Scope = "tenant"
	// ScopeReadOnly may only read its tenant's objects (GET).
	ScopeReadOnly Scope = "read-only"
)

// EffectiveScope is the token's scope, reading tokens minted before scopes
// existed as they worked then: the admin tenant's as admin, others as
// tenant. Node tokens have none.
func (t Token) EffectiveScope() Scope {
	switch {
	case t.Role != RoleTenant:
		return ""
	case t.Scope != "":
		return t.Scope
	case t.Tenant == "admin":
		return ScopeAdmin
	}
	return ScopeTenant
}

const tokensPrefix = "/cube/tokens/"

// tokenIDLen is how many hex digits of a token's hash make its ID: 48
// bits, enough to never collide among one cluster's tokens, and useless
// for finding the token (a 256-bit secret).
const tokenIDLen = 12

// TokenID is the ID of the token whose secret is plain, as CreateToken
// stored it (no read needed: the ID is derived from the hash).
func TokenID(plain string) string { return tokenID(tokenKey(plain)) }

// tokenID is the ID of the token stored at key: "tok-" and the start of
// its hash. Deriving it keeps tokens minted before IDs revocable.
func tokenID(key string) string {
	h := strings.TrimPrefix(key, tokensPrefix)
	if len(h) > tokenIDLen {
		h = h[:tokenIDLen]
	}
	return "tok-" + h
}

// ListTokens reads every token (of tenant, when it is not empty), oldest
// first, without their secrets.
func (s *Store) ListTokens(ctx context.Context, tenant string) ([]Token, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, tokensPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("%w: list tokens: %v", errdefs.ErrUnavailable, err)
	}
	out := []Token{}
	for _, kv := range resp.Kvs {
		var t Token
		if json.Unmarshal(kv.Value, &t) != nil || (tenant != "" && t.Tenant != tenant) {
			continue
		}
		t.ID = tokenID(string(kv.Key))
		out = append(out, t)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// GetTokenByID reads the token with that ID (ErrNotFound if none).
func (s *Store) GetTokenByID(ctx context.Context, id string) (Token, error) {
	key, t, err := s.tokenByID(ctx, id)
	if err != nil {
		return Token{}, err
	}
	t.ID = tokenID(key)
	return t, nil
}

func (s *Store) tokenByID(ctx context.Context, id string) (string, Token, error) {
	h, ok := strings.CutPrefix(id, "tok-")
	if !ok || len(h) != tokenIDLen || strings.Trim(h, "0123456789abcdef") != "" {
		return "", Token{}, fmt.Errorf("%w: token %q not found (token IDs look like tok-0123456789ab; list them with `cube token ls`)", errdefs.ErrNotFound, id)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, tokensPrefix+h, clientv3.WithPrefix())
	if err != nil {
		return "", Token{}, fmt.Errorf("%w: read token: %v", errdefs.ErrUnavailable, err)
	}
	if len(resp.Kvs) != 1 {
		return "", Token{}, fmt.Errorf("%w: token %q not found (list tokens with `cube token ls`)", errdefs.ErrNotFound, id)
	}
	var t Token
	if err := json.Unmarshal(resp.Kvs[0].Value, &t); err != nil {
		return "", Token{}, fmt.Errorf("decode token: %w", err)
	}
	return string(resp.Kvs[0].Key), t, nil
}

// RevokeToken deletes the token with that ID; the next request that
// presents it is refused, since every request reads the token from etcd.
func (s *Store) RevokeToken(ctx context.Context, id string) error {
	key, _, err := s.tokenByID(ctx, id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := s.cli.Delete(ctx, key); err != nil {
		return fmt.Errorf("%w: revoke token: %v", errdefs.ErrUnavailable, err)
	}
	return nil
}

// RevokeTenantTokens deletes every token of tenant and returns how many.
func (s *Store) RevokeTenantTokens(ctx context.Context, tenant string) (int, error) {
	toks, err := s.ListTokens(ctx, tenant)
	if err != nil {
		return 0, err
	}
	var ops []clientv3.Op
	for _, t := range toks {
		ops = append(ops, clientv3.OpDelete(tokensPrefix+strings.TrimPrefix(t.ID, "tok-"), clientv3.WithPrefix()))
	}
	for i := 0; i < len(ops); i += 100 {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err := s.cli.Txn(ctx).Then(ops[i:min(i+100, len(ops))]...).Commit()
		cancel()
		if err != nil {
			return 0, fmt.Errorf("%w: revoke tokens of tenant %s: %v", errdefs.ErrUnavailable, tenant, err)
		}
	}
	return len(toks), nil
}

// TokenGone returns a channel that is closed once the token plain no
// longer grants anything: it was revoked (its tenant removed included), or
// the watch on it failed, in which case the holder must authenticate
// again. Long-lived requests (watches, waits, log follows, exec sessions)
// end on it, so that revocation reaches the streams a token already holds,
// not only its next request. The watch ends with ctx.
func (s *Store) TokenGone(ctx context.Context, plain string) <-chan struct{} {
	gone := make(chan struct{})
	key := tokenKey(plain)
	go func() {
		defer func() {
			if ctx.Err() == nil {
				close(gone)
			}
		}()
		// Read the key, then watch from just after that read, so a
		// revocation between the request's lookup and the watch is seen.
		gctx, gcancel := context.WithTimeout(ctx, opTimeout)
		resp, err := s.cli.Get(gctx, key, clientv3.WithCountOnly())
		gcancel()
		if err != nil || resp.Count == 0 {
			return
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		for wr := range s.cli.Watch(wctx, key, clientv3.WithFilterPut(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil || len(wr.Events) > 0 {
				return
			}
		}
	}()
	return gone
}
